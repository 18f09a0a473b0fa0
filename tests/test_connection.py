"""Connection and channel behaviour against a real RabbitMQ node (fixture ``broker``)."""

from __future__ import annotations

import datetime
import hashlib
import queue
import threading
import time
import uuid
from typing import Any

import pytest

from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import (
    AuthenticationFailed,
    ChannelClosed,
    ConnectionClosed,
    ConnectionRefused,
    MessageReturned,
    PublishNacked,
    VirtualHostError,
)
from fastrpc.testing.ports import free_ports

pytestmark = pytest.mark.twins

WAIT = 15.0  # upper bound for anything the broker should do promptly


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def conn(broker: Any) -> Any:
    c = Connection(broker.url, connection_name=_name("test-conn"))
    c.connect()
    yield c
    c.close()


def _collect(ch: Any, queue_name: str, count: int, no_ack: bool = True) -> list[spec.Delivery]:
    """Consume ``count`` messages (bounded wait) and return them."""
    got: queue.Queue[spec.Delivery] = queue.Queue()
    tag = ch.basic_consume(queue_name, got.put, no_ack=no_ack)
    out = [got.get(timeout=WAIT) for _ in range(count)]
    ch.basic_cancel(tag)
    return out


def test_handshake_and_server_properties(broker: Any) -> None:
    name = _name("props")
    with Connection(broker.url, connection_name=name, heartbeat=30) as c:
        assert c.is_open
        product = c.server_properties["product"]
        assert product in ("RabbitMQ", b"RabbitMQ")
        caps = c.server_properties["capabilities"]
        assert caps["publisher_confirms"] is True
        assert caps["authentication_failure_close"] is True
        assert c.heartbeat == 30  # lower non-zero of ours (30) and the broker's (60)
        assert c.frame_max == spec.DEFAULT_FRAME_MAX
        assert 0 < c.channel_max <= 2047
        listing = broker.ctl("list_connections", "client_properties")
        assert name in listing
        assert "fastrpc" in listing
    assert not c.is_open
    assert isinstance(c.closed_reason, ConnectionClosed)


def test_wrong_password(broker: Any) -> None:
    url = broker.url.replace("guest:guest@", "guest:Wr0ngPassw0rd@")
    c = Connection(url, connect_timeout=WAIT)
    with pytest.raises(AuthenticationFailed) as info:
        c.connect()
    text = str(info.value) + repr(info.value)
    assert "Wr0ngPassw0rd" not in text
    assert "guest" in text
    assert "Wr0ngPassw0rd" not in repr(c)


def test_unknown_vhost(broker: Any) -> None:
    c = Connection(broker.url, virtual_host="no-such-vhost-" + uuid.uuid4().hex[:6], connect_timeout=WAIT)
    with pytest.raises(VirtualHostError) as info:
        c.connect()
    assert "no-such-vhost" in str(info.value)


def test_refused_port() -> None:
    (port,) = free_ports(1)
    c = Connection(f"amqp://guest:TopS3cret@127.0.0.1:{port}/", connect_timeout=5)
    with pytest.raises(ConnectionRefused) as info:
        c.connect()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "TopS3cret" not in str(info.value)


def test_repr_never_shows_password(broker: Any) -> None:
    secret = "N0tInL0gs"
    broker.add_user("repr-user", secret)
    url = broker.url.replace("guest:guest@", f"repr-user:{secret}@")
    with Connection(url) as c:
        ch = c.channel()
        for text in (repr(c), str(c), repr(c.params), str(c.params), repr(ch)):
            assert secret not in text
        assert "repr-user" in repr(c)


