"""The metrics registry (fastrpc.metrics) and its Prometheus exporter, with
real calls, casts, timeouts, remote errors, malformed and duplicate
messages and reconnects on the private broker, scraped over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from fastrpc import (
    MessagingTimeout,
    MetricsExporterError,
    Target,
    get_rpc_client,
    get_rpc_server,
    get_rpc_transport,
    metrics,
    prometheus,
)
from fastrpc.amqp.connection import Connection
from fastrpc.drivers.topology import publish_properties
from fastrpc.envelope import encode_request
from fastrpc.testing.ports import free_ports

WAIT = 10.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Endpoint:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        self.noted: list[Any] = []

    def echo(self, ctxt: dict, value: Any) -> Any:
        return value

    def fail(self, ctxt: dict) -> None:
        raise ValueError("refused")

    def note(self, ctxt: dict, value: Any) -> None:
        self.noted.append(value)

    def hold(self, ctxt: dict) -> str:
        self.holding.set()
        self.release.wait(WAIT)
        return "released"


@pytest.fixture
def counting() -> Iterator[None]:
    """Metrics on for the test (the registry is the process's: tests compare before and after)."""
    was = metrics.enabled()
    metrics.enable()
    yield
    if not was:
        metrics.disable()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return "metrics_" + request.node.name[:60]


class Service:
    """A transport, an RPC server on ``topic`` and a client of it."""

    def __init__(self, url: str, topic: str, executor: str = "blocking", pool: int | None = None,
                 server_url: str | None = None) -> None:
        self.endpoint = Endpoint()
        self.transport = get_rpc_transport(url=url)
        self.server_transport = get_rpc_transport(url=server_url) if server_url else self.transport
        self.server = get_rpc_server(self.server_transport, Target(topic=topic, server="s1"), [self.endpoint],
                                     executor=executor)
        self.server.start(override_pool_size=pool)
        self.client = get_rpc_client(self.transport, Target(topic=topic), timeout=WAIT)

    def close(self) -> None:
        self.endpoint.release.set()
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()
        if self.server_transport is not self.transport:
            self.server_transport.cleanup()


@pytest.fixture
def service(broker: Any, topic: str) -> Iterator[Service]:
    svc = Service(broker.url, topic)
    yield svc
    svc.close()


def delta(before: dict[Any, int], after: dict[Any, int], key: Any) -> int:
    return after.get(key, 0) - before.get(key, 0)


def test_metrics_are_off_unless_enabled_and_count_nothing_then(service: Service) -> None:
    fresh = subprocess.run([sys.executable, "-c", "import fastrpc, fastrpc.metrics as m; print(m.on)"],
                           capture_output=True, text=True, check=True, timeout=60)
    assert fresh.stdout.strip() == "False"
    was = metrics.enabled()
    metrics.disable()
    try:
        before = metrics.snapshot()
        assert service.client.call({}, "echo", value=1) == 1
        service.client.cast({}, "note", value=2)
        with pytest.raises(ValueError):
            service.client.call({}, "fail")
        after = metrics.snapshot()
    finally:
        if was:
            metrics.enable()
    gauges = ("confirms_outstanding", "executor_queue_depth")
    assert {k: v for k, v in vars(after).items() if k not in gauges} == \
        {k: v for k, v in vars(before).items() if k not in gauges}


def test_calls_casts_replies_timeouts_remote_errors_and_late_replies(broker: Any, topic: str,
                                                                     counting: None) -> None:
    # The threading executor: the held request runs while the caller times out.
    svc = Service(broker.url, topic, executor="threading")
    try:
        before = metrics.snapshot()
        for i in range(3):
            assert svc.client.call({}, "echo", value=i) == i
        for i in range(2):
            svc.client.cast({}, "note", value=i)
        with pytest.raises(ValueError, match="refused"):
            svc.client.call({}, "fail")
        with pytest.raises(MessagingTimeout):
            svc.client.prepare(timeout=0.5).call({}, "hold")
        svc.endpoint.release.set()  # its reply now comes after its caller gave up
        wait_for(lambda: metrics.snapshot().late_replies == before.late_replies + 1, "the late reply")
        wait_for(lambda: metrics.snapshot().handler_seconds.count == before.handler_seconds.count + 7,
                 "every handler to end")
        after = metrics.snapshot()
    finally:
        svc.close()
    assert after.calls_answered - before.calls_answered == 3
    assert after.remote_errors - before.remote_errors == 1
    assert after.replies - before.replies == 4
    assert after.calls - before.calls == 5  # answered, failed remotely, timed out
    assert after.casts - before.casts == 2
    assert after.timeouts - before.timeouts == 1
    assert delta(before.client_errors, after.client_errors, ("call", "ValueError")) == 1
    assert delta(before.client_errors, after.client_errors, ("call", "MessagingTimeout")) == 1
    assert after.call_seconds.count - before.call_seconds.count == 4  # the timed-out call had no reply
    assert 0 < after.call_seconds.sum - before.call_seconds.sum < 4 * WAIT
    assert after.handlers - before.handlers == 7
    assert delta(before.handler_errors, after.handler_errors, "ValueError") == 1
    # The held handler ran past the caller's 0.5 s: it is counted in a bucket above 0.25 s.
    slow = [n for (bound, n) in after.handler_seconds.cumulative() if bound == 0.25][0]
    slow_before = [n for (bound, n) in before.handler_seconds.cumulative() if bound == 0.25][0]
    assert (after.handler_seconds.count - slow) - (before.handler_seconds.count - slow_before) >= 1


def test_duplicates_and_malformed_messages(broker: Any, service: Service, topic: str, counting: None) -> None:
    assert service.client.call({}, "echo", value=0) == 0  # declares the reply queue
    reply_q = service.transport._driver.reply_queue
    before = metrics.snapshot()
    conn = Connection(broker.url)
    conn.connect()
    try:
        ch = conn.channel()
        props = publish_properties("application/json")
        body = encode_request({"method": "note", "args": {"value": "dup"}}, {}, "a-unique-id-sent-twice")
        ch.basic_publish("openstack", topic, body, props)
        ch.basic_publish("openstack", topic, body, props)
        ch.basic_publish("openstack", topic, b"{not json", props)
        ch.basic_publish("", reply_q, b"[1, 2", props)
    finally:
        conn.close()
    # A call after them on the same queue: the blocking executor takes them in order.
    assert service.client.call({}, "echo", value=1) == 1
    wait_for(lambda: metrics.snapshot().malformed["reply"] == before.malformed["reply"] + 1, "the bad reply")
    after = metrics.snapshot()
    assert service.endpoint.noted == ["dup"]
    assert after.duplicates - before.duplicates == 1
    assert after.malformed["request"] - before.malformed["request"] == 1
    assert after.malformed["reply"] - before.malformed["reply"] == 1
    assert after.malformed["notification"] == before.malformed["notification"]


def test_reconnects_are_counted_by_connection_and_reason(broker: Any, tcp_proxy_factory: Any, topic: str,
                                                         counting: None) -> None:
    proxy = tcp_proxy_factory("127.0.0.1", broker.port)
    svc = Service(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", topic)
    try:
        assert svc.client.call({}, "echo", value=1) == 1
        before = metrics.snapshot()
        proxy.reset()  # the listener's and the sending connection
        lost = ("listener", "connection_lost"), ("sending", "connection_lost")
        wait_for(lambda: all(delta(before.reconnects, metrics.snapshot().reconnects, k) == 1 for k in lost),
                 "both losses")
        assert svc.client.call({}, "echo", value=2) == 2
        wait_for(lambda: svc.transport.healthy, "the listener to be back")

        # The broker cancels the listener's consumer: it reconnects for that reason.
        conn = Connection(broker.url)
        conn.connect()
        try:
            conn.channel().queue_delete(topic)
        finally:
            conn.close()
        key = ("listener", "consumer_cancelled")
        wait_for(lambda: delta(before.reconnects, metrics.snapshot().reconnects, key) == 1, "the restart")
        wait_for(lambda: svc.transport.healthy, "the listener to be back")
        assert svc.client.call({}, "echo", value=3) == 3
        after = metrics.snapshot()
    finally:
        svc.close()
    assert after.reconnects_total - before.reconnects_total == 3


def test_executor_queue_depth_and_confirms_outstanding(broker: Any, tcp_proxy_factory: Any, topic: str,
                                                       counting: None) -> None:
    proxy = tcp_proxy_factory("127.0.0.1", broker.port)
    # One worker; the client's connection goes through the proxy, the server's does not.
    svc = Service(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", topic, executor="threading", pool=1,
                  server_url=broker.url)
    try:
        assert svc.client.call({}, "echo", value=0) == 0
        assert metrics.snapshot().executor_queue_depth == 0
        svc.client.cast({}, "hold")
        assert svc.endpoint.holding.wait(WAIT)
        for i in range(4):
            svc.client.cast({}, "note", value=i)
        wait_for(lambda: metrics.snapshot().executor_queue_depth == 4, "4 requests waiting for the worker")
        svc.endpoint.release.set()
        wait_for(lambda: metrics.snapshot().executor_queue_depth == 0, "the worker to take them")
        wait_for(lambda: len(svc.endpoint.noted) == 4, "the notes")

        wait_for(lambda: metrics.snapshot().confirms_outstanding == 0, "the confirms of the notes")
        proxy.blackhole()  # the cast reaches the proxy, never the broker: no confirm
        svc.client.cast({}, "note", value="unconfirmed")
        wait_for(lambda: metrics.snapshot().confirms_outstanding == 1, "the confirm to be outstanding")
        proxy.resume()
        wait_for(lambda: metrics.snapshot().confirms_outstanding == 0, "the confirm")
        wait_for(lambda: "unconfirmed" in svc.endpoint.noted, "the cast to run")
    finally:
        svc.close()


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.status == 200
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    found = [s.value for s in families[family].samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, families[family].samples)
    return float(found[0])


def test_exporter_serves_the_registry_with_oslo_metrics_names(service: Service, counting: None) -> None:
    registry = CollectorRegistry()
    server = prometheus.start_http_server(0, registry=registry)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        service.client.cast({}, "note", value=1)
        assert service.client.call({}, "echo", value=1) == 1
        with pytest.raises(ValueError):
            service.client.call({}, "fail")
        families = scrape(server.url)
        snap = metrics.snapshot()
    finally:
        server.close()
    client = "oslo_messaging_rpc_client_"
    assert sample(families, client + "invocation_start", client + "invocation_start_total",
                  call_type="call") == snap.calls
    assert sample(families, client + "invocation_start", client + "invocation_start_total",
                  call_type="cast") == snap.casts
    assert sample(families, client + "invocation_end", client + "invocation_end_total",
                  call_type="call") == snap.calls_answered
    assert sample(families, client + "exception", client + "exception_total", call_type="call",
                  exception="ValueError") == snap.client_errors[("call", "ValueError")]
    hist = client + "processing_seconds"
    assert families[hist].type == "histogram"
    assert sample(families, hist, hist + "_count", call_type="call") == snap.call_seconds.count
    assert sample(families, hist, hist + "_bucket", call_type="call", le="+Inf") == snap.call_seconds.count
    assert sample(families, hist, hist + "_bucket", call_type="call", le="0.001") == \
        dict(snap.call_seconds.cumulative())[0.001]
    server_hist = "oslo_messaging_rpc_server_processing_seconds"
    assert sample(families, server_hist, server_hist + "_count") == snap.handler_seconds.count >= 3
    assert sample(families, "oslo_messaging_rpc_server_exception", "oslo_messaging_rpc_server_exception_total",
                  exception="ValueError") == snap.handler_errors["ValueError"]
    assert sample(families, "fastrpc_replies", "fastrpc_replies_total") == snap.replies
    assert sample(families, "fastrpc_remote_errors", "fastrpc_remote_errors_total") == snap.remote_errors
    assert sample(families, "fastrpc_malformed_messages", "fastrpc_malformed_messages_total",
                  kind="request") == snap.malformed["request"]
    assert families["fastrpc_confirms_outstanding"].type == "gauge"
    assert families["fastrpc_executor_queue_depth"].type == "gauge"
    for name in ("fastrpc_call_timeouts", "fastrpc_late_replies", "fastrpc_duplicates_dropped",
                 "fastrpc_reconnects"):
        assert families[name].type == "counter"
    # Closed: the port is free again.
    with socket.create_server(("127.0.0.1", server.port)):
        pass


def test_a_port_in_use_is_a_clear_error_at_start(broker: Any) -> None:
    was = metrics.enabled()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(MetricsExporterError) as info:
            prometheus.start_http_server(port, registry=CollectorRegistry())
        assert (info.value.host, info.value.port) == ("127.0.0.1", port)
        assert str(info.value).startswith(f"cannot serve metrics on 127.0.0.1:{port}: the port is already in use")
        # The same from the transport option, when the transport is made.
        with pytest.raises(MetricsExporterError, match=f"127.0.0.1:{port}: the port is already in use"):
            get_rpc_transport(url=f"{broker.url}?metrics_port={port}")
    if not was:
        metrics.disable()


def test_transport_options_turn_metrics_and_the_exporter_on(broker: Any, topic: str) -> None:
    was = metrics.enabled()
    metrics.disable()
    port = free_ports(1)[0]
    first = get_rpc_transport(url=f"{broker.url}?metrics_port={port}")
    second = get_rpc_transport(url=f"{broker.url}?metrics_port={port}")  # the same exporter, no error
    try:
        assert metrics.enabled()
        families = scrape(f"http://127.0.0.1:{port}/metrics")
        assert "oslo_messaging_rpc_client_invocation_start" in families
        assert "fastrpc_reconnects" in families
    finally:
        first.cleanup()
        second.cleanup()
        prometheus.serve(port).close()
        if not was:
            metrics.disable()
    metrics.disable()
    get_rpc_transport(url=f"{broker.url}?metrics=true").cleanup()
    assert metrics.enabled()
    if not was:
        metrics.disable()


def test_histograms_bucket_every_duration_recorded_from_many_threads(counting: None) -> None:
    # Durations recorded through the hooks, more than FOLD_AT of them from
    # several threads at once (folds run while others append): none is lost
    # and each lands in its bucket.
    # duration -> its bucket's bound, far enough below it for a thread switch in between
    durations = {0.15: 0.25, 0.3: 0.5, 3.0: 5.0, 100.0: float("inf")}
    threads, per_thread = 4, metrics.FOLD_AT
    before = metrics.snapshot()

    def record() -> None:
        for i in range(per_thread):
            duration = list(durations)[i % len(durations)]
            if i % 2:
                metrics.call_answered(time.monotonic() - duration)
            else:
                metrics.remote_error(time.monotonic() - duration, ValueError("remote"))

    workers = [threading.Thread(target=record) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)
    after = metrics.snapshot()
    recorded = threads * per_thread
    assert after.calls_answered - before.calls_answered == recorded // 2
    assert after.remote_errors - before.remote_errors == recorded // 2
    assert delta(before.client_errors, after.client_errors, ("call", "ValueError")) == recorded // 2
    per_bucket = {bound: n for bound, n in zip((*metrics.LATENCY_BUCKETS, float("inf")),
                                                 (a - b for a, b in zip(after.call_seconds.counts,
                                                                        before.call_seconds.counts, strict=True)),
                                                 strict=True) if n}
    assert per_bucket == {bound: recorded // len(durations) for bound in durations.values()}
    expected_sum = sum(durations) * recorded / len(durations)
    assert expected_sum <= after.call_seconds.sum - before.call_seconds.sum < expected_sum + recorded * 0.01
