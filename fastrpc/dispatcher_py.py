"""RPCDispatcher: find the endpoint method a request names and run it.

Endpoints may carry a ``target`` attribute (a Target with ``namespace`` and
``version``). A request matches an endpoint when its namespace is accepted and
its version is compatible (same major, requested minor <= implemented); among
matching endpoints the first one with the method, allowed by the access policy,
runs. No compatible endpoint -> UnsupportedVersion; compatible endpoints but no
such method -> NoSuchMethod.
"""

from __future__ import annotations

import functools
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastrpc.drivers.base import IncomingMessage
from fastrpc.exceptions import ExpectedException, NoSuchMethod, UnsupportedVersion
from fastrpc.serializer import NoOpSerializer, Serializer
from fastrpc.target import Target, version_is_compatible

__all__ = [
    "RPCDispatcher", "RPCAccessPolicyBase", "DefaultRPCAccessPolicy", "ExplicitRPCAccessPolicy",
    "LegacyRPCAccessPolicy", "PingEndpoint", "expose", "expected_exceptions",
]

LOG = logging.getLogger("fastrpc.dispatcher")  # one name, whichever build runs

F = TypeVar("F", bound=Callable[..., Any])

PING_METHOD = "oslo_rpc_server_ping"
# A caller asking for heartbeats more often than this is ignored: it would
# only flood its own reply queue.
MIN_HEARTBEAT_INTERVAL = 0.05
# (implemented, requested) version -> compatible; a handful of distinct pairs
# in practice, parsed once instead of on every request.
_COMPAT_CACHE_SIZE = 1024
_compat_cache: dict[tuple[str, str], bool] = {}


class RPCAccessPolicyBase(ABC):
    """Decides which endpoint methods may be invoked remotely."""

    @abstractmethod
    def is_allowed(self, endpoint: Any, method: str) -> bool:
        """True if ``method`` of ``endpoint`` may be invoked via RPC."""


class LegacyRPCAccessPolicy(RPCAccessPolicyBase):
    """Every callable attribute, private ones included."""

    def is_allowed(self, endpoint: Any, method: str) -> bool:
        return True


class DefaultRPCAccessPolicy(RPCAccessPolicyBase):
    """Everything except names starting with ``_``."""

    def is_allowed(self, endpoint: Any, method: str) -> bool:
        return not method.startswith("_")


class ExplicitRPCAccessPolicy(RPCAccessPolicyBase):
    """Only methods decorated with :func:`expose`."""

    def is_allowed(self, endpoint: Any, method: str) -> bool:
        return bool(getattr(getattr(endpoint, method, None), "exposed", False))


def expose(func: F) -> F:
    """Mark an endpoint method as callable under ExplicitRPCAccessPolicy."""
    func.exposed = True  # type: ignore[attr-defined]
    return func


def expected_exceptions(*exceptions: type[BaseException]) -> Callable[[F], F]:
    """Declare exceptions an endpoint method raises as part of its contract.

    They reach the caller unchanged but the server does not log them as errors.
    """

    def outer(func: F) -> F:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except exceptions as exc:
                raise ExpectedException() from exc

        return inner  # type: ignore[return-value]

    return outer


class PingEndpoint:
    """Answers ``oslo_rpc_server_ping`` when ``rpc_ping_enabled`` is set."""

    def oslo_rpc_server_ping(self, ctxt: Any, **kwargs: Any) -> str:
        return "pong"


def _policy_instance(access_policy: Any) -> RPCAccessPolicyBase:
    if access_policy is None:
        return DefaultRPCAccessPolicy()
    if isinstance(access_policy, RPCAccessPolicyBase):
        return access_policy
    if isinstance(access_policy, type) and issubclass(access_policy, RPCAccessPolicyBase):
        return access_policy()
    raise TypeError("access_policy must be a subclass of RPCAccessPolicyBase")


# Access policies whose answer depends only on the method's name: a cached
# route needs no second asking.
_STATIC_POLICIES = frozenset((DefaultRPCAccessPolicy, LegacyRPCAccessPolicy))
_KEY_TYPES = (str, type(None))  # namespaces a route is cached for
_ROUTES_SIZE = 1024  # distinct (namespace, version, method) remembered


