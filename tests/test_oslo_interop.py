"""fastrpc and the real oslo.messaging rabbit driver on one real broker.

oslo client -> fastrpc server, fastrpc client -> oslo server, and both kinds of
server on one topic: calls, casts, fanout, server-targeted calls, namespaces
and versions, remote exceptions (allow-listed or not), timeouts, contexts.
"""

from __future__ import annotations

import queue
import threading
import time

import oslo_messaging
import pytest
from endpoints import in_memory_tracing
from opentelemetry.trace import SpanKind
from oslo_config import cfg

import fastrpc.exceptions as fexc
from fastrpc.client import get_rpc_client
from fastrpc.options import Options
from fastrpc.server import get_rpc_server
from fastrpc.target import Target
from fastrpc.transport import get_rpc_transport

pytestmark = pytest.mark.twins

WAIT = 15.0


class CustomError(Exception):
    pass


THIS_MODULE = CustomError.__module__


def oslo_conf() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    # oslo.messaging 18.x reads some option groups (tracing, metrics) on every
    # call but registers them only on the global CONF; register them all here.
    from oslo_messaging._metrics import client as metrics_client
    from oslo_messaging._tracing import client as tracing_client

    conf.register_opts(tracing_client.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(metrics_client.oslo_messaging_metrics, group="oslo_messaging_metrics")
    return conf


def rabbit_url(broker) -> str:
    return "rabbit://" + broker.url.split("://", 1)[1]


class Endpoint:
    """The same endpoint served by both implementations."""

    def __init__(self, name: str, target=None) -> None:
        self.name = name
        self.target = target
        self.seen: queue.SimpleQueue = queue.SimpleQueue()
        self.release = threading.Event()

    def whoami(self, ctxt, **kwargs):
        self.seen.put(("whoami", kwargs))
        return self.name

    def echo(self, ctxt, value):
        self.seen.put(("echo", value))
        return {"value": value, "ctxt": dict(ctxt), "server": self.name}

    def note(self, ctxt, value):
        self.seen.put(("note", value))

    def fail_builtin(self, ctxt):
        raise KeyError("missing-key")

    def fail_custom(self, ctxt):
        raise CustomError("custom failure")

    def slow(self, ctxt, seconds):
        # Real work that outlasts the caller's call-monitor timeout.
        time.sleep(seconds)
        return "finished"

    def block(self, ctxt):
        # Held until the test releases it, so a timeout is guaranteed.
        self.release.wait(WAIT)
        return "released"


class Versioned:
    def __init__(self, name: str, target) -> None:
        self.name = name
        self.target = target

    def ns_method(self, ctxt, x):
        return [self.name, x * 2]


@pytest.fixture
def topic(request):
    return "interop_" + request.node.name.replace("[", "_").replace("]", "")[:60]


@pytest.fixture
def oslo_transport(broker):
    transport = oslo_messaging.get_rpc_transport(oslo_conf(), url=rabbit_url(broker),
                                                 allowed_remote_exmods=[THIS_MODULE])
    yield transport
    transport.cleanup()


@pytest.fixture(params=["rabbit", "fastrpc"])
def fast_transport(broker, request):
    # Both URL schemes select fastrpc's driver.
    url = request.param + "://" + broker.url.split("://", 1)[1]
    transport = get_rpc_transport(Options(), url=url, allowed_remote_exmods=[THIS_MODULE])
    yield transport
    transport.cleanup()


@pytest.fixture(params=["untraced", "traced"])
def traced(request):
    """fastrpc's tracing off, or on (into an in-memory exporter): oslo peers
    interoperate unchanged with the trace context in fastrpc's requests."""
    if request.param == "untraced":
        yield None
        return
    with in_memory_tracing() as exporter:
        yield exporter


def traced_methods(exporter, kind):
    return sorted(s.attributes["rpc.method"] for s in exporter.get_finished_spans() if s.kind == kind)


def start_oslo_server(transport, topic, server, endpoints):
    target = oslo_messaging.Target(topic=topic, server=server)
    srv = oslo_messaging.get_rpc_server(transport, target, endpoints)  # threading executor
    srv.start()
    return srv


def start_fast_server(transport, topic, server, endpoints):
    srv = get_rpc_server(transport, Target(topic=topic, server=server), endpoints, executor="threading")
    srv.start()
    return srv


def stop(*servers):
    for srv in servers:
        srv.stop()
        srv.wait()


def assert_remote_errors_for_oslo(client):
    """An oslo client whose transport allows no remote exception modules."""
    with pytest.raises(oslo_messaging.RemoteError) as info:
        client.call({}, "fail_custom")
    assert info.value.exc_type == "CustomError"
    with pytest.raises(oslo_messaging.RemoteError) as info:
        client.call({}, "no_such_method")
    assert info.value.exc_type == "NoSuchMethod"


# ---- oslo client -> fastrpc server ---------------------------------------------------


def test_oslo_client_to_fastrpc_server(oslo_transport, fast_transport, topic, traced):
    ep = Endpoint("fast")
    srv = start_fast_server(fast_transport, topic, "fs1", [ep])
    try:
        client = oslo_messaging.get_rpc_client(oslo_transport, oslo_messaging.Target(topic=topic), timeout=WAIT)
        ctxt = {"user_id": "alice", "roles": ["admin", "reader"], "request_id": "req-1"}
        # like oslo's servers, fastrpc adds the caller's call-monitor timeout
        assert client.call(ctxt, "echo", value={"n": [1, 2.5, "é"]}) == {
            "value": {"n": [1, 2.5, "é"]}, "ctxt": {**ctxt, "client_timeout": None}, "server": "fast"}
        client.cast({}, "note", value="cast-1")
        assert ep.seen.get(timeout=WAIT) == ("echo", {"n": [1, 2.5, "é"]})
        assert ep.seen.get(timeout=WAIT) == ("note", "cast-1")
        assert client.prepare(server="fs1").call({}, "whoami") == "fast"
        client.prepare(fanout=True).cast({}, "note", value="fan-1")
        assert ep.seen.get(timeout=WAIT) == ("whoami", {})
        assert ep.seen.get(timeout=WAIT) == ("note", "fan-1")

        with pytest.raises(KeyError):
            client.call({}, "fail_builtin")
        with pytest.raises(CustomError) as info:
            client.call({}, "fail_custom")
        assert "custom failure" in str(info.value)
        with pytest.raises(oslo_messaging.MessagingTimeout):
            client.prepare(timeout=0.5).call({}, "block")
        ep.release.set()
    finally:
        ep.release.set()
        stop(srv)
    if traced is not None:
        # fastrpc's server traced each request of the oslo client, each a trace of its own.
        processed = [s for s in traced.get_finished_spans() if s.kind == SpanKind.CONSUMER]
        assert sorted(s.attributes["rpc.method"] for s in processed) == [
            "block", "echo", "fail_builtin", "fail_custom", "note", "note", "whoami"]
        assert all(s.parent is None for s in processed)


def test_oslo_client_not_allow_listed_gets_remote_error(broker, fast_transport, topic):
    ep = Endpoint("fast")
    srv = start_fast_server(fast_transport, topic, "fs1", [ep])
    transport = oslo_messaging.get_rpc_transport(oslo_conf(), url=rabbit_url(broker))
    try:
        client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=WAIT)
        assert_remote_errors_for_oslo(client)
    finally:
        transport.cleanup()
        stop(srv)


