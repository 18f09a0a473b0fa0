"""RPC client: call (wait for the result) and cast (fire and forget)."""

from __future__ import annotations

from typing import Any

from fastrpc.exceptions import (
    ClientSendError,
    InvalidTarget,
    MessagingException,
    RPCVersionCapError,
    TransportDriverError,
)
from fastrpc.serializer import NoOpSerializer, Serializer
from fastrpc.target import Target, version_is_compatible
from fastrpc.transport import Transport, TransportOptions

__all__ = ["RPCClient", "get_rpc_client"]


class _Unset:
    """Marks an argument of prepare() that was not given."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _check_version(version: Any) -> None:
    if version is _UNSET or version is None:
        return
    try:
        version_is_compatible(version, version)
    except (ValueError, AttributeError) as exc:
        raise MessagingException(f"Version must contain a major and minor integer. Got {version}") from exc


class _CallContext:
    """A client with a fixed target and options; what prepare() returns."""

    def __init__(self, transport: Transport, target: Target, serializer: Serializer,
                 timeout: float | None = None, version_cap: str | None = None,
                 retry: int | None = None, call_monitor_timeout: float | None = None,
                 transport_options: TransportOptions | None = None) -> None:
        self.conf = transport.conf
        self.transport = transport
        self.target = target
        self.serializer = serializer
        self.timeout = timeout
        self.version_cap = version_cap
        self.retry = retry
        self.call_monitor_timeout = call_monitor_timeout
        self.transport_options = transport_options

    def _make_message(self, ctxt: Any, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if type(self.serializer) is NoOpSerializer:
            # ``args`` is the caller's fresh **kwargs dict: nothing to convert.
            msg: dict[str, Any] = {"method": method, "args": args}
        else:
            msg = {
                "method": method,
                "args": {name: self.serializer.serialize_entity(ctxt, arg) for name, arg in args.items()},
            }
        if self.target.namespace is not None:
            msg["namespace"] = self.target.namespace
        if self.target.version is not None:
            msg["version"] = self.target.version
        return msg

    def _check_version_cap(self, version: str | None) -> None:
        if self.version_cap is None:
            return  # no cap: nothing to compare
        if not version_is_compatible(self.version_cap, version):
            raise RPCVersionCapError(version=version, version_cap=self.version_cap)

    def can_send_version(self, version: Any = _UNSET) -> bool:
        """True if ``version`` (default: the target's) is within the version cap."""
        requested = self.target.version if version is _UNSET else version
        return version_is_compatible(self.version_cap, requested)

    def prepare(self, exchange: Any = _UNSET, topic: Any = _UNSET, namespace: Any = _UNSET,
                version: Any = _UNSET, server: Any = _UNSET, fanout: Any = _UNSET,
                timeout: Any = _UNSET, version_cap: Any = _UNSET, retry: Any = _UNSET,
                call_monitor_timeout: Any = _UNSET, transport_options: Any = _UNSET) -> _CallContext:
        """Return a context with some target fields or options overridden."""
        _check_version(version)
        fields = {"exchange": exchange, "topic": topic, "namespace": namespace,
                  "version": version, "server": server, "fanout": fanout}
        target = self.target(**{k: v for k, v in fields.items() if v is not _UNSET})
        return _CallContext(
            self.transport, target, self.serializer,
            self.timeout if timeout is _UNSET else timeout,
            self.version_cap if version_cap is _UNSET else version_cap,
            self.retry if retry is _UNSET else retry,
            self.call_monitor_timeout if call_monitor_timeout is _UNSET else call_monitor_timeout,
            self.transport_options if transport_options is _UNSET else transport_options,
        )

    def cast(self, ctxt: Any, method: str, **kwargs: Any) -> None:
        """Send a request and return once the transport accepted it.

        With ``fanout`` in the target every server on the topic gets a copy.
        An at-least-once cast waits for the broker's confirm at most the
        client's ``timeout`` when it has one (else ``rpc_response_timeout``).
        """
        msg = self._make_message(ctxt, method, kwargs)
        serializer = self.serializer
        msg_ctxt = ctxt if type(serializer) is NoOpSerializer else serializer.serialize_context(ctxt)
        if self.version_cap is not None:
            self._check_version_cap(msg.get("version"))
        options = self.transport_options
        at_least_once = options is not None and options.at_least_once
        try:
            # Positional, as in call(): this runs once per cast.
            self.transport._send(self.target, msg_ctxt, msg, False, self.timeout if at_least_once else None,
                                 None, self.retry, at_least_once)
        except TransportDriverError as exc:
            raise ClientSendError(self.target, exc) from exc

    def call(self, ctxt: Any, method: str, **kwargs: Any) -> Any:
        """Send a request and return the result.

        Raises MessagingTimeout, the remote exception (rebuilt when its module
        is allowed, else RemoteError) or MessageDeliveryFailure.
        """
        target = self.target
        if target.fanout:
            raise InvalidTarget("A call cannot be used with fanout", target)
        msg = self._make_message(ctxt, method, kwargs)
        serializer = self.serializer
        plain = type(serializer) is NoOpSerializer  # per call: skip its pass-through calls
        msg_ctxt = ctxt if plain else serializer.serialize_context(ctxt)
        timeout = self.timeout
        if timeout is None:
            timeout = self.conf.rpc_response_timeout
        if self.version_cap is not None:
            self._check_version_cap(msg.get("version"))
        options = self.transport_options
        try:
            # Positional: this runs once per call, and keywords cost more to pass.
            result = self.transport._send(target, msg_ctxt, msg, True, timeout, self.call_monitor_timeout,
                                          self.retry, options is not None and options.at_least_once)
        except TransportDriverError as exc:
            raise ClientSendError(target, exc) from exc
        return result if plain else serializer.deserialize_entity(ctxt, result)


class RPCClient(_CallContext):
    """Invokes remote methods on servers listening on a target's topic.

    Build one with :func:`get_rpc_client`. ``timeout`` defaults to
    ``rpc_response_timeout``; ``version_cap`` refuses requests for newer
    versions; ``retry`` is passed to the driver (None/-1 forever, 0 never, N
    times); ``call_monitor_timeout`` asks servers to send keepalives for long
    calls and fails a call that stays silent that long;
    ``transport_options=TransportOptions(at_least_once=True)`` makes a request
    no queue takes raise MessageUndeliverable at once (a call would otherwise
    time out, a cast be dropped by the broker).
    """

    def __init__(self, transport: Transport, target: Target, timeout: float | None = None,
                 version_cap: str | None = None, serializer: Serializer | None = None,
                 retry: int | None = None, call_monitor_timeout: float | None = None,
                 transport_options: TransportOptions | None = None) -> None:
        super().__init__(transport, target, serializer or NoOpSerializer(), timeout, version_cap,
                         retry, call_monitor_timeout, transport_options)


def get_rpc_client(transport: Transport, target: Target, timeout: float | None = None,
                   version_cap: str | None = None, serializer: Serializer | None = None,
                   retry: int | None = None, call_monitor_timeout: float | None = None,
                   client_cls: type[RPCClient] = RPCClient,
                   transport_options: TransportOptions | None = None) -> RPCClient:
    """Build an RPC client sending to ``target`` over ``transport``."""
    return client_cls(transport, target, timeout=timeout, version_cap=version_cap, serializer=serializer,
                      retry=retry, call_monitor_timeout=call_monitor_timeout, transport_options=transport_options)