def test_publish_consume_ack_with_properties(conn: Any) -> None:
    ch = conn.channel()
    exchange, qname = _name("ex"), _name("q")
    ch.exchange_declare(exchange, "topic")
    name, messages, consumers = ch.queue_declare(qname, exclusive=True)
    assert (name, messages, consumers) == (qname, 0, 0)
    ch.queue_bind(qname, exchange, "a.*")
    props = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"x-int": 7, "x-str": "v", "x-list": [1, "two"], "x-nested": {"k": True}},
        "delivery_mode": 2,
        "priority": 3,
        "correlation_id": "corr-1",
        "reply_to": "reply_q",
        "expiration": "60000",
        "message_id": "m-1",
        "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "type": "t",
        "app_id": "fastrpc-tests",
    }
    assert ch.basic_publish(exchange, "a.b", b'{"x": 1}', props) is None
    ch.basic_publish(exchange, "nomatch", b"dropped")
    ch.basic_publish(exchange, "a.c", b"second")
    got: queue.Queue[spec.Delivery] = queue.Queue()
    tag = ch.basic_consume(qname, got.put)
    first = got.get(timeout=WAIT)
    second = got.get(timeout=WAIT)
    assert first.body == b'{"x": 1}'
    assert first.routing_key == "a.b" and first.exchange == exchange and first.consumer_tag == tag
    assert first.properties == props
    assert second.body == b"second" and second.properties == {}
    ch.basic_ack(second.delivery_tag, multiple=True)
    ch.basic_cancel(tag)
    # Both acked: nothing comes back after the channel closes and the queue is empty.
    assert ch.basic_get(qname) is None
    assert got.empty()
    ch.queue_unbind(qname, exchange, "a.*")
    ch.basic_publish(exchange, "a.b", b"unbound")
    assert ch.queue_declare(qname, passive=True)[1] == 0
    ch.exchange_delete(exchange)
    with pytest.raises(ChannelClosed) as info:
        ch.exchange_declare(exchange, "topic", passive=True)
    assert info.value.reply_code == spec.NOT_FOUND