# ---- fastrpc client -> oslo server -----------------------------------------------------


def test_fastrpc_client_to_oslo_server(oslo_transport, fast_transport, topic, traced):
    ep = Endpoint("oslo")
    srv = start_oslo_server(oslo_transport, topic, "os1", [ep])
    try:
        client = get_rpc_client(fast_transport, Target(topic=topic), timeout=WAIT)
        ctxt = {"user_id": "bob", "project_id": "p1", "is_admin": False}
        assert client.call(ctxt, "echo", value=[1, None, "x"]) == {
            "value": [1, None, "x"], "ctxt": {**ctxt, "client_timeout": None}, "server": "oslo"}
        client.cast({}, "note", value="c")
        assert ep.seen.get(timeout=WAIT) == ("echo", [1, None, "x"])
        assert ep.seen.get(timeout=WAIT) == ("note", "c")
        assert client.prepare(server="os1").call({}, "whoami") == "oslo"
        client.prepare(fanout=True).cast({}, "note", value="f")
        assert ep.seen.get(timeout=WAIT) == ("whoami", {})
        assert ep.seen.get(timeout=WAIT) == ("note", "f")

        with pytest.raises(KeyError):
            client.call({}, "fail_builtin")
        with pytest.raises(CustomError):
            client.call({}, "fail_custom")
        with pytest.raises(fexc.MessagingTimeout):
            client.prepare(timeout=0.5).call({}, "block")
        ep.release.set()
    finally:
        ep.release.set()
        stop(srv)
    if traced is not None:
        # Every request went out traced (with the trace context the oslo server ignored).
        assert traced_methods(traced, SpanKind.PRODUCER) == [
            "block", "echo", "fail_builtin", "fail_custom", "note", "note", "whoami"]


