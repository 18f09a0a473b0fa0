"""Who reads the reply connection: a waiting caller reads its own reply while
nobody else reads; the baton is handed on so that every waiter is served; the
reader thread steps in for everything else (method replies, close-ok,
heartbeat silence)."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from fastrpc.amqp import connection as connection_mod
from fastrpc.amqp import connection_core
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.sync import Mailbox
from fastrpc.drivers.amqp import AmqpDriver
from fastrpc.exceptions import MessagingTimeout
from fastrpc.options import Options
from fastrpc.target import Target
from fastrpc.testing.node import RabbitNode
from fastrpc.transport import TransportURL

pytestmark = pytest.mark.twins

WAIT = 10.0


def make_driver(url: str, **options) -> AmqpDriver:
    conf = Options(**options)
    return AmqpDriver(conf, TransportURL.parse(conf, url), "openstack", [])


class EchoServer:
    """A listener answered inline in its reader thread (no worker threads)."""

    def __init__(self, driver: AmqpDriver, topic: str) -> None:
        self.listener = driver.listen(Target(topic=topic, server="s1"))
        self.listener.dispatch_inline(lambda msg: msg.reply(msg.message["args"]))

    def close(self) -> None:
        self.listener.cleanup()


@pytest.fixture
def topic(request):
    return "baton_" + request.node.name[:50]


@pytest.fixture
def pair(broker, topic):
    server, client = make_driver(broker.url), make_driver(broker.url)
    echo = EchoServer(server, topic)
    yield client
    client.cleanup()
    echo.close()
    server.cleanup()


def record_reply_threads(client: AmqpDriver) -> list[int]:
    """Thread idents that ran the reply callback, in order."""
    seen: list[int] = []
    replies = client._replies
    original = replies._on_reply

    def on_reply(delivery):
        seen.append(threading.get_ident())
        original(delivery)

    # The consumer callback was bound at basic_consume time: re-point it
    # there (the compiled Replies' own methods cannot be replaced).
    ch = replies.ch
    for tag in list(ch._consumers):
        ch._consumers[tag] = on_reply
    return seen


def call(client: AmqpDriver, topic: str, i: int, timeout: float = WAIT):
    return client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": i}}, wait_for_reply=True,
                       timeout=timeout)


def test_sequential_caller_reads_its_own_replies(pair, topic):
    client = pair
    assert call(client, topic, -1) == {"i": -1}  # reply queue and consumer exist now
    seen = record_reply_threads(client)
    me = threading.get_ident()
    for i in range(200):
        assert call(client, topic, i) == {"i": i}
    assert len(seen) == 200
    # The reader thread may take the first reply or two (it sat in recv
    # when the calls began); after that it stands aside.
    assert seen[5:].count(me) == len(seen) - 5, f"{seen.count(me)} of {len(seen)} read by the caller"
    assert client.waiting_calls == {}


def test_a_lone_callers_confirm_is_read_with_its_reply(pair, topic):
    """The broker's confirm of a request comes before its reply: a lone
    caller's recv waits for the reply (the socket's low-water mark) and
    reads both at once, instead of waking for each. A read shorter than the
    mark (the confirm alone) comes only once the lone slice passed."""
    client = pair
    call(client, topic, -1)
    conn = client.sending_connection
    assert conn is not None
    transport = conn._transport
    reads: list[tuple[int, float]] = []  # (bytes, seconds in recv)
    original = transport.recv

    def timed_recv():
        t0 = time.monotonic()
        data = original()
        if data:
            reads.append((len(data), time.monotonic() - t0))
        return data

    transport.recv = timed_recv  # an instance attribute: the connection reads through it
    calls = 200
    for i in range(calls):
        assert call(client, topic, i) == {"i": i}
    assert len(reads) >= calls
    short = [seconds for nbytes, seconds in reads if nbytes < connection_core.LONE_RECV_LOWAT]
    assert all(seconds >= connection_core.LONE_RECV_SLICE * 0.9 for seconds in short), \
        f"{len(short)} reads shorter than the mark, the quickest after {min(short):.4f}s"
    # Every confirm was read all the same: nothing is left unconfirmed.
    pub = client._sender.pub_ch
    assert pub is not None and pub.confirmed(pub._next_tag - 1)
    assert not pub._pending


def test_small_frames_for_others_are_read_while_a_lone_caller_waits(broker, topic):
    """A frame shorter than the low-water mark (channel.open-ok, 16 bytes)
    for another thread is read within the lone slice, not when the lone
    caller's reply comes."""
    server, client = make_driver(broker.url), make_driver(broker.url)
    started, release = threading.Event(), threading.Event()
    listener = server.listen(Target(topic=topic, server="s1"))

    def held(msg):
        if msg.message["args"].get("hold"):
            started.set()
            release.wait(WAIT)
        msg.reply(msg.message["args"])

    listener.dispatch_inline(held)
    results: list = []
    try:
        call(client, topic, -1)
        caller = threading.Thread(target=lambda: results.append(
            client.send(Target(topic=topic), {}, {"method": "m", "args": {"hold": 1}}, wait_for_reply=True,
                        timeout=WAIT * 2)))
        caller.start()
        assert started.wait(WAIT), "the held call never reached its server"
        conn = client.sending_connection
        t0 = time.monotonic()
        ch = conn.channel()
        opened = time.monotonic() - t0
        assert client.waiting_calls, "the held call ended before the channel opened"
        assert opened < connection_core.WAITER_RECV_SLICE, f"channel.open-ok read after {opened:.2f}s"
        ch.close()
        release.set()
        caller.join(WAIT)
        assert results == [{"hold": 1}]
    finally:
        release.set()
        client.cleanup()
        listener.cleanup()
        server.cleanup()