class RPCDispatcher:
    """Routes requests to endpoint methods by namespace, version and name."""

    def __init__(self, endpoints: Iterable[Any], serializer: Serializer | None = None,
                 access_policy: type[RPCAccessPolicyBase] | RPCAccessPolicyBase | None = None,
                 rpc_ping_enabled: bool = False) -> None:
        self.endpoints: list[Any] = list(endpoints)
        has_ping = False
        for endpoint in self.endpoints:
            target = getattr(endpoint, "target", None)
            if target is not None and not isinstance(target, Target):
                raise TypeError(
                    "'target' is a reserved endpoint attribute used for namespace and version "
                    f"filtering; it must be a fastrpc.Target: endpoint={endpoint!r}")
            if getattr(endpoint, PING_METHOD, None) is not None:
                has_ping = True
                LOG.warning("%s is a reserved endpoint method name (endpoint=%r)", PING_METHOD, endpoint)
        if rpc_ping_enabled:
            if has_ping:
                LOG.warning("rpc_ping_enabled is set but an endpoint already defines %s; "
                            "not adding the ping endpoint", PING_METHOD)
            else:
                self.endpoints.append(PingEndpoint())
        self.serializer = serializer or NoOpSerializer()
        self.access_policy = _policy_instance(access_policy)
        self._default_target = Target()
        # (namespace, version, method) -> the endpoint that runs it: the scan
        # over endpoints below, once per distinct request kind instead of on
        # every request. Endpoints, their targets and the list are fixed once
        # the dispatcher serves (as oslo's); the method is looked up again on
        # every request, and a custom access policy is asked every time.
        self._routes: dict[tuple[Any, Any, str], Any] = {}

    @property
    def serializer(self) -> Serializer:
        return self._serializer

    @serializer.setter
    def serializer(self, serializer: Serializer) -> None:
        self._serializer = serializer
        # Nothing to convert: the request's arguments go to the method as they came.
        self._plain = type(serializer) is NoOpSerializer

    @property
    def access_policy(self) -> RPCAccessPolicyBase:
        return self._access_policy

    @access_policy.setter
    def access_policy(self, policy: RPCAccessPolicyBase) -> None:
        self._access_policy = policy
        # A policy whose answer depends only on the method's name: a cached
        # route needs no second asking.
        self._static_policy = type(policy) in _STATIC_POLICIES

    @staticmethod
    def _is_compatible(target: Target, version: str) -> bool:
        key = (target.version or "1.0", version)
        found = _compat_cache.get(key)
        if found is None:
            try:
                found = version_is_compatible(key[0], version)
            except (ValueError, AttributeError, TypeError):
                found = False
            if len(_compat_cache) >= _COMPAT_CACHE_SIZE:
                _compat_cache.clear()
            _compat_cache[key] = found
        return found

    def _do_dispatch(self, endpoint: Any, method: str, ctxt: dict, args: dict) -> Any:
        if self._plain:
            return getattr(endpoint, method)(ctxt, **args)
        serializer = self._serializer
        context = serializer.deserialize_context(ctxt)
        new_args = {name: serializer.deserialize_entity(context, arg) for name, arg in args.items()}
        result = getattr(endpoint, method)(context, **new_args)
        return serializer.serialize_entity(context, result)

    def dispatch(self, incoming: IncomingMessage) -> Any:
        """Run the requested method and return its serialized result.

        Raises NoSuchMethod, UnsupportedVersion, ExpectedException or whatever
        the endpoint raised.
        """
        message = incoming.message
        method: Any = message.get("method")  # a str once a route is found
        args = message.get("args") or {}
        if not isinstance(args, dict):
            raise NoSuchMethod(str(method))
        for name in args:  # a plain loop: this runs for every request
            if not isinstance(name, str):
                raise NoSuchMethod(str(method))
        namespace = message.get("namespace")
        version: Any = message.get("version") or "1.0"
        key = (namespace, version, method)
        try:
            endpoint = self._routes.get(key)
        except TypeError:  # an unhashable namespace or version from a malformed request
            endpoint = None
        # A cached route names a string method its endpoint had, allowed by a
        # static policy; the method is looked up again (it may have gone).
        func = None if endpoint is None else getattr(endpoint, method, None)
        if func is None or not callable(func) or (
                not self._static_policy and not self._access_policy.is_allowed(endpoint, method)):
            if not isinstance(method, str):
                raise NoSuchMethod(str(method))
            endpoint = self._find(namespace, version, method)
            if type(namespace) in _KEY_TYPES and type(version) is str:
                if len(self._routes) >= _ROUTES_SIZE:
                    self._routes.clear()
                self._routes[key] = endpoint
            func = getattr(endpoint, method)
        if incoming.client_timeout and incoming.msg_id is not None:
            with _CallMonitor(incoming):
                return self._do_dispatch(endpoint, method, incoming.ctxt, args)
        if self._plain:
            return func(incoming.ctxt, **args)
        return self._do_dispatch(endpoint, method, incoming.ctxt, args)

    def _find(self, namespace: Any, version: Any, method: str) -> Any:
        """The first endpoint that accepts ``namespace`` and ``version`` and
        has ``method``, allowed by the access policy."""
        found_compatible = False
        for endpoint in self.endpoints:
            target = getattr(endpoint, "target", None) or self._default_target
            if namespace not in target.accepted_namespaces or not self._is_compatible(target, version):
                continue
            found_compatible = True
            if callable(getattr(endpoint, method, None)) and self._access_policy.is_allowed(endpoint, method):
                return endpoint
        if found_compatible:
            raise NoSuchMethod(method)
        raise UnsupportedVersion(version, method=method)


class _CallMonitor:
    """Sends call-monitor heartbeats while a call runs.

    The caller that set ``call_monitor_timeout`` gives up after that many
    seconds without news, so a keepalive goes out every half of it.
    """

    def __init__(self, incoming: IncomingMessage) -> None:
        self._incoming = incoming
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = 0.0
        timeout = getattr(incoming, "client_timeout", None)
        if incoming.msg_id is None or not timeout:
            return
        try:
            self._interval = float(timeout) / 2
        except (TypeError, ValueError):
            self._interval = 0.0
        if self._interval < MIN_HEARTBEAT_INTERVAL:
            LOG.warning("Client provided an invalid call monitor timeout %r", timeout)
            self._interval = 0.0

    def __enter__(self) -> _CallMonitor:
        if self._interval:
            self._thread = threading.Thread(target=self._run, name="fastrpc-call-monitor", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                self._incoming.heartbeat()
            except Exception as exc:  # noqa: BLE001 - a dead caller or broker ends the monitor
                LOG.debug("Call-monitor heartbeat failed: %s", exc)
                return