def test_nan_and_infinity_cross_both_ways_as_floats(oslo_transport, fast_transport, topic):
    # Python's json (oslo) writes them as NaN / Infinity; fastrpc reads and
    # writes them the same way instead of orjson's null.
    value = [float("inf"), -float("inf"), None, 1.5]
    oslo_ep, fast_ep = Endpoint("oslo"), Endpoint("fast")
    oslo_srv = start_oslo_server(oslo_transport, topic + "_o", "os1", [oslo_ep])
    fast_srv = start_fast_server(fast_transport, topic + "_f", "fs1", [fast_ep])
    try:
        to_oslo = get_rpc_client(fast_transport, Target(topic=topic + "_o"), timeout=WAIT)
        assert to_oslo.call({}, "echo", value=value)["value"] == value
        nan = to_oslo.call({}, "echo", value=float("nan"))["value"]
        assert isinstance(nan, float) and nan != nan
        to_fast = oslo_messaging.get_rpc_client(oslo_transport, oslo_messaging.Target(topic=topic + "_f"),
                                                timeout=WAIT)
        assert to_fast.call({}, "echo", value=value)["value"] == value
        assert oslo_ep.seen.get(timeout=WAIT) == ("echo", value)
        assert fast_ep.seen.get(timeout=WAIT) == ("echo", value)
    finally:
        stop(oslo_srv, fast_srv)


def test_fastrpc_client_not_allow_listed_gets_remote_error(broker, oslo_transport, topic):
    ep = Endpoint("oslo")
    srv = start_oslo_server(oslo_transport, topic, "os1", [ep])
    transport = get_rpc_transport(Options(), url=broker.url)
    try:
        client = get_rpc_client(transport, Target(topic=topic), timeout=WAIT)
        with pytest.raises(fexc.RemoteError) as info:
            client.call({}, "fail_custom")
        assert info.value.exc_type == "CustomError"
        assert "custom failure" in str(info.value)
    finally:
        transport.cleanup()
        stop(srv)


def test_namespaces_and_versions_both_ways(oslo_transport, fast_transport, topic):
    oslo_ep = Versioned("oslo", oslo_messaging.Target(namespace="ns", version="1.3"))
    fast_ep = Versioned("fast", Target(namespace="ns", version="1.3"))
    osrv = start_oslo_server(oslo_transport, topic + "_o", "s", [oslo_ep])
    fsrv = start_fast_server(fast_transport, topic + "_f", "s", [fast_ep])
    try:
        fclient = get_rpc_client(fast_transport, Target(topic=topic + "_o"), timeout=WAIT)
        assert fclient.prepare(namespace="ns", version="1.2").call({}, "ns_method", x=2) == ["oslo", 4]
        with pytest.raises(fexc.RemoteError) as info:
            fclient.prepare(namespace="ns", version="1.4").call({}, "ns_method", x=2)
        assert info.value.exc_type == "UnsupportedVersion"
        with pytest.raises(fexc.RemoteError) as info:
            fclient.prepare(namespace="other", version="1.0").call({}, "ns_method", x=2)
        assert info.value.exc_type == "UnsupportedVersion"

        oclient = oslo_messaging.get_rpc_client(oslo_transport, oslo_messaging.Target(topic=topic + "_f"),
                                                timeout=WAIT)
        assert oclient.prepare(namespace="ns", version="1.3").call({}, "ns_method", x=5) == ["fast", 10]
        with pytest.raises(oslo_messaging.RemoteError) as info:
            oclient.prepare(namespace="ns", version="2.0").call({}, "ns_method", x=5)
        assert info.value.exc_type == "UnsupportedVersion"
    finally:
        stop(osrv, fsrv)


