"""What a call does when its request's fate is in doubt: the broker reset
the connection before confirming it, or refused it (basic.nack).

When the broker's side resets or closes the connection (its process was
killed, say), TCP tells whether the request ever reached it: a broker reads
only what its TCP acknowledged. A request none of whose bytes were
acknowledged is sent again on the next connection and the call returns; one
that was acknowledged may have run, so the call fails at once with
CallInterrupted. One private node, a TCP proxy between the caller and it
(the proxy's reset stands for the broker's), and a one-way firewall rule that
makes the caller's packets vanish, so the request is never acknowledged.
A request the broker nacks (it refused it without handing it to a queue) is
sent again, on a new channel.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest

from fastrpc.amqp.connection import Connection
from fastrpc.amqp.transport import PlainTransport
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.amqp import AmqpDriver
from fastrpc.exceptions import CallInterrupted
from fastrpc.options import Options
from fastrpc.target import Target
from fastrpc.testing.firewall import LoopbackFirewall
from fastrpc.transport import TransportURL

pytestmark = pytest.mark.twins

TIMEOUT = 10.0


def _driver(url: str) -> AmqpDriver:
    conf = Options(rabbit_retry_interval=0.05, rabbit_retry_backoff=0.05)
    return AmqpDriver(conf, TransportURL.parse(conf, url), "openstack", [])


def _wait(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class _Pair:
    """A server on the node and a client through ``proxy``; ``runs`` lists every request the server ran."""

    def __init__(self, broker: Any, proxy: Any, topic: str) -> None:
        self.topic = topic
        self.runs: list[int] = []
        self.server = _driver(broker.url)
        self.client = _driver(f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        listener = self.server.listen(Target(topic=topic, server="s1"))

        def handle(msg: Any) -> None:
            i = msg.message["args"]["i"]
            self.runs.append(i)
            msg.reply(i)

        listener.dispatch_inline(handle)

    def call(self, i: int) -> Any:
        return self.client.send(Target(topic=self.topic, server="s1"), {}, {"method": "m", "args": {"i": i}},
                                wait_for_reply=True, timeout=TIMEOUT)

    def call_in_thread(self, i: int, outcome: list[Any]) -> threading.Thread:
        def run() -> None:
            try:
                outcome.append(self.call(i))
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def close(self) -> None:
        self.client.cleanup()
        self.server.cleanup()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return f"unreceived_{request.node.name}"


def test_request_the_broker_never_got_is_sent_again(broker: Any, tcp_proxy_factory: Any, topic: str) -> None:
    proxy = tcp_proxy_factory("127.0.0.1", broker.port)
    pair = _Pair(broker, proxy, topic)
    try:
        assert pair.call(0) == 0
        conn = pair.client.sending_connection
        assert conn is not None
        position = conn.stream_position()
        with LoopbackFirewall() as firewall:
            # The caller's packets on this connection vanish; the proxy's still arrive.
            firewall.block([proxy.connections[0].client_address[1]], direction="from")
            outcome: list[Any] = []
            started = time.monotonic()
            caller = pair.call_in_thread(1, outcome)
            _wait(lambda: conn.stream_position() > position, "the request to be written")
            proxy.connections[0].reset()
            caller.join(TIMEOUT + 2)
        assert outcome == [1]
        assert pair.runs == [0, 1]
        assert time.monotonic() - started < TIMEOUT
        assert conn.lost_acked is not None and conn.lost_acked <= position
    finally:
        pair.close()


def test_request_the_broker_acknowledged_fails_at_once(broker: Any, tcp_proxy_factory: Any, topic: str) -> None:
    """The proxy takes the request (its TCP acknowledges it) but passes
    nothing on; then it resets. Whether the broker ran the request cannot be
    told from the caller's side, so the call fails at once, and is not run
    twice."""
    proxy = tcp_proxy_factory("127.0.0.1", broker.port)
    pair = _Pair(broker, proxy, topic)
    try:
        assert pair.call(0) == 0
        conn = pair.client.sending_connection
        assert conn is not None
        transport = conn._transport
        assert isinstance(transport, PlainTransport)
        proxy.connections[0].blackhole()
        position = conn.stream_position()
        outcome: list[Any] = []
        started = time.monotonic()
        caller = pair.call_in_thread(1, outcome)
        _wait(lambda: conn.stream_position() > position and (transport.acked() or 0) >= conn.stream_position(),
              "the request to be acknowledged")
        proxy.connections[0].reset()
        caller.join(TIMEOUT + 2)
        assert len(outcome) == 1 and isinstance(outcome[0], CallInterrupted), outcome
        assert time.monotonic() - started < TIMEOUT / 2
        assert pair.runs == [0]
        assert pair.call(2) == 2  # and the next call goes through
    finally:
        pair.close()


def test_transport_counts_what_it_sent_and_what_the_peer_acknowledged() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.create_connection(listening.getsockname())
        peer, _ = listening.accept()
        with client, peer:
            transport = PlainTransport(client)
            assert transport.sent == 0
            assert transport.acked() == 0
            transport.sendall(b"x" * 1000)
            transport.sendall(b"y" * 200_000)  # in pieces
            assert transport.sent == 201_000
            received = 0
            deadline = time.monotonic() + TIMEOUT
            while received < 201_000 and time.monotonic() < deadline:
                received += len(peer.recv(65536))
            assert received == 201_000
            _wait(lambda: transport.acked() == 201_000, "the peer's acknowledgement")


def test_request_the_broker_nacks_is_sent_again_on_a_new_channel(broker: Any, topic: str) -> None:
    """The only queue bound for the topic refuses every message
    (``x-overflow: reject-publish`` at length 0), so the broker nacks the
    request: the caller sends it again, on a new channel each time, until a
    queue takes it; the server that comes up then runs it once."""
    client, server = _driver(broker.url), _driver(broker.url)
    admin = Connection(ConnectionParams(host=broker.host, port=broker.port)).connect()
    try:
        ch = admin.channel()
        ch.exchange_declare("openstack", "topic", durable=False, auto_delete=False)
        rejecting = f"{topic}.rejecting"
        ch.queue_declare(rejecting, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        # A cast opens the publishing channel; sent before the rejecting queue
        # is bound, so no nack replaces the channel before it is noted.
        assert client.send(Target(topic=topic), {}, {"method": "m", "args": {}}) is None
        first = client._sender.pub_ch
        assert first is not None
        ch.queue_bind(rejecting, "openstack", topic)
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": 5}},
                                           wait_for_reply=True, timeout=TIMEOUT))
            except Exception as exc:
                outcome.append(exc)

        runs: list[int] = []
        caller = threading.Thread(target=call)
        caller.start()
        _wait(lambda: client._sender.pub_ch is not first, "the nacked request to be sent again")
        # Unbound, not deleted: a request on its way to a queue being deleted is lost without a word.
        ch.queue_unbind(rejecting, "openstack", topic)
        listener = server.listen(Target(topic=topic))
        listener.dispatch_inline(lambda msg: (runs.append(msg.message["args"]["i"]), msg.reply(msg.message["args"]["i"])))
        caller.join(TIMEOUT + 2)
        assert outcome == [5]
        assert runs == [5]
        ch.queue_delete(rejecting)
    finally:
        admin.close()
        client.cleanup()
        server.cleanup()


def test_at_least_once_cast_the_broker_nacks_is_sent_again_on_a_new_channel(
        broker: Any, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    """An at-least-once cast refused by the broker is published again on a
    new confirm channel, until a queue takes it (once)."""
    client = _driver(broker.url)
    admin = Connection(ConnectionParams(host=broker.host, port=broker.port)).connect()
    try:
        ch = admin.channel()
        ch.exchange_declare("openstack", "topic", durable=False, auto_delete=False)
        rejecting, taking = f"{topic}.rejecting", f"{topic}.taking"
        ch.queue_declare(rejecting, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        ch.queue_bind(rejecting, "openstack", topic)
        ch.queue_declare(taking)
        outcome: list[Any] = []

        def cast() -> None:
            try:
                outcome.append(client.send(Target(topic=topic), {}, {"method": "m", "args": {}}, at_least_once=True))
            except Exception as exc:
                outcome.append(exc)

        caplog.set_level(logging.DEBUG, logger="fastrpc.drivers.amqp")
        caster = threading.Thread(target=cast)
        caster.start()
        _wait(lambda: any("refused by the broker" in r.getMessage() for r in caplog.records),
              "the refused cast to be sent again")
        ch.queue_bind(taking, "openstack", topic)
        ch.queue_unbind(rejecting, "openstack", topic)
        caster.join(TIMEOUT + 2)
        assert outcome == [None]
        assert ch.queue_declare(taking, passive=True)[1] == 1
        ch.queue_delete(rejecting)
        ch.queue_delete(taking)
    finally:
        admin.close()
        client.cleanup()
