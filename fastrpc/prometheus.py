"""fastrpc's metrics (:mod:`fastrpc.metrics`) for Prometheus: a collector
and an HTTP exporter, with ``prometheus_client`` (the ``fastrpc[metrics]`` extra).

Names follow oslo.metrics (``oslo_messaging_rpc_client_*``,
``oslo_messaging_rpc_server_*``) where it has one, so dashboards made for
oslo.messaging keep working; the rest are ``fastrpc_*``. Everything is read
from the registry when scraped: nothing here runs per message.
"""

from __future__ import annotations

import errno
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from fastrpc import metrics
from fastrpc.exceptions import MetricsExporterError

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.registry import CollectorRegistry
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("fastrpc.prometheus needs prometheus_client: pip install 'fastrpc[metrics]'") from exc

__all__ = ["FastrpcCollector", "MetricsServer", "register", "serve", "start_http_server"]

_CLIENT = "oslo_messaging_rpc_client_"
_SERVER = "oslo_messaging_rpc_server_"


def _histogram(name: str, doc: str, hist: metrics.HistogramSnapshot, labels: dict[str, str]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    buckets = [(floatToGoString(bound), n) for bound, n in hist.cumulative()]
    family.add_metric(list(labels.values()), buckets, hist.sum)
    return family


def _counter(name: str, doc: str, values: dict[Any, int] | int,
             labels: tuple[str, ...] = ()) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    if isinstance(values, int):
        family.add_metric([], values)
    else:
        for key, value in sorted(values.items()):
            family.add_metric(list(key), value)
    return family


class FastrpcCollector:
    """Exposes this process's :mod:`fastrpc.metrics` (a prometheus_client collector)."""

    def collect(self) -> Iterator[Metric]:
        snap = metrics.snapshot()
        call_errors = sum(n for (kind, _), n in snap.client_errors.items() if kind == "call")
        cast_errors = sum(n for (kind, _), n in snap.client_errors.items() if kind == "cast")
        # oslo.metrics' names and label (call_type); calls are counted when they end.
        yield _counter(_CLIENT + "invocation_start_total", "RPC calls and casts made.",
                       {("call",): snap.calls, ("cast",): snap.casts + cast_errors}, ("call_type",))
        yield _counter(_CLIENT + "invocation_end_total",
                       "RPC calls that returned a result, and casts the transport took.",
                       {("call",): snap.calls_answered, ("cast",): snap.casts}, ("call_type",))
        yield _counter(_CLIENT + "exception_total", "RPC calls and casts that raised, by exception class "
                       "(remote exceptions included).",
                       dict(snap.client_errors), ("call_type", "exception"))
        yield _histogram(_CLIENT + "processing_seconds", "Duration of RPC calls until their reply "
                         "(a result or a remote exception).", snap.call_seconds, {"call_type": "call"})
        # A handler is counted when it ends: oslo's start and end totals are the same.
        yield _counter(_SERVER + "invocation_start_total", "Requests an RPC server ran (counted when they end).",
                       snap.handlers)
        yield _counter(_SERVER + "invocation_end_total", "Requests an RPC server ran.", snap.handlers)
        yield _counter(_SERVER + "exception_total", "Requests whose handler raised, by exception class.",
                       {(name,): n for name, n in snap.handler_errors.items()}, ("exception",))
        yield _histogram(_SERVER + "processing_seconds", "Duration of RPC handlers (endpoint methods).",
                         snap.handler_seconds, {})
        # fastrpc's own.
        yield _counter("fastrpc_replies_total", "Final replies received by calls (results and remote exceptions).",
                       snap.replies)
        yield _counter("fastrpc_remote_errors_total", "Calls answered with a remote exception.", snap.remote_errors)
        yield _counter("fastrpc_call_timeouts_total", "Calls that raised MessagingTimeout.", snap.timeouts)
        yield _counter("fastrpc_call_errors_total", "Calls that raised (timeouts and remote exceptions included).",
                       call_errors)
        yield _counter("fastrpc_reconnects_total", "Connections lost and reconnected, by connection kind "
                       "(sending, listener) and reason.", dict(snap.reconnects), ("connection", "reason"))
        yield _counter("fastrpc_late_replies_total", "Replies dropped because their caller had given up.",
                       snap.late_replies)
        yield _counter("fastrpc_duplicates_dropped_total", "Requests and notifications dropped as duplicates "
                       "(a _unique_id seen before).", snap.duplicates)
        yield _counter("fastrpc_malformed_messages_total", "Messages rejected or dropped as malformed, by kind.",
                       {(kind,): n for kind, n in snap.malformed.items()}, ("kind",))
        yield GaugeMetricFamily("fastrpc_confirms_outstanding",
                                "Publishes the broker has not confirmed yet, on the sending connections.",
                                value=snap.confirms_outstanding)
        yield GaugeMetricFamily("fastrpc_executor_queue_depth",
                                "Requests received and waiting for a free worker of an RPC server.",
                                value=snap.executor_queue_depth)


_registered: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def register(registry: CollectorRegistry | None = None) -> None:
    """Add the collector to ``registry`` (default: prometheus_client's), once."""
    registry = prometheus_client.REGISTRY if registry is None else registry
    with _lock:
        if registry not in _registered:
            registry.register(FastrpcCollector())
            _registered.add(registry)


# The exporters serve() started, by (address, port).
_served: dict[tuple[str, int], MetricsServer] = {}
_serve_lock = threading.Lock()


class MetricsServer:
    """An HTTP exporter started by :func:`start_http_server`."""

    def __init__(self, httpd: Any, thread: threading.Thread, host: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host = host
        self.port: int = httpd.server_port  # the one chosen, when asked for port 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        with _serve_lock:
            if _served.get((self.host, self.port)) is self:
                del _served[(self.host, self.port)]
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"


def start_http_server(port: int, addr: str = "127.0.0.1",
                      registry: CollectorRegistry | None = None) -> MetricsServer:
    """Turn metrics on and serve ``registry`` (default: prometheus_client's,
    with fastrpc's collector added) on ``http://addr:port/metrics`` from a
    daemon thread. MetricsExporterError, naming the address, when the port
    is taken or cannot be bound."""
    registry = prometheus_client.REGISTRY if registry is None else registry
    register(registry)
    metrics.enable()
    try:
        httpd, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "the port is already in use (another process, or another exporter, listens there)"
        else:
            why = exc.strerror or str(exc)
        raise MetricsExporterError(addr, port, why) from exc
    except (OverflowError, ValueError, TypeError) as exc:
        raise MetricsExporterError(addr, port, str(exc)) from exc
    return MetricsServer(httpd, thread, addr)


def serve(port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """The process's exporter on ``addr:port`` (the ``metrics_port`` and
    ``metrics_host`` options): started once, the same one for every
    transport that asks again."""
    with _serve_lock:
        server = _served.get((addr, port))
        if server is None:
            server = _served[(addr, port)] = start_http_server(port, addr)
        return server