# ---- both kinds of server on one topic ----------------------------------------------------


def test_mixed_servers_on_one_topic(oslo_transport, fast_transport, topic):
    oslo_ep, fast_ep = Endpoint("oslo"), Endpoint("fast")
    # oslo declares first here; the reverse order is covered below
    osrv = start_oslo_server(oslo_transport, topic, "os1", [oslo_ep])
    fsrv = start_fast_server(fast_transport, topic, "fs1", [fast_ep])
    try:
        for client in (get_rpc_client(fast_transport, Target(topic=topic), timeout=WAIT),
                       oslo_messaging.get_rpc_client(oslo_transport, oslo_messaging.Target(topic=topic),
                                                     timeout=WAIT)):
            # the shared queue is consumed by both servers in turn
            answers = {client.call({}, "whoami") for _ in range(10)}
            assert answers == {"oslo", "fast"}
            assert client.prepare(server="os1").call({}, "whoami") == "oslo"
            assert client.prepare(server="fs1").call({}, "whoami") == "fast"
            client.prepare(fanout=True).cast({}, "note", value="all")
            for ep in (oslo_ep, fast_ep):
                while True:
                    item = ep.seen.get(timeout=WAIT)
                    if item[0] == "note":
                        assert item == ("note", "all")
                        break
    finally:
        stop(fsrv, osrv)


def test_fastrpc_declares_first_then_oslo(oslo_transport, fast_transport, topic):
    fast_ep, oslo_ep = Endpoint("fast"), Endpoint("oslo")
    fsrv = start_fast_server(fast_transport, topic, "fs1", [fast_ep])
    # would raise PRECONDITION_FAILED if any declare argument differed
    osrv = start_oslo_server(oslo_transport, topic, "os1", [oslo_ep])
    try:
        oclient = oslo_messaging.get_rpc_client(oslo_transport, oslo_messaging.Target(topic=topic), timeout=WAIT)
        assert oclient.prepare(server="os1").call({}, "whoami") == "oslo"
        assert oclient.prepare(server="fs1").call({}, "whoami") == "fast"
    finally:
        stop(fsrv, osrv)


# ---- call-monitor keepalives across implementations ------------------------------------


def test_call_monitor_heartbeats_both_ways(oslo_transport, fast_transport, topic):
    # oslo's servers send a heartbeat every call_monitor_timeout / 2 (and
    # refuse intervals under 1 s). 4 s: a heartbeat may come up to 2 s late
    # on a loaded machine; the call runs well past the monitor timeout.
    oslo_ep, fast_ep = Endpoint("oslo"), Endpoint("fast")
    osrv = start_oslo_server(oslo_transport, topic + "_o", "s", [oslo_ep])
    fsrv = start_fast_server(fast_transport, topic + "_f", "s", [fast_ep])
    try:
        fclient = get_rpc_client(fast_transport, Target(topic=topic + "_o"), timeout=WAIT,
                                 call_monitor_timeout=4)
        oclient = oslo_messaging.get_rpc_client(oslo_transport, oslo_messaging.Target(topic=topic + "_f"),
                                                timeout=WAIT, call_monitor_timeout=4)
        results = {}

        def run(name, client):
            results[name] = client.call({}, "slow", seconds=6.5)

        threads = [threading.Thread(target=run, args=("f2o", fclient)),
                   threading.Thread(target=run, args=("o2f", oclient))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT + 5)
        assert results == {"f2o": "finished", "o2f": "finished"}
    finally:
        stop(osrv, fsrv)
