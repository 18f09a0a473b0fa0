"""Transports: what clients and servers are built from, each a handle on the
driver its URL's scheme names (URLs themselves: :mod:`fastrpc.transport_url`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastrpc.drivers import get_driver_class
from fastrpc.drivers.base import BaseDriver, Listener
from fastrpc.exceptions import InvalidTarget, InvalidTransportURL
from fastrpc.options import Options
from fastrpc.redact import MASK, mask_url  # noqa: F401  # MASK: also known here
from fastrpc.target import Target
from fastrpc.transport_url import TransportHost, TransportURL

__all__ = [
    "TransportHost", "TransportURL", "Transport", "RPCTransport",
    "get_transport", "get_rpc_transport", "mask_url",
]


class TransportOptions:
    """Per-client sending options (oslo's name). ``at_least_once``: publish
    requests mandatory and with a broker confirm, so that one no queue takes
    raises MessageUndeliverable instead of being dropped."""

    def __init__(self, at_least_once: bool = False) -> None:
        self._at_least_once = bool(at_least_once)

    @property
    def at_least_once(self) -> bool:
        return self._at_least_once

    def __repr__(self) -> str:
        return f"TransportOptions(at_least_once={self._at_least_once})"


class Transport:
    """A handle on a driver; what clients and servers are built from."""

    def __init__(self, driver: BaseDriver) -> None:
        self.conf: Options = driver.conf
        self._driver = driver

    def _send(self, target: Target, ctxt: dict, message: dict, wait_for_reply: bool = False,
              timeout: float | None = None, call_monitor_timeout: float | None = None,
              retry: int | None = None, at_least_once: bool = False) -> Any:
        if not target.topic:
            raise InvalidTarget("A topic is required to send", target)
        return self._driver.send(target, ctxt, message, wait_for_reply, timeout, call_monitor_timeout, retry,
                                 at_least_once)

    def _listen(self, target: Target, batch_size: int = 1,
                batch_timeout: float | None = None) -> Listener:
        if not (target.topic and target.server):
            raise InvalidTarget("A server's target must have topic and server names specified", target)
        return self._driver.listen(target, batch_size, batch_timeout)

    def _send_notification(self, target: Target, ctxt: dict, message: dict, version: float,
                           retry: int | None = None) -> None:
        if not target.topic:
            raise InvalidTarget("A topic is required to send", target)
        self._driver.send_notification(target, ctxt, message, version, retry=retry)

    def _listen_for_notifications(self, targets_and_priorities: Iterable[tuple[Target, str]], pool: str | None,
                                  batch_size: int = 1, batch_timeout: float | None = None) -> Listener:
        targets_and_priorities = list(targets_and_priorities)
        for target, _priority in targets_and_priorities:
            if not target.topic:
                raise InvalidTarget("A target must have topic specified", target)
        return self._driver.listen_for_notifications(targets_and_priorities, pool, batch_size, batch_timeout)

    def cleanup(self) -> None:
        """Release every resource of the transport (connections, threads)."""
        self._driver.cleanup()

    def health(self) -> list[dict[str, Any]]:
        """The state of each of the transport's connections: ``name``,
        ``state`` (``new``, ``connected`` or ``reconnecting``),
        ``host`` (connected to, or tried next), ``since`` (``time.time()`` of
        the last change), ``attempt`` (failed attempts since it was lost) and
        ``error`` (why it was lost or the last attempt failed)."""
        return self._driver.health()

    @property
    def healthy(self) -> bool:
        """Whether every connection of the transport is connected."""
        return all(link["state"] == "connected" for link in self.health())

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._driver.url}>"


class RPCTransport(Transport):
    """A transport used for RPC."""


def _get_transport(conf: Any, url: str | TransportURL | None,
                   allowed_remote_exmods: list[str] | None,
                   transport_cls: type[Transport]) -> Transport:
    options = Options.coerce(conf)
    parsed = url if isinstance(url, TransportURL) else TransportURL.parse(options, url)
    try:
        options = options.with_url_query(parsed.query)
    except ValueError as exc:
        raise InvalidTransportURL(str(parsed), f"Invalid option in URL: {exc}") from None
    driver_cls = get_driver_class(parsed.driver_name)
    driver = driver_cls(options, parsed, default_exchange=options.control_exchange,
                        allowed_remote_exmods=list(allowed_remote_exmods or []))
    return transport_cls(driver)


def get_rpc_transport(conf: Any = None, url: str | TransportURL | None = None,
                      allowed_remote_exmods: list[str] | None = None) -> RPCTransport:
    """Build an RPC transport from options (or an oslo.config object) and a URL.

    ``allowed_remote_exmods`` lists the modules whose exceptions a caller may
    rebuild from a remote failure (builtins always are).
    """
    transport = _get_transport(conf, url, allowed_remote_exmods, RPCTransport)
    assert isinstance(transport, RPCTransport)
    return transport


def get_transport(conf: Any = None, url: str | TransportURL | None = None,
                  allowed_remote_exmods: list[str] | None = None) -> Transport:
    """Same as :func:`get_rpc_transport` (oslo's older name)."""
    return _get_transport(conf, url, allowed_remote_exmods, RPCTransport)
