"""Stalled sends, close races, heartbeat negotiation and TLS resets, against a
scripted loopback peer (see fake_peer.Peer)."""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_peer import WAIT, Peer, barrier, connect, open_channel, run_in_thread, select_confirms

from fastrpc.amqp import connection as connection_module
from fastrpc.amqp.channel import Channel
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import (
    AMQPError,
    ChannelClosed,
    ConnectionClosed,
    ConnectionLost,
    HeartbeatTimeout,
)

pytestmark = pytest.mark.twins

BIG = b"z" * (1 << 20)
# Far more than the socket buffers of both ends can hold, even after the
# kernel compacts the peer's receive queue (which lets a stalled send move a
# little now and then).
HUGE = b"z" * (48 << 20)


def flood(ch: Channel, body: bytes = BIG, count: int = 500, name: str | None = None) -> queue.Queue[BaseException | None]:
    """Publish ``count`` messages from a thread (called ``name``) until a send
    fails; the queue gets the error, or None once all went out."""
    out: queue.Queue[BaseException | None] = queue.Queue()

    def run() -> None:
        try:
            for _ in range(count):
                ch.basic_publish("", "q", body)
        except BaseException as exc:
            out.put(exc)
        else:
            out.put(None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return out


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until it holds (bounded by WAIT; ``what`` names it on failure)."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def wait_send_stuck(conn: Connection, peer: Peer | None = None, stuck_for: float = 0.2) -> None:
    """Wait until a send has made no progress for ``stuck_for`` seconds.

    The kernel offers no event for "socket buffers full", so this polls (bounded).
    With ``peer`` given, the peer keeps sending heartbeats meanwhile so the
    client's receive-silence check stays quiet.
    """
    transport = conn._transport
    assert transport is not None
    deadline = time.monotonic() + WAIT
    while True:
        since = transport.send_since
        if since is not None and time.monotonic() - since >= stuck_for:
            return
        assert time.monotonic() < deadline, "the publisher never got stuck"
        if peer is not None:
            peer.writer.heartbeat()
            peer.flush()
        time.sleep(0.05)


def test_stuck_send_fails_connection_while_reader_waits_behind_it(peer: Peer, monkeypatch: Any) -> None:
    """A publisher blocks in sendall (the broker stopped reading, but still
    sends), the reader queues an ack behind that write and waits for it
    (here because any queued byte is too many): the connection must end
    instead of a permanent hang (the send timeout set from the heartbeat, or
    the heartbeat timer's check of the send, whichever comes first)."""
    monkeypatch.setattr(connection_module, "OUT_LIMIT", 0)
    # 2 s: the delivery below must arrive well before the 4 s limit even on a
    # loaded machine.
    _, shaken = run_in_thread(lambda: peer.handshake(heartbeat=2))
    conn = Connection(f"amqp://u:p@127.0.0.1:{peer.port}/", heartbeat=2)
    conn.connect()
    assert shaken.get(timeout=WAIT)[0] == "ok"
    assert conn.heartbeat == 2
    ch, cid = open_channel(conn, peer)
    acked: queue.Queue[tuple[bool, BaseException | None]] = queue.Queue()

    def on_message(delivery: Any) -> None:
        writing = conn._flushing
        try:
            ch.basic_ack(delivery.delivery_tag)
        except BaseException as exc:
            acked.put((writing, exc))
        else:
            acked.put((writing, None))

    _, consuming = run_in_thread(lambda: ch.basic_consume("q", on_message, consumer_tag="t"))
    peer.expect("basic.consume")
    peer.send_method(cid, "basic.consume-ok", consumer_tag="t")
    assert consuming.get(timeout=WAIT) == ("ok", "t")
    closed: queue.Queue[BaseException] = queue.Queue()
    conn.on_close.append(lambda c, exc: closed.put(exc))

    # One publish that can never finish keeps its thread writing throughout.
    publisher = flood(ch, HUGE, 1)
    wait_send_stuck(conn, peer)
    peer.writer.content(cid, "basic.deliver", {"consumer_tag": "t", "delivery_tag": 1, "exchange": "",
                                               "routing_key": "q"}, {}, b"x")
    peer.flush()
    # From now on the peer is silent and never reads.
    exc = closed.get(timeout=WAIT)
    assert isinstance(exc, HeartbeatTimeout), exc
    assert "made no progress" in str(exc)
    writing, ack_error = acked.get(timeout=WAIT)
    assert writing, "the publisher was not writing when the ack was sent"
    assert isinstance(ack_error, ConnectionLost), ack_error
    assert isinstance(publisher.get(timeout=WAIT), ConnectionLost)
    assert not conn.is_open


def _counting_writes(conn: Connection) -> list[tuple[str, int]]:
    """Record (thread name, size) of every write of ``conn`` from now on."""
    transport = conn._transport
    assert transport is not None
    writes: list[tuple[str, int]] = []
    real_sendall = transport.sendall
    real_send_now = transport.send_now

    def sendall(data: bytes | bytearray | memoryview) -> None:
        writes.append((threading.current_thread().name, len(data)))
        real_sendall(data)

    def send_now(data: bytes | bytearray | memoryview) -> int:
        n = real_send_now(data)
        if n:
            writes.append((threading.current_thread().name, n))
        return n

    transport.sendall = sendall  # type: ignore[method-assign]
    transport.send_now = send_now  # type: ignore[method-assign]
    return writes


def _wait_queued(conn: Connection, count: int) -> list[bytes]:
    """Until ``count`` sends are queued behind the write in progress (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        with conn.send_lock:
            if len(conn._out) == count:
                return list(conn._out)
        assert time.monotonic() < deadline, f"{len(conn._out)} sends queued, not {count}"
        time.sleep(0.01)


def test_small_publishes_into_full_socket_buffers_arrive_whole_and_in_order(peer: Peer) -> None:
    """Small writes go straight to the socket while it has room; once the
    buffers are full (the peer does not read) a write is taken in part or
    not at all, and the rest waits in a blocking send: every frame still
    arrives whole and in order once the peer reads."""
    conn, _ = connect(peer, heartbeat=0)
    ch, _ = open_channel(conn, peer)
    writes = _counting_writes(conn)
    pad = b"p" * 1000
    count = 40_000  # 40 MB: far more than both ends' socket buffers hold
    done = flood_numbered(ch, pad, count)
    wait_send_stuck(conn)
    assert done.empty(), "every publish fitted in the socket buffers"
    threads = {name for name, _ in writes}
    assert threads == {"numbered"}, threads
    for i in range(count):
        event = peer.next_event()
        assert event.name == "basic.publish" and event.body == b"%d:" % i + pad, (i, event.body[:20])
    assert done.get(timeout=WAIT) is None
    assert not conn._flushing and not conn._out


def _counting_direct_sends(conn: Connection) -> list[str]:
    """The thread name of every write of ``conn`` that went straight to the
    socket (send_now taking it whole) from now on."""
    transport = conn._transport
    assert transport is not None
    direct: list[str] = []
    real_send_now = transport.send_now

    def send_now(data: bytes | bytearray | memoryview) -> int:
        n = real_send_now(data)
        if n == len(data):
            direct.append(threading.current_thread().name)
        return n

    transport.send_now = send_now  # type: ignore[method-assign]
    return direct


def test_only_a_thread_sending_alone_writes_straight_to_the_socket(peer: Peer) -> None:
    """One thread's sends go straight to the socket once it has made
    ONE_WRITER_RUN in a row; sends of threads taking turns keep the
    flusher's steps (so they can queue behind each other's writes)."""
    conn, _ = connect(peer, heartbeat=0)
    ch, _ = open_channel(conn, peer)
    direct = _counting_direct_sends(conn)
    run = connection_module.ONE_WRITER_RUN
    for i in range(run + 5):
        ch.basic_publish("", "q", b"alone %d" % i)
    assert direct == [threading.current_thread().name] * 5
    assert conn._writer_run == run  # counted no further (a C int in the compiled build)
    direct.clear()
    turns: list[queue.Queue[int | None]] = [queue.Queue(), queue.Queue()]
    done: queue.Queue[BaseException | None] = queue.Queue()

    def take_turns(mine: int) -> None:
        try:
            while (i := turns[mine].get(timeout=WAIT)) is not None:
                ch.basic_publish("", "q", b"turn %d" % i)
                turns[1 - mine].put(i + 1 if i + 1 < 4 * run else None)
            turns[1 - mine].put(None)
        except BaseException as exc:
            done.put(exc)
        else:
            done.put(None)

    for mine in (0, 1):
        threading.Thread(target=take_turns, args=(mine,), name=f"turns-{mine}", daemon=True).start()
    turns[0].put(0)
    assert done.get(timeout=WAIT) is None and done.get(timeout=WAIT) is None
    assert direct == []
    bodies = [peer.next_event().body for _ in range(run + 5 + 4 * run)]
    assert bodies == [b"alone %d" % i for i in range(run + 5)] + [b"turn %d" % i for i in range(4 * run)]


def flood_numbered(ch: Channel, pad: bytes, count: int) -> queue.Queue[BaseException | None]:
    """Publish bodies ``b"<i>:" + pad`` for i below ``count`` from a thread
    called "numbered"; the queue gets the error, or None once all went out."""
    out: queue.Queue[BaseException | None] = queue.Queue()

    def run() -> None:
        try:
            for i in range(count):
                ch.basic_publish("", "q", b"%d:" % i + pad)
        except BaseException as exc:
            out.put(exc)
        else:
            out.put(None)

    threading.Thread(target=run, name="numbered", daemon=True).start()
    return out


def test_senders_queue_behind_a_slow_write_and_go_out_in_one_send(peer: Peer) -> None:
    """While one thread writes, other senders queue their frames and return;
    the writer sends everything queued with one sendall, and the peer gets
    every frame whole and in order."""
    conn, _ = connect(peer, heartbeat=0)
    ch, _ = open_channel(conn, peer)
    writes = _counting_writes(conn)
    publisher = flood(ch, HUGE, 1)
    wait_send_stuck(conn)
    for i in range(20):
        ch.basic_publish("", "q", b"m%d" % i)  # returns at once: the frames are queued
    assert publisher.empty() and conn._flushing, "the big write ended before the small publishes"
    first = peer.next_event()
    assert first.name == "basic.publish" and first.body == HUGE
    bodies = [peer.next_event().body for _ in range(20)]
    assert bodies == [b"m%d" % i for i in range(20)]
    assert publisher.get(timeout=WAIT) is None
    assert len(writes) == 2, writes  # the big publish, then the 20 together
    assert writes[0][0] == writes[1][0] != threading.current_thread().name  # both by the writer
    ch.basic_publish("", "q", b"after")  # nobody writes now: this thread writes itself
    assert peer.next_event().body == b"after"
    assert len(writes) == 3 and writes[2][0] == threading.current_thread().name and not conn._flushing


def test_a_writer_hands_over_to_a_waiting_sender(peer: Peer, monkeypatch: Any) -> None:
    """After FLUSH_BATCHES batches of others (none here), the writer takes
    one more, makes later senders wait, and hands over to one of them: no
    thread (the reader, say) writes for others for long."""
    monkeypatch.setattr(connection_module, "FLUSH_BATCHES", 0)
    monkeypatch.setattr(connection_module, "OUT_LIMIT", 1 << 30)
    conn, _ = connect(peer, heartbeat=0)
    ch, _ = open_channel(conn, peer)
    writes = _counting_writes(conn)
    first = flood(ch, HUGE, 1)  # the writer, stuck until the peer reads
    wait_send_stuck(conn)
    assert flood(ch, HUGE, 1, "second").get(timeout=WAIT) is None  # queued; did not wait
    assert peer.next_event().body == HUGE  # the writer's own write ends; it takes "second"'s
    wait_until(lambda: conn._hand_over, "the writer never asked for a hand-over")
    third = flood(ch, b"third", 1, "third")
    _wait_queued(conn, 1)
    assert third.empty(), "the sender did not wait although a hand-over was asked"
    assert peer.next_event().body == HUGE
    assert peer.next_event().body == b"third"
    assert first.get(timeout=WAIT) is None and third.get(timeout=WAIT) is None
    writer = writes[0][0]
    assert [name for name, _ in writes] == [writer, writer, "third"], writes
    assert not conn._flushing and not conn._hand_over


def test_bytes_left_by_a_hand_over_go_before_a_new_senders(peer: Peer) -> None:
    """A writer that handed over leaves its queue to a waiting sender; a new
    sender that comes first writes that older queue ahead of its own bytes."""
    conn, _ = connect(peer, heartbeat=0)
    ch, _ = open_channel(conn, peer)
    w = conn.writer()
    w.publish(ch.channel_id, "", "q", b"older", {}, False, False)
    older = conn.take(w)
    with conn.send_lock:
        # The moment after a hand-over, before the waiting sender woke.
        assert not conn._flushing
        conn._out.append(older)
    ch.basic_publish("", "q", b"newer")
    assert peer.next_event().body == b"older"
    assert peer.next_event().body == b"newer"
    assert not conn._out and not conn._flushing


def test_senders_waiting_behind_a_failed_write_get_its_error(peer: Peer, monkeypatch: Any) -> None:
    """The write fails while senders wait (here because any queued byte is
    too many): they get the write's error, their frames are dropped, and the
    connection fails."""
    monkeypatch.setattr(connection_module, "OUT_LIMIT", 0)
    conn, _ = connect(peer, heartbeat=0)
    ch, _ = open_channel(conn, peer)
    transport = conn._transport
    assert transport is not None
    writing = threading.Event()
    fail_now = threading.Event()

    def failing_sendall(data: bytes | bytearray | memoryview) -> None:
        writing.set()
        assert fail_now.wait(WAIT)
        raise BrokenPipeError(32, "Broken pipe")

    transport.sendall = failing_sendall  # type: ignore[method-assign]
    transport.send_now = lambda data: 0  # type: ignore[method-assign]  # every write goes to sendall
    writer = flood(ch, b"first", 1, "writer")
    assert writing.wait(WAIT)
    waiting = [flood(ch, b"w%d" % i, 1, f"waiting-{i}") for i in range(3)]
    _wait_queued(conn, 3)
    wait_until(lambda: conn._out_waiting == 3, "the senders did not wait")
    fail_now.set()
    for w in [writer, *waiting]:
        exc = w.get(timeout=WAIT)
        assert isinstance(exc, ConnectionLost) and "Broken pipe" in str(exc), exc
    assert conn._out_waiting == 0 and conn._waiting == 0 and not conn._out and not conn._flushing
    assert not conn.is_open


def test_queued_senders_learn_that_the_write_failed(peer: Peer, monkeypatch: Any) -> None:
    """Senders waiting behind a write that never ends (here because any
    queued byte is too many) are released with the reason when the
    connection ends."""
    monkeypatch.setattr(connection_module, "OUT_LIMIT", 0)
    conn, _ = connect(peer, heartbeat=0)
    ch, _ = open_channel(conn, peer)
    publisher = flood(ch, HUGE, 1)
    wait_send_stuck(conn)
    waiting = [flood(ch, b"w%d" % i, 1, f"waiting-{i}") for i in range(3)]
    _wait_queued(conn, 3)
    # close() must not wait behind the stuck write for ever: it ends the
    # connection at its timeout.
    _, closing = run_in_thread(lambda: conn.close(timeout=1.0))
    assert closing.get(timeout=WAIT) == ("ok", None)
    for w in waiting:
        assert isinstance(w.get(timeout=WAIT), ConnectionLost)
    assert isinstance(publisher.get(timeout=WAIT), ConnectionLost)
    assert conn._waiting == 0 and not conn._out and not conn._flushing


def test_close_is_bounded_while_a_send_is_stuck(peer: Peer) -> None:
    conn, info = connect(peer, heartbeat=0)
    assert info["tune_ok"]["heartbeat"] == 0 and conn.heartbeat == 0
    ch, _ = open_channel(conn, peer)
    publisher = flood(ch)
    wait_send_stuck(conn)
    _, closing = run_in_thread(lambda: conn.close(timeout=1.0))
    assert closing.get(timeout=WAIT) == ("ok", None)
    assert not conn.is_open
    # connection.close was queued behind the stuck write (or waited there
    # until its deadline); the write in flight fails with the reason the
    # connection ended.
    assert isinstance(publisher.get(timeout=WAIT), (ConnectionClosed, ConnectionLost))


def test_close_is_bounded_when_its_own_send_stalls(peer: Peer) -> None:
    """No publisher holds the lock, but the socket buffers are full: the
    connection.close frame itself cannot go out."""
    conn, _ = connect(peer, heartbeat=0)
    transport = conn._transport
    assert transport is not None
    # Fill the buffers without blocking: non-blocking sends under the lock.
    # MSG_DONTWAIT per call, not setblocking(False): the socket's mode is
    # shared with the reader thread, whose recv would then fail with EAGAIN.
    with conn.send_lock:
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):
                transport.sock.send(BIG, socket.MSG_DONTWAIT)
    _, closing = run_in_thread(lambda: conn.close(timeout=1.0))
    assert closing.get(timeout=WAIT) == ("ok", None)
    assert not conn.is_open


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [(0, 10, 0), (0, 0, 0), (5, 10, 5), (30, 10, 10), (5, 0, 5)],
)
@pytest.mark.parametrize("probe_after", [0.0, 3.0])
def test_heartbeat_negotiation(peer: Peer, client: int, server: int, expected: int, probe_after: float) -> None:
    _, shaken = run_in_thread(lambda: peer.handshake(heartbeat=server))
    conn = Connection(f"amqp://u:p@127.0.0.1:{peer.port}/", heartbeat=client, probe_after=probe_after)
    conn.connect()
    status, info = shaken.get(timeout=WAIT)
    assert status == "ok", info
    assert info["tune_ok"]["heartbeat"] == expected
    assert conn.heartbeat == expected
    # No watchdog when neither heartbeats nor liveness probes are on.
    assert (conn._heartbeat_thread is not None) == bool(expected or probe_after)
    conn.fail(ConnectionLost("test over"))


def test_publish_refused_while_channel_close_in_flight(peer: Peer) -> None:
    conn, _ = connect(peer)
    ch, cid = open_channel(conn, peer)
    select_confirms(ch, cid, peer)
    _, closing = run_in_thread(ch.close)
    peer.expect("channel.close")
    assert not ch.is_open
    with pytest.raises(ChannelClosed):
        ch.basic_publish("", "q", b"while closing")
    with pytest.raises(ChannelClosed):
        ch.publish_many([("", "q", b"a"), ("", "q", b"b")])
    with pytest.raises(ChannelClosed):
        ch.basic_ack(1)
    assert ch.pending_confirms == 0
    peer.send_method(cid, "channel.close-ok")
    assert closing.get(timeout=WAIT) == ("ok", None)
    with pytest.raises(ChannelClosed):
        ch.basic_publish("", "q", b"after close")
    # Nothing of the refused publishes reached the wire: the next frame the
    # peer sees is the next channel's open, and the connection is alive.
    ch2, cid2 = open_channel(conn, peer)
    assert cid2 == cid and ch2.is_open and conn.is_open
    conn.fail(ConnectionLost("test over"))


def test_reader_side_close_during_close_in_flight_sends_no_second_close(peer: Peer) -> None:
    conn, _ = connect(peer)
    ch, cid = open_channel(conn, peer)
    _, closing = run_in_thread(ch.close)
    peer.expect("channel.close")
    # A consumer callback (reader thread) closes the same channel meanwhile.
    done = threading.Event()

    def on_blocked(c: Connection, blocked: bool, reason: str) -> None:
        ch.close()
        done.set()

    conn.on_blocked.append(on_blocked)
    peer.send_method(0, "connection.blocked", reason="test")
    assert done.wait(WAIT)
    assert closing.get(timeout=WAIT)[0] == "ok"
    peer.send_method(cid, "channel.close-ok")
    barrier(conn, peer)
    ch2, cid2 = open_channel(conn, peer)  # the next frame is channel.open
    assert cid2 == cid and ch2.is_open
    conn.fail(ConnectionLost("test over"))


def test_single_acks_advance_the_low_confirm_mark(peer: Peer) -> None:
    conn, _ = connect(peer)
    ch, cid = open_channel(conn, peer)
    select_confirms(ch, cid, peer)
    futures = [ch.basic_publish("", "q", b"%d" % i) for i in range(8)]
    for _ in range(8):
        assert peer.next_event().name == "basic.publish"
    for tag in (1, 2, 3):
        peer.send_method(cid, "basic.ack", delivery_tag=tag, multiple=False)
    barrier(conn, peer)
    assert ch._low_tag == 4
    # Out of order: 5 first (4 still open), then 4 releases both.
    peer.send_method(cid, "basic.ack", delivery_tag=5, multiple=False)
    barrier(conn, peer)
    assert ch._low_tag == 4
    peer.send_method(cid, "basic.ack", delivery_tag=4, multiple=False)
    barrier(conn, peer)
    assert ch._low_tag == 6
    peer.send_method(cid, "basic.ack", delivery_tag=8, multiple=True)
    assert all(f is not None and f.result(timeout=WAIT) is True for f in futures)
    barrier(conn, peer)
    assert ch._low_tag == 9 and ch.pending_confirms == 0
    conn.fail(ConnectionLost("test over"))


def test_tls_handshake_reset_is_an_amqp_error() -> None:
    """A reset during the TLS handshake must surface as an AMQPError, which
    is what failover to the next host catches."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    port = listener.getsockname()[1]

    def reset_after_client_hello() -> None:
        s, _ = listener.accept()
        s.settimeout(WAIT)
        s.recv(10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST

    thread = threading.Thread(target=reset_after_client_hello, daemon=True)
    thread.start()
    try:
        with pytest.raises(AMQPError) as info:
            Connection(f"amqps://u:TlsS3cret@127.0.0.1:{port}/", connect_timeout=WAIT).connect()
        assert isinstance(info.value, ConnectionLost), info.value
        assert "TlsS3cret" not in str(info.value)
    finally:
        thread.join(WAIT)
        listener.close()


def test_probe_due_while_closing_ends_the_watchdog_quietly(peer: Peer, monkeypatch: Any) -> None:
    """A probe falls due while connection.close waits for its close-ok: the
    watchdog leaves the close (bounded on its own) to end the connection, and
    ends without an uncaught error."""
    uncaught: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    conn, _ = connect(peer, heartbeat=0, probe_after=0.2, probe_timeout=30)
    watchdog = conn._heartbeat_thread
    assert watchdog is not None
    ch, _ = open_channel(conn, peer)
    ch.basic_publish("", "q", b"unanswered")  # the broker owes an answer: busy
    peer.expect("basic.publish")
    _, closing = run_in_thread(lambda: conn.close(timeout=2.0))
    peer.expect("connection.close")  # and never answers it
    watchdog.join(WAIT)
    assert not watchdog.is_alive()
    assert closing.get(timeout=WAIT) == ("ok", None)
    assert not conn.is_open
    assert uncaught == []
