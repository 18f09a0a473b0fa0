"""OpenTelemetry traces (fastrpc.tracing) with the real SDK and its
in-memory exporter, on the private broker: a call's client and server spans
join one trace through the message, casts and fanout casts, failures,
a peer's unreadable trace context, and nothing at all while tracing is off.
(oslo.messaging peers with tracing on: tests/test_oslo_interop.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from endpoints import in_memory_tracing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fastrpc import MessagingTimeout, Target, get_rpc_client, get_rpc_server, get_rpc_transport, tracing
from fastrpc.amqp.connection import Connection
from fastrpc.drivers.topology import publish_properties
from fastrpc.envelope import encode_request

WAIT = 10.0


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into an in-memory exporter of the real SDK."""
    with in_memory_tracing() as exporter:
        yield exporter


def finished(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The first ``count`` spans ended (a server's span ends after its reply went out)."""
    wait_for(lambda: len(exporter.get_finished_spans()) >= count, f"{count} spans")
    return list(exporter.get_finished_spans())


def one(found: list[ReadableSpan], kind: SpanKind, **attributes: Any) -> ReadableSpan:
    matching = [s for s in found if s.kind == kind
                and all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(matching) == 1, [(s.name, s.kind, dict(s.attributes)) for s in found]
    return matching[0]


class Endpoint:
    def __init__(self) -> None:
        self.current: list[trace.SpanContext] = []
        self.noted = threading.Event()
        self.release = threading.Event()
        self.client: Any = None

    def echo(self, ctxt: dict, value: Any) -> Any:
        self.current.append(trace.get_current_span().get_span_context())
        return value

    def note(self, ctxt: dict, value: Any) -> None:
        self.noted.set()

    def fail(self, ctxt: dict) -> None:
        raise ValueError("refused")

    def hold(self, ctxt: dict) -> None:
        self.release.wait(WAIT)

    def relay(self, ctxt: dict, value: Any) -> Any:
        return self.client.call(ctxt, "echo", value=value)


class Service:
    def __init__(self, url: str, topic: str) -> None:
        self.endpoint = Endpoint()
        self.transport = get_rpc_transport(url=url)
        self.server = get_rpc_server(self.transport, Target(topic=topic, server="s1"), [self.endpoint],
                                     executor="threading")
        self.server.start()
        self.client = get_rpc_client(self.transport, Target(topic=topic), timeout=WAIT)
        self.endpoint.client = self.client

    def close(self) -> None:
        self.endpoint.release.set()
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return "tracing_" + request.node.name[:60]


@pytest.fixture
def service(broker: Any, topic: str) -> Iterator[Service]:
    svc = Service(broker.url, topic)
    yield svc
    svc.close()


def test_a_call_joins_one_trace_from_client_to_server(service: Service, topic: str,
                                                      spans: InMemorySpanExporter) -> None:
    assert service.client.call({}, "echo", value=1) == 1
    found = finished(spans, 2)
    send = one(found, SpanKind.PRODUCER)
    process = one(found, SpanKind.CONSUMER)
    assert send.name == process.name.replace("process", "send") == "send openstack"
    assert send.context.trace_id == process.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.parent.is_remote  # it came in the message
    conversation = send.attributes["messaging.message.conversation_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", conversation)
    common = {"messaging.system": "rabbitmq", "messaging.destination.name": "openstack",
              "messaging.rabbitmq.destination.routing_key": topic, "rpc.method": "echo",
              "messaging.message.conversation_id": conversation}
    assert dict(send.attributes) == {**common, "messaging.operation.type": "send",
                                     "messaging.operation.name": "send"}
    assert dict(process.attributes) == {**common, "messaging.operation.type": "process",
                                        "messaging.operation.name": "process"}
    assert send.status.status_code == process.status.status_code == StatusCode.UNSET
    # The server's span is the current one while the endpoint runs.
    assert service.endpoint.current == [process.context]
    # A server-targeted call names its routing key.
    spans.clear()
    assert service.client.prepare(server="s1").call({}, "echo", value=2) == 2
    found = finished(spans, 2)
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
        assert one(found, kind).attributes["messaging.rabbitmq.destination.routing_key"] == f"{topic}.s1"


def test_calls_an_endpoint_makes_join_its_trace(service: Service, spans: InMemorySpanExporter) -> None:
    assert service.client.call({}, "relay", value=5) == 5
    found = finished(spans, 4)
    outer_send = one(found, SpanKind.PRODUCER, **{"rpc.method": "relay"})
    outer_process = one(found, SpanKind.CONSUMER, **{"rpc.method": "relay"})
    inner_send = one(found, SpanKind.PRODUCER, **{"rpc.method": "echo"})
    inner_process = one(found, SpanKind.CONSUMER, **{"rpc.method": "echo"})
    assert {s.context.trace_id for s in found} == {outer_send.context.trace_id}
    assert outer_process.parent.span_id == outer_send.context.span_id
    assert inner_send.parent.span_id == outer_process.context.span_id  # made while the endpoint ran
    assert inner_process.parent.span_id == inner_send.context.span_id


def test_casts_and_fanout_casts(service: Service, topic: str, spans: InMemorySpanExporter) -> None:
    service.client.cast({}, "note", value=1)
    found = finished(spans, 2)
    send, process = one(found, SpanKind.PRODUCER), one(found, SpanKind.CONSUMER)
    assert process.parent.span_id == send.context.span_id and process.context.trace_id == send.context.trace_id
    for span in (send, process):
        assert "messaging.message.conversation_id" not in span.attributes
        assert span.attributes["rpc.method"] == "note"
    spans.clear()
    service.client.prepare(fanout=True).cast({}, "note", value=2)
    found = finished(spans, 2)
    send, process = one(found, SpanKind.PRODUCER), one(found, SpanKind.CONSUMER)
    assert send.name == f"send {topic}_fanout" and process.name == f"process {topic}_fanout"
    assert process.parent.span_id == send.context.span_id
    for span in (send, process):
        assert span.attributes["messaging.destination.name"] == f"{topic}_fanout"
        assert span.attributes["messaging.rabbitmq.destination.routing_key"] == topic


def test_failures_set_error_type(service: Service, spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="refused"):
        service.client.call({}, "fail")
    found = finished(spans, 2)
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
        span = one(found, kind)
        assert span.attributes["error.type"] == "ValueError"
        assert span.status.status_code == StatusCode.ERROR
    spans.clear()
    with pytest.raises(MessagingTimeout):
        service.client.prepare(timeout=0.3).call({}, "hold")
    send = one(finished(spans, 1), SpanKind.PRODUCER)
    assert send.attributes["error.type"] == "fastrpc.exceptions.MessagingTimeout"
    assert send.status.status_code == StatusCode.ERROR


def test_the_context_travels_in_the_message(broker: Any, topic: str, spans: InMemorySpanExporter) -> None:
    transport = get_rpc_transport(url=broker.url)
    try:
        listener = transport._listen(Target(topic=topic, server="s1"))
        get_rpc_client(transport, Target(topic=topic)).cast({}, "note", value=1)
        (msg,) = listener.poll(timeout=WAIT)
        send = one(finished(spans, 1), SpanKind.PRODUCER)
        ctx = send.context
        assert ctx.trace_flags.sampled
        assert msg.message[tracing.CARRIER_KEY] == {
            "traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"}
        listener.cleanup()
    finally:
        transport.cleanup()


def test_an_unreadable_trace_context_still_runs_the_request(broker: Any, service: Service, topic: str,
                                                            spans: InMemorySpanExporter) -> None:
    conn = Connection(broker.url)
    conn.connect()
    try:
        body = encode_request({"method": "note", "args": {"value": 1}, tracing.CARRIER_KEY: {"traceparent": 5}},
                              {}, "u1")
        conn.channel().basic_publish("openstack", topic, body, publish_properties("application/json"))
    finally:
        conn.close()
    assert service.endpoint.noted.wait(WAIT)
    process = one(finished(spans, 1), SpanKind.CONSUMER)
    assert process.parent is None and process.attributes["rpc.method"] == "note"


def test_nothing_is_traced_or_carried_while_off(broker: Any, topic: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(tracer_provider=provider)
    tracing.disable()
    transport = get_rpc_transport(url=broker.url)
    try:
        listener = transport._listen(Target(topic=topic, server="s1"))
        get_rpc_client(transport, Target(topic=topic)).cast({}, "note", value=1)
        (msg,) = listener.poll(timeout=WAIT)
        assert tracing.CARRIER_KEY not in msg.message
        listener.cleanup()
    finally:
        transport.cleanup()
        provider.shutdown()
    assert exporter.get_finished_spans() == ()


def test_without_opentelemetry_fastrpc_runs_and_enable_says_what_to_install() -> None:
    code = """
import sys
import fastrpc, fastrpc.server, fastrpc.drivers.amqp, fastrpc.tracing
assert not any(name.startswith("opentelemetry") for name in sys.modules), "imported without being asked"
sys.modules["opentelemetry"] = None  # as if it were not installed
try:
    fastrpc.tracing.enable()
except fastrpc.ConfigurationError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tracing needs opentelemetry-api (pip install 'fastrpc[otel]')" in done.stdout


def test_the_tracing_option_turns_it_on(broker: Any) -> None:
    assert not tracing.enabled()
    get_rpc_transport(url=f"{broker.url}?tracing=true").cleanup()
    try:
        assert tracing.enabled()
    finally:
        tracing.disable()
