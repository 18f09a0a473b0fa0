"""TransportOptions(at_least_once=True): a request no queue takes raises
MessageUndeliverable at once instead of timing out (calls) or vanishing
(casts), on fastrpc's API over a real broker and in memory, and on
oslo.messaging's API with fastrpc:// as with oslo's own rabbit driver."""

from __future__ import annotations

import queue
import time
import uuid

import oslo_messaging
import pytest
from test_oslo_driver import oslo_transport
from test_oslo_interop import Endpoint, stop

import fastrpc
from fastrpc import MessageUndeliverable, Target, TransportOptions

pytestmark = pytest.mark.twins

WAIT = 10.0
LONG = 30.0  # a call's timeout: MessageUndeliverable must come well before it


class Echo:
    def __init__(self) -> None:
        self.casts: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo(self, ctxt: dict, x: int) -> int:
        return x

    def note(self, ctxt: dict, x: int) -> None:
        self.casts.put(x)


@pytest.fixture
def topic() -> str:
    return "alo_" + uuid.uuid4().hex[:12]


@pytest.fixture(params=["amqp", "memory"])
def transport(request, broker):
    url = broker.url.replace("amqp://", "rabbit://") if request.param == "amqp" else "memory://"
    t = fastrpc.get_rpc_transport(url=url)
    yield t
    t.cleanup()


def test_requests_nobody_takes_raise_at_once(transport, topic):
    client = fastrpc.get_rpc_client(transport, Target(topic=topic), timeout=LONG,
                                    transport_options=TransportOptions(at_least_once=True))
    for send in (lambda c: c.call({}, "echo", x=1),
                 lambda c: c.cast({}, "note", x=1),
                 lambda c: c.prepare(fanout=True).cast({}, "note", x=1),
                 lambda c: c.prepare(server="nobody").call({}, "echo", x=1)):
        started = time.monotonic()
        with pytest.raises(MessageUndeliverable) as info:
            send(client)
        assert time.monotonic() - started < LONG / 3
        assert info.value.message["method"] in ("echo", "note")
    # Without the option a cast to nowhere is accepted (and dropped by the broker).
    fastrpc.get_rpc_client(transport, Target(topic=topic)).cast({}, "note", x=2)


def test_requests_that_reach_a_server_go_through(transport, topic):
    endpoint = Echo()
    server = fastrpc.get_rpc_server(transport, Target(topic=topic, server="s1"), [endpoint])
    server.start()
    try:
        client = fastrpc.get_rpc_client(transport, Target(topic=topic), timeout=WAIT,
                                        transport_options=TransportOptions(at_least_once=True))
        assert client.call({}, "echo", x=7) == 7
        assert client.prepare(server="s1").call({}, "echo", x=8) == 8
        client.cast({}, "note", x=9)
        client.prepare(fanout=True).cast({}, "note", x=10)
        assert sorted(endpoint.casts.get(timeout=WAIT) for _ in range(2)) == [9, 10]
        # prepare() keeps the option, and can turn it off.
        assert client.prepare(timeout=WAIT).transport_options is client.transport_options
        assert client.prepare(transport_options=None).transport_options is None
    finally:
        server.stop()
        server.wait()


@pytest.mark.parametrize("scheme", ["rabbit", "fastrpc"])
def test_oslo_clients_get_oslos_exception_on_either_driver(broker, topic, scheme):
    transport = oslo_transport(broker, scheme)
    try:
        options = oslo_messaging.TransportOptions(at_least_once=True)
        client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=LONG,
                                               transport_options=options)
        started = time.monotonic()
        with pytest.raises(oslo_messaging.MessageUndeliverable):
            client.call({}, "whoami")
        assert time.monotonic() - started < LONG / 3
        server = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=topic, server="s1"),
                                               [Endpoint("s1")])
        server.start()
        try:
            assert client.prepare(timeout=WAIT).call({}, "whoami") == "s1"
        finally:
            stop(server)
    finally:
        transport.cleanup()