def test_nack_requeue_and_reject(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    assert qname.startswith("amq.gen-")
    ch.basic_publish("", qname, b"m1")
    ch.basic_publish("", qname, b"m2")
    ch.basic_qos(prefetch_count=10)
    first, second = _collect(ch, qname, 2, no_ack=False)
    ch.basic_nack(first.delivery_tag, requeue=True)
    ch.basic_reject(second.delivery_tag, requeue=False)
    again = ch.basic_get(qname, no_ack=True)
    assert again is not None and again.body == b"m1" and again.args["redelivered"] is True
    assert ch.basic_get(qname) is None
    assert ch.queue_purge(qname) == 0


def test_ack_many_single_send(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    for i in range(5):
        ch.basic_publish("", qname, str(i).encode())
    deliveries = _collect(ch, qname, 5, no_ack=False)
    ch.ack_many(d.delivery_tag for d in deliveries)
    ch.close()
    ch2 = conn.channel()
    assert ch2.queue_declare(qname, passive=True)[1] == 0


def test_confirms_ack_and_mandatory_return(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    ch.confirm_select()
    assert ch.confirm_mode
    fut = ch.basic_publish("", qname, b"confirmed")
    assert fut is not None and fut.result(timeout=WAIT) is True

    order: list[str] = []
    ch.on_return = lambda returned: order.append("return:" + returned.routing_key)
    lost = ch.basic_publish("", "no-such-queue-" + uuid.uuid4().hex, b"lost", mandatory=True)
    assert lost is not None
    lost.add_done_callback(lambda f: order.append("settled"))
    with pytest.raises(MessageReturned) as info:
        lost.result(timeout=WAIT)
    assert info.value.reply_code == spec.NO_ROUTE
    assert info.value.body == b"lost"
    assert order[0].startswith("return:no-such-queue-") and order[1] == "settled"
    # A mandatory publish that routes is plainly acked.
    ok = ch.basic_publish("", qname, b"routed", mandatory=True)
    assert ok is not None and ok.result(timeout=WAIT) is True
    assert ch.pending_confirms == 0


def test_confirms_nack_on_reject_publish_overflow(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare(
        "", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )[0]
    ch.confirm_select()
    first = ch.basic_publish("", qname, b"fits")
    second = ch.basic_publish("", qname, b"overflows")
    assert first is not None and second is not None
    assert first.result(timeout=WAIT) is True
    with pytest.raises(PublishNacked):
        second.result(timeout=WAIT)


def test_publish_many(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    items = [("", qname, f"m{i}".encode()) for i in range(50)]
    items.append({"exchange": "", "routing_key": qname, "body": b"dict", "properties": {"message_id": "d"}})
    assert ch.publish_many(items) == [None] * 51
    ch.confirm_select()
    futures = ch.publish_many(items)
    assert len(futures) == 51
    assert all(f is not None and f.result(timeout=WAIT) is True for f in futures)
    deliveries = _collect(ch, qname, 102)
    bodies = [d.body for d in deliveries]
    assert bodies == [f"m{i}".encode() for i in range(50)] + [b"dict"] + [f"m{i}".encode() for i in range(50)] + [b"dict"]
    assert deliveries[50].properties == {"message_id": "d"}


def test_large_message_round_trip(broker: Any) -> None:
    body = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # ~3 MiB, many frames
    with Connection(broker.url, frame_max=8192) as c:
        assert c.frame_max == 8192
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        ch.confirm_select()
        fut = ch.basic_publish("", qname, body, {"message_id": "big"})
        assert fut is not None and fut.result(timeout=WAIT) is True
        (got,) = _collect(ch, qname, 1)
        assert len(got.body) == len(body)
        assert got.body == body
        assert got.properties == {"message_id": "big"}


def test_consumer_cancelled_when_queue_deleted_elsewhere(broker: Any, conn: Any) -> None:
    ch = conn.channel()
    qname = _name("cancel-q")
    ch.queue_declare(qname, auto_delete=False)
    cancelled: queue.Queue[str] = queue.Queue()
    tag = ch.basic_consume(qname, lambda d: None, on_cancel=cancelled.put)
    with Connection(broker.url) as other:
        assert other.channel().queue_delete(qname) == 0
    assert cancelled.get(timeout=WAIT) == tag
    assert tag not in ch._consumers
    # The channel itself stays usable.
    assert ch.queue_declare("", exclusive=True)[0]


def test_channel_closed_by_broker(conn: Any) -> None:
    ch = conn.channel()
    qname = _name("mismatch")
    ch.queue_declare(qname, exclusive=True, arguments={"x-expires": 60000})
    closed: list[BaseException] = []
    ch.on_close.append(lambda channel, exc: closed.append(exc))
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare(qname, exclusive=True, arguments={"x-expires": 1000})
    assert info.value.reply_code == spec.PRECONDITION_FAILED
    assert "x-expires" in info.value.reply_text
    assert (info.value.class_id, info.value.method_id) == (50, 10)
    assert not ch.is_open
    assert len(closed) == 1 and isinstance(closed[0], ChannelClosed)
    # Never silently reused.
    for call in (
        lambda: ch.queue_declare("", exclusive=True),
        lambda: ch.basic_publish("", qname, b"x"),
        lambda: ch.basic_ack(1),
        lambda: ch.basic_consume(qname, lambda d: None),
    ):
        with pytest.raises(ChannelClosed) as again:
            call()
        assert again.value.reply_code == spec.PRECONDITION_FAILED
    ch.close()  # idempotent, no error
    # The connection keeps working.
    assert conn.is_open
    ch2 = conn.channel()
    assert ch2.queue_declare(qname, passive=True)[0] == qname


def _broker_channel_count(broker: Any, connection_name: str) -> int:
    listing = broker.ctl("list_connections", "channels", "client_properties")
    lines = [line for line in listing.splitlines() if connection_name in line]
    assert len(lines) == 1, listing
    return int(lines[0].split()[0])


def test_channel_ids_reused_and_bounded(broker: Any, conn: Any) -> None:
    keep = conn.channel()
    seen = set()
    for _ in range(200):
        ch = conn.channel()
        seen.add(ch.channel_id)
        ch.close()
        assert not ch.is_open
        with pytest.raises(ChannelClosed):
            ch.queue_declare("", exclusive=True)
    assert len(seen) == 1
    assert conn.channel_count == 1
    # Many at once, then all closed: ids come back, lowest first.
    many = [conn.channel() for _ in range(20)]
    assert sorted(c.channel_id for c in many) == list(range(2, 22))
    for c in many:
        c.close()
    assert conn.channel_count == 1
    assert conn.channel().channel_id == 2
    assert keep.is_open
    # The broker agrees: no channel left behind by the cycles.
    assert _broker_channel_count(broker, conn.params.connection_name) == 2


def test_channel_max_honoured(broker: Any) -> None:
    with Connection(broker.url, channel_max=3) as c:
        assert c.channel_max == 3
        chans = [c.channel() for _ in range(3)]
        from fastrpc.amqp.exceptions import ChannelsExhausted

        with pytest.raises(ChannelsExhausted):
            c.channel()
        chans[1].close()
        assert c.channel().channel_id == chans[1].channel_id


def _publish_threads(targets: list[Any], qname: str, threads: int, per_thread: int, confirm: bool,
                     big_every: int = 0) -> None:
    """Publish from ``threads`` threads at once; with ``big_every``, every
    that many messages one has a body of several frames."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            ch = targets[n % len(targets)]
            barrier.wait(timeout=WAIT)
            futures = []
            for i in range(per_thread):
                size = 300_000 + i if big_every and i % big_every == 0 else i % 300
                payload = f"{n}:{i}:".encode() + bytes([n]) * size
                body = payload + hashlib.md5(payload).digest()
                fut = ch.basic_publish("", qname, body, {"headers": {"t": n, "i": i}})
                if confirm:
                    futures.append(fut)
            for fut in futures:
                assert fut.result(timeout=WAIT * 2) is True
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=WAIT * 4)
    assert not any(t.is_alive() for t in pool)
    assert errors == []


def _check_all_arrived(ch: Any, qname: str, threads: int, per_thread: int) -> None:
    deliveries = _collect(ch, qname, threads * per_thread)
    seen = set()
    last_seen: dict[int, int] = {}
    for d in deliveries:
        payload, digest = d.body[:-16], d.body[-16:]
        assert hashlib.md5(payload).digest() == digest
        n, i, _ = payload.split(b":", 2)
        key = (int(n), int(i))
        assert d.properties["headers"] == {"t": key[0], "i": key[1]}
        assert key not in seen
        seen.add(key)
        # Per-publisher order is preserved (same channel, same thread).
        assert last_seen.get(key[0], -1) < key[1]
        last_seen[key[0]] = key[1]
    assert len(seen) == threads * per_thread
    assert ch.queue_declare(qname, passive=True)[1] == 0


def test_many_threads_one_channel(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    ch.confirm_select()
    _publish_threads([ch], qname, threads=8, per_thread=500, confirm=True)
    _check_all_arrived(conn.channel(), qname, 8, 500)


def test_many_threads_one_channel_with_multi_frame_bodies(conn: Any) -> None:
    # Concurrent sends are joined into one write while another is in
    # progress: frames of large and small messages must not interleave.
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    ch.confirm_select()
    _publish_threads([ch], qname, threads=8, per_thread=200, confirm=True, big_every=10)
    _check_all_arrived(conn.channel(), qname, 8, 200)


def test_many_threads_several_channels(conn: Any) -> None:
    chans = [conn.channel() for _ in range(4)]
    qname = chans[0].queue_declare("", exclusive=True)[0]
    _publish_threads(chans, qname, threads=8, per_thread=500, confirm=False)
    _check_all_arrived(chans[0], qname, 8, 500)


def test_connection_closed_by_broker(broker: Any) -> None:
    name = _name("kill-me")
    c = Connection(broker.url, connection_name=name)
    c.connect()
    ch = c.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    ch.confirm_select()
    closed: queue.Queue[BaseException] = queue.Queue()
    c.on_close.append(lambda conn, exc: closed.put(exc))
    listing = broker.ctl("list_connections", "pid", "client_properties")
    pid = next(line.split()[0] for line in listing.splitlines() if name in line)
    broker.ctl("close_connection", pid, "test says goodbye")
    exc = closed.get(timeout=WAIT)
    assert isinstance(exc, ConnectionClosed)
    assert exc.reply_code == spec.CONNECTION_FORCED
    assert "goodbye" in exc.reply_text
    assert not c.is_open
    with pytest.raises(ConnectionClosed):
        ch.basic_publish("", qname, b"x")
    with pytest.raises(ConnectionClosed):
        c.channel()
    c.close()  # no error after the broker closed it


def test_close_fails_waiters_and_is_idempotent(broker: Any) -> None:
    c = Connection(broker.url)
    c.connect()
    ch = c.channel()
    ch.close()
    c.close()
    c.close()
    assert not c.is_open
    with pytest.raises(ConnectionClosed):
        c.channel()
    assert c._reader_thread is not None and not c._reader_thread.is_alive()


def test_sync_call_from_reader_thread_refused(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    errors: queue.Queue[BaseException | None] = queue.Queue()

    def on_message(delivery: spec.Delivery) -> None:
        try:
            ch.queue_declare("", exclusive=True)
            errors.put(None)
        except BaseException as exc:
            errors.put(exc)

    ch.basic_consume(qname, on_message, no_ack=True)
    ch.basic_publish("", qname, b"x")
    assert isinstance(errors.get(timeout=WAIT), RuntimeError)
    assert ch.is_open and conn.is_open


def test_cancel_and_close_from_callback(conn: Any) -> None:
    ch = conn.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    for i in range(3):
        ch.basic_publish("", qname, str(i).encode())
    seen: queue.Queue[bytes] = queue.Queue()
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def on_message(delivery: spec.Delivery) -> None:
        seen.put(delivery.body)
        try:
            ch.basic_cancel(delivery.consumer_tag)
            ch.close()
            outcome.put(None)
        except BaseException as exc:
            outcome.put(exc)

    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(qname, on_message)
    assert outcome.get(timeout=WAIT) is None
    assert seen.get(timeout=WAIT) == b"0"
    assert not ch.is_open
    with pytest.raises(ChannelClosed):
        ch.basic_publish("", qname, b"x")
    # The unacked delivery went back to the queue; the connection is fine.
    other = conn.channel()
    # Requeueing happens in the queue process after the channel is gone; there
    # is no event for it, so poll the broker (bounded).
    deadline = time.monotonic() + WAIT
    while other.queue_declare(qname, passive=True)[1] < 3:
        assert time.monotonic() < deadline, "unacked delivery never returned to the queue"
    got = other.basic_get(qname, no_ack=True)
    assert got is not None and got.body == b"0" and got.args["redelivered"] is True
    assert seen.empty()


def test_no_thread_leak_over_connection_cycles(broker: Any) -> None:
    threads: list[threading.Thread] = []
    for _ in range(10):
        with Connection(broker.url, heartbeat=5) as c:
            c.channel().queue_declare("", exclusive=True)
            mine = [t for t in (c._reader_thread, c._heartbeat_thread) if t is not None]
            assert len(mine) == 2 and all(t.is_alive() for t in mine)
            threads += mine
    assert not any(t.is_alive() for t in threads)


def test_after_dispatch_runs_once_per_registration_after_the_read(broker: Any, caplog: Any) -> None:
    """A consumer gathers the deliveries of one read and handles them after it."""
    q = f"after_{uuid.uuid4().hex[:8]}"
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    with Connection(broker.url) as conn:
        ch = conn.channel()
        ch.queue_declare(q, auto_delete=True)
        for i in range(50):
            ch.basic_publish("", q, str(i).encode())
        gathered: list[bytes] = []
        ends = {"n": 0}

        def read_done() -> None:
            assert conn.in_reader_thread()
            events.put(("read", list(gathered)))
            gathered.clear()
            ends["n"] += 1
            if ends["n"] == 1:
                raise RuntimeError("boom")  # logged; the connection carries on

        def on_message(delivery: spec.Delivery) -> None:
            ch.basic_ack(delivery.delivery_tag)
            gathered.append(delivery.body)
            if len(gathered) == 1:
                # At once if the read brought only this delivery.
                conn.after_dispatch(read_done)

        ch.basic_consume(q, on_message)
        bodies: list[bytes] = []
        deadline = time.monotonic() + WAIT
        while len(bodies) < 50:
            kind, batch = events.get(timeout=max(0.0, deadline - time.monotonic()))
            assert kind == "read" and batch, "a registered function ran without a delivery before it"
            bodies += batch
        # Every delivery was handed over exactly once, in order.
        assert bodies == [str(i).encode() for i in range(50)]
        assert conn.is_open
        assert ch.queue_declare(q, passive=True)[1] == 0
    assert any("after_dispatch function failed" in r.getMessage() for r in caplog.records)


def test_the_connection_layer_is_its_compiled_build_unless_extensions_are_off() -> None:
    import importlib

    from fastrpc import _impl

    for name in _impl.TWINS:
        module = importlib.import_module(name)
        if _impl.NO_EXTENSIONS:
            assert module.__name__ == _impl.TWINS[name][0]
            assert _impl.COMPILED_MODULES[name] is False
        else:
            assert module.__name__ == "fastrpc._ext." + name.rpartition(".")[2], (
                f"FASTRPC_NO_EXTENSIONS is not set but {name} is not its compiled build: build the extension"
            )
            assert _impl.COMPILED_MODULES[name] is True
    from fastrpc.amqp.connection import Connection

    # Compiled, its attributes are struct fields: no instance dict.
    assert (Connection.__dictoffset__ == 0) is not _impl.NO_EXTENSIONS