def test_concurrent_callers_are_all_served_then_the_caller_reads_again(pair, topic):
    client = pair
    call(client, topic, -1)
    seen = record_reply_threads(client)
    errors: list[BaseException] = []
    slowest = [0.0]

    def caller(base: int) -> None:
        try:
            for j in range(60):
                t0 = time.monotonic()
                assert call(client, topic, base + j) == {"i": base + j}
                slowest[0] = max(slowest[0], time.monotonic() - t0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k * 1000,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert len(seen) == 16 * 60
    assert slowest[0] < WAIT
    assert client.waiting_calls == {}

    # Waits overlapped, so the reader thread read for everyone; once they
    # are one at a time again, the caller reads its own replies again.
    del seen[:]
    me = threading.get_ident()
    deadline = time.monotonic() + WAIT
    while True:
        assert time.monotonic() < deadline, f"the caller never read again ({len(seen)} calls)"
        call(client, topic, 0)
        if len(seen) >= 20 and seen[-20:].count(me) == 20:
            break


def test_timeout_while_the_caller_reads(pair, topic):
    client = pair
    call(client, topic, -1)
    t0 = time.monotonic()
    with pytest.raises(MessagingTimeout):
        client.send(Target(topic=topic + "_nobody"), {}, {"method": "m", "args": {}}, wait_for_reply=True,
                    timeout=0.3)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 2.0
    # The connection still works and the caller reads again.
    assert call(client, topic, 7) == {"i": 7}


def test_method_replies_are_read_while_the_reader_thread_stands_aside(pair, topic):
    client = pair
    for i in range(20):
        call(client, topic, i)
    conn = client.sending_connection
    assert conn is not None
    # Calls just happened, so the reader thread stands aside; a declare on
    # another channel must still get its declare-ok promptly.
    ch = conn.channel()
    t0 = time.monotonic()
    for _ in range(5):
        ch.queue_declare("", exclusive=True)
    assert time.monotonic() - t0 < 5 * connection_mod.READER_STEP_ASIDE + 2.0
    ch.close()
    # And close() gets its close-ok read (bounded, clean).
    t0 = time.monotonic()
    conn.close(timeout=5)
    assert time.monotonic() - t0 < 2.0
    assert conn.closed_reason is not None and "closed by client" in str(conn.closed_reason)


def test_wait_for_reads_in_the_calling_thread(broker):
    conn = Connection(broker.url)
    conn.connect()
    try:
        ch = conn.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        mailbox: Mailbox = Mailbox()
        readers: list[int] = []

        def on_message(delivery):
            readers.append(threading.get_ident())
            mailbox.put(bytes(delivery.body))

        ch.basic_consume(qname, on_message, no_ack=True)
        for i in range(50):
            ch.basic_publish("", qname, b"m%d" % i)
            assert conn.wait_for(mailbox, WAIT) == b"m%d" % i
        conn.done_waiting(mailbox)
        assert readers[5:].count(threading.get_ident()) == len(readers) - 5
        with pytest.raises(queue.Empty):
            conn.wait_for(mailbox, 0.2)
    finally:
        conn.close()


def test_heartbeat_silence_detected_while_a_caller_reads(private_node: RabbitNode):
    """A waiting caller's recv times out again and again; the silence adds up."""
    interval = 2
    server = make_driver(private_node.url)
    # Probes off: heartbeats alone are what this test is about.
    client = make_driver(private_node.url, heartbeat_timeout_threshold=interval, probe_after=0)
    echo = EchoServer(server, "baton_hb")
    try:
        assert call(client, "baton_hb", 1) == {"i": 1}
        conn = client.sending_connection
        assert conn is not None
        died: queue.SimpleQueue = queue.SimpleQueue()
        conn.on_close.append(lambda c, exc: died.put((time.monotonic(), exc)))
        # A queue for the topic that nobody consumes: the request is routed
        # and confirmed (not returned), so the call just waits.
        nobody = conn.channel()
        nobody.queue_declare("baton_hb_nobody", exclusive=True)
        nobody.queue_bind("baton_hb_nobody", "openstack", "baton_hb_nobody")
        outcome: queue.SimpleQueue = queue.SimpleQueue()

        def waiting_call() -> None:
            try:
                # Nobody serves this topic: the caller reads until its deadline.
                client.send(Target(topic="baton_hb_nobody"), {}, {"method": "m", "args": {}},
                            wait_for_reply=True, timeout=6 * interval, retry=0)
                outcome.put(None)
            except BaseException as exc:
                outcome.put(exc)

        threading.Thread(target=waiting_call, daemon=True).start()
        # The call is published, the broker confirmed it, and its caller
        # waits in recv (no event to wait on for that: poll, bounded). The
        # confirm can come after the caller began to wait: freezing the node
        # before it would make the request unconfirmed (CallInterrupted).
        deadline = time.monotonic() + WAIT
        while not (client.waiting_calls and conn._recv_since is not None and conn.pending_confirms == 0):
            assert time.monotonic() < deadline, "the call never started waiting"
            time.sleep(0.01)
        private_node.pause()
        paused_at = time.monotonic()
        try:
            died_at, exc = died.get(timeout=2 * interval + WAIT)
        finally:
            private_node.resume()
        assert died_at - paused_at <= interval + 1.5, exc
        assert "heartbeat" in str(exc) or "no data" in str(exc)
        # The broker confirmed the request (queued, unconsumed) before it froze:
        # the call waits for a reply that never comes, until its timeout.
        assert isinstance(outcome.get(timeout=6 * interval + WAIT), MessagingTimeout)
    finally:
        client.cleanup()
        echo.close()
        server.cleanup()


def test_calls_over_tls_are_read_by_the_caller(tls_broker):
    """TLS: the caller's recv with a receive timeout, then the decryption, in the calling thread."""
    server = make_driver(tls_broker.url)  # plain AMQP port of the same node
    url = f"rabbit://guest:guest@localhost:{tls_broker.tls_port}/"
    client = make_driver(url, ssl=True, ssl_ca_file=tls_broker.ca_file)
    echo = EchoServer(server, "baton_tls")
    try:
        assert client.params[0].ssl
        assert call(client, "baton_tls", -1) == {"i": -1}
        seen = record_reply_threads(client)
        me = threading.get_ident()
        for i in range(50):
            assert call(client, "baton_tls", i) == {"i": i}
        assert seen[5:].count(me) == len(seen) - 5
        with pytest.raises(MessagingTimeout):
            client.send(Target(topic="baton_tls_nobody"), {}, {"method": "m", "args": {}}, wait_for_reply=True,
                        timeout=0.3)
        assert call(client, "baton_tls", 51) == {"i": 51}
    finally:
        client.cleanup()
        echo.close()
        server.cleanup()
