"""What a connection keeps between messages: a read buffer that grows for
large messages and shrinks back, a few spare frame writers rather than one
per thread that ever sent, and a frame reader that gives back what a large
message needed."""

from __future__ import annotations

import gc
import queue
import socket
import threading
import tracemalloc
import uuid
from types import ModuleType
from typing import Any

import pytest
from codec_support import HEARTBEAT
from fake_peer import Peer, connect, open_channel

from fastrpc.amqp import connection_core, spec
from fastrpc.amqp import transport as transport_module
from fastrpc.amqp.channel import Channel
from fastrpc.amqp.connection import Connection

pytestmark = pytest.mark.twins

WAIT = 15.0
RECV_MIN = transport_module.RECV_MIN
RECV_MAX = transport_module.RECV_MAX
SHRINK_AFTER = transport_module.SHRINK_AFTER


def _pattern(n: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(n))


def test_read_buffer_grows_while_reads_fill_it_and_shrinks_after_small_reads(monkeypatch: Any) -> None:
    monkeypatch.setattr(transport_module, "QUIET_AFTER", 3600.0)  # only the count of small reads here
    ours, theirs = socket.socketpair()
    with ours, theirs:
        t = transport_module.PlainTransport(ours)
        assert len(t._rbuf) == RECV_MIN
        views = []
        for seed, size in enumerate((RECV_MIN, 4 * RECV_MIN)):
            # A read that fills the buffer: more was probably waiting.
            theirs.sendall(_pattern(size, seed))
            view = t.recv()
            assert view is not None and len(view) == size
            views.append((view, seed))
            assert len(t._rbuf) == min(4 * size, RECV_MAX)
        assert len(t._rbuf) == RECV_MAX
        # Views handed out before a resize still hold their bytes.
        for view, seed in views:
            assert bytes(view) == _pattern(len(view), seed)

        def small_read(n: int) -> None:
            theirs.sendall(b"s" * n)
            assert t.recv() == b"s" * n

        for _ in range(SHRINK_AFTER - 1):
            small_read(100)
        small_read(RECV_MIN + 1)  # a larger read starts the count again
        for _ in range(SHRINK_AFTER - 1):
            small_read(100)
        assert len(t._rbuf) == RECV_MAX
        small_read(100)
        assert len(t._rbuf) == RECV_MIN
        theirs.sendall(b"end")
        assert t.recv() == b"end"
        theirs.shutdown(socket.SHUT_WR)
        assert t.recv() is None


def test_read_buffer_shrinks_at_the_first_small_read_after_a_quiet_spell(monkeypatch: Any) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        t = transport_module.PlainTransport(ours)
        theirs.sendall(_pattern(RECV_MIN, 1))
        assert t.recv() == _pattern(RECV_MIN, 1)
        assert len(t._rbuf) == 4 * RECV_MIN
        theirs.sendall(b"a")
        assert t.recv() == b"a"
        assert len(t._rbuf) == 4 * RECV_MIN  # reads follow each other: no quiet spell
        monkeypatch.setattr(transport_module, "QUIET_AFTER", 0.0)  # any gap is one now
        theirs.sendall(_pattern(RECV_MIN + 1, 2))  # a read larger than RECV_MIN never shrinks it
        assert t.recv() == _pattern(RECV_MIN + 1, 2)
        assert len(t._rbuf) == 4 * RECV_MIN
        theirs.sendall(b"heartbeat")
        assert t.recv() == b"heartbeat"
        assert len(t._rbuf) == RECV_MIN


def test_tls_buffers_grow_for_large_messages_and_shrink_back(tls_broker: Any) -> None:
    with Connection(tls_broker.tls_url, cafile=tls_broker.ca_file, connect_timeout=WAIT) as c:
        t = c._transport
        sizes: list[int] = []
        resize = t._resize

        def recording_resize(size: int) -> None:
            sizes.append(size)
            resize(size)

        t._resize = recording_resize
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        got: queue.Queue[spec.Delivery] = queue.Queue()
        ch.basic_consume(qname, got.put, no_ack=True)
        big = _pattern(3 * RECV_MAX, 7)
        for i in range(4):
            ch.basic_publish("", qname, big + bytes([i]))
        assert [got.get(timeout=WAIT).body for _ in range(4)] == [big + bytes([i]) for i in range(4)]
        assert sizes and max(sizes) == RECV_MAX, sizes
        # Small messages one at a time: every read is small.
        for i in range(2 * SHRINK_AFTER):
            ch.basic_publish("", qname, b"small %d" % i)
            assert got.get(timeout=WAIT).body == b"small %d" % i
        assert sizes[-1] == RECV_MIN
        assert len(t._rbuf) == RECV_MIN
        assert len(t._plain) == RECV_MIN + transport_module.TLS_SLACK
        ch.basic_publish("", qname, big)
        assert got.get(timeout=WAIT).body == big


def test_an_encoding_error_leaves_nothing_for_the_next_publish(peer: Peer) -> None:
    conn, _ = connect(peer, heartbeat=0)
    try:
        ch, _ = open_channel(conn, peer)
        with pytest.raises(TypeError):
            ch.publish_many([("", "q", b"before"), ("", "q", b"bad", {"priority": "high"})])
        with pytest.raises(ValueError):
            ch.basic_publish("", "q", b"bad", {"no such property": 1})
        ch.basic_publish("", "q", b"after")
        event = peer.next_event()
        assert (event.name, event.body) == ("basic.publish", b"after")
        assert all(len(w) == 0 for w in conn._writers)
    finally:
        conn.close(timeout=1)


def test_concurrent_publishers_share_a_few_writers(broker: Any) -> None:
    threads_n, each = 16, 100
    with Connection(broker.url, connection_name=f"writers-{uuid.uuid4().hex[:8]}") as c:
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        ch.confirm_select()
        start = threading.Barrier(threads_n)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                start.wait(WAIT)
                futures = [ch.basic_publish("", qname, b"%d-%d" % (n, i)) for i in range(each)]
                for f in futures:
                    assert f is not None and f.result(timeout=WAIT) is True
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * 2)
        assert errors == [] and not any(t.is_alive() for t in threads)
        assert ch.queue_declare(qname, passive=True)[1] == threads_n * each
        assert 1 <= len(c._writers) <= connection_core.SPARE_WRITERS
        assert all(len(w) == 0 for w in c._writers)


def _large_message_then(codec: ModuleType, after: list[bytes]) -> int:
    """Bytes the reader still holds after a 4 MiB message fed in pieces that
    end inside frames (so bytes are carried over), then the feeds ``after``."""
    writer = codec.FrameWriter(131072)
    body = _pattern(4 << 20, 3)
    writer.content(1, "basic.deliver", {"consumer_tag": "t", "delivery_tag": 1, "exchange": "", "routing_key": "q"},
                   {}, body)
    wire = writer.take()
    reader = codec.FrameReader()
    step = 100_003
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = []
        for start in range(0, len(wire), step):
            events.extend(reader.feed(wire[start:start + step]))
        assert len(events) == 1 and events[0].body == body
        for data in after:
            events.extend(reader.feed(data))
        assert len(events) == 1 + len(after)
        del events
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before  # type: ignore[no-any-return]
    finally:
        tracemalloc.stop()


def test_frame_reader_gives_back_what_a_large_message_needed_once_idle(codec: ModuleType) -> None:
    kept = _large_message_then(codec, [HEARTBEAT])
    assert kept < 64 * 1024, f"the reader kept {kept} bytes after the message"


def test_frame_reader_gives_back_what_a_large_message_needed_under_small_traffic(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    acks = []
    for tag in range(64):
        writer.ack(1, tag + 1, False)
        acks.append(writer.take())
    kept = _large_message_then(codec, acks)
    assert kept < 64 * 1024, f"the reader kept {kept} bytes after the message"


def test_writer_take_and_channel_refuse_none() -> None:
    # The compiled build types a channel's connection and take()'s writer and
    # calls them without a check: None is refused where it comes in (else the
    # first send would crash the process instead of raising).
    conn = Connection()  # not connected: writer() and take() need no socket
    writer = conn.writer()
    writer.ack(1, 7)
    assert conn.take(writer) == ack_frame(1, 7)
    with pytest.raises(TypeError):
        conn.take(None)
    with pytest.raises(TypeError):
        Channel(None, 1)


def ack_frame(channel: int, tag: int) -> bytes:
    """basic.ack (class 60, method 80) of ``tag`` on ``channel``, not multiple."""
    payload = (60).to_bytes(2, "big") + (80).to_bytes(2, "big") + tag.to_bytes(8, "big") + b"\x00"
    return b"\x01" + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce"
