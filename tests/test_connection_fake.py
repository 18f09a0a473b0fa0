"""Connection behaviour against a scripted loopback peer speaking AMQP frames
(``fake_peer.Peer``; the ``peer`` fixture is in conftest)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest
from fake_peer import WAIT, Peer, connect, run_in_thread, select_confirms

from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import (
    AuthenticationFailed,
    ChannelClosed,
    ConnectionLost,
    HandshakeTimeout,
    OperationTimeout,
    PublishBlocked,
    VirtualHostError,
)

pytestmark = pytest.mark.twins


def test_handshake_fields(peer: Peer) -> None:
    _, result = run_in_thread(lambda: peer.handshake(heartbeat=10, frame_max=8192, channel_max=50))
    conn = Connection(f"amqp://alice:PeerS3cret@127.0.0.1:{peer.port}/vh", connection_name="svc-1", heartbeat=0)
    conn.connect()
    status, info = result.get(timeout=WAIT)
    assert status == "ok", info
    start_ok = info["start_ok"]
    assert start_ok["mechanism"] == "PLAIN"
    assert start_ok["response"] == b"\x00alice\x00PeerS3cret"
    props = start_ok["client_properties"]
    assert props["product"] == "fastrpc"
    assert props["connection_name"] == "svc-1"
    assert "version" in props and props["platform"].startswith("Python")
    for cap in ("publisher_confirms", "consumer_cancel_notify", "basic.nack", "connection.blocked",
                "authentication_failure_close", "exchange_exchange_bindings"):
        assert props["capabilities"][cap] is True
    # heartbeat 0 on our side disables heartbeats (as oslo/py-amqp do); limits: lower of both
    assert info["tune_ok"] == {"channel_max": 50, "frame_max": 8192, "heartbeat": 0}
    assert (conn.heartbeat, conn.frame_max, conn.channel_max) == (0, 8192, 50)
    assert info["open"]["virtual_host"] == "vh"
    assert conn.server_properties["product"] == "fake"
    conn.fail(ConnectionLost("test over"))


def test_handshake_timeout(peer: Peer) -> None:
    accepted = threading.Event()

    def silent() -> None:
        peer.accept()
        accepted.set()

    run_in_thread(silent)
    conn = Connection(f"amqp://u:PeerS3cret@127.0.0.1:{peer.port}/", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(HandshakeTimeout) as info:
        conn.connect()
    assert time.monotonic() - started < 5
    assert accepted.is_set()
    assert f"127.0.0.1:{peer.port}" in str(info.value)
    assert "PeerS3cret" not in str(info.value)


def test_garbage_instead_of_amqp(peer: Peer) -> None:
    def http() -> None:
        peer.accept()
        assert peer.sock is not None
        peer.sock.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    run_in_thread(http)
    with pytest.raises(ConnectionLost) as info:
        Connection(f"amqp://127.0.0.1:{peer.port}/", connect_timeout=WAIT).connect()
    assert isinstance(info.value.__cause__, spec.FrameError)


@pytest.mark.parametrize("stage, code, expected", [
    ("auth", spec.ACCESS_REFUSED, AuthenticationFailed),
    ("open", spec.NOT_ALLOWED, VirtualHostError),
])
def test_handshake_refusals(peer: Peer, stage: str, code: int, expected: type) -> None:
    def refuse() -> None:
        peer.accept()
        peer.send_method(0, "connection.start", version_major=0, version_minor=9, mechanisms=b"PLAIN", locales=b"en_US")
        peer.expect("connection.start-ok")
        if stage == "open":
            peer.send_method(0, "connection.tune", channel_max=0, frame_max=0, heartbeat=0)
            peer.expect("connection.tune-ok")
            peer.expect("connection.open")
        peer.send_method(0, "connection.close", reply_code=code, reply_text="REFUSED - go away")
        peer.expect("connection.close-ok")

    _, done = run_in_thread(refuse)
    with pytest.raises(expected) as info:
        Connection(f"amqp://bob:PeerS3cret@127.0.0.1:{peer.port}/", connect_timeout=WAIT).connect()
    assert "PeerS3cret" not in str(info.value)
    assert done.get(timeout=WAIT)[0] == "ok"


def test_broker_hangs_up_during_login(peer: Peer) -> None:
    def hang_up() -> None:
        peer.accept()
        peer.send_method(0, "connection.start", version_major=0, version_minor=9, mechanisms=b"PLAIN", locales=b"")
        peer.expect("connection.start-ok")
        assert peer.sock is not None
        peer.sock.close()

    run_in_thread(hang_up)
    with pytest.raises(AuthenticationFailed):
        Connection(f"amqp://127.0.0.1:{peer.port}/", connect_timeout=WAIT).connect()


def test_connection_blocked_then_unblocked(peer: Peer) -> None:
    conn, _ = connect(peer, blocked_timeout=0.3)
    _, opened = run_in_thread(conn.channel)
    peer.open_channel()
    ch = opened.get(timeout=WAIT)[1]
    states: queue.Queue[tuple[bool, str]] = queue.Queue()
    conn.on_blocked.append(lambda c, blocked, reason: states.put((blocked, reason)))
    peer.send_method(0, "connection.blocked", reason="low on memory")
    assert states.get(timeout=WAIT) == (True, "low on memory")
    started = time.monotonic()
    with pytest.raises(PublishBlocked) as info:
        ch.basic_publish("", "q", b"held back")
    assert time.monotonic() - started >= 0.25
    assert "low on memory" in str(info.value)

    conn.params = conn.params.replace(blocked_timeout=WAIT)
    thread, result = run_in_thread(lambda: ch.basic_publish("", "q", b"goes out"))
    peer.send_method(0, "connection.unblocked")
    assert result.get(timeout=WAIT) == ("ok", None)
    thread.join(WAIT)
    event = peer.next_event()
    assert type(event) is spec.ContentMethod and event.name == "basic.publish" and event.body == b"goes out"
    assert states.get(timeout=WAIT) == (False, "")
    conn.fail(ConnectionLost("test over"))


def test_channel_flow_and_unexpected_methods(peer: Peer) -> None:
    conn, _ = connect(peer, blocked_timeout=0.3)
    _, opened = run_in_thread(conn.channel)
    cid = peer.open_channel()
    ch = opened.get(timeout=WAIT)[1]
    # Unknown or unexpected methods are logged and ignored.
    peer.send_method(cid, "basic.recover-ok")
    peer.send_method(0, "connection.update-secret-ok")
    peer.send_method(77, "channel.open-ok")
    peer.send_method(cid, "channel.flow", active=False)
    assert peer.expect("channel.flow-ok").args == {"active": False}
    with pytest.raises(PublishBlocked):
        ch.basic_publish("", "q", b"held back")
    peer.send_method(cid, "channel.flow", active=True)
    assert peer.expect("channel.flow-ok").args == {"active": True}
    ch.basic_publish("", "q", b"flows")
    event = peer.next_event()
    assert event.name == "basic.publish" and event.body == b"flows"
    assert conn.is_open and ch.is_open
    conn.fail(ConnectionLost("test over"))


def test_frame_error_fails_waiters_promptly(peer: Peer) -> None:
    conn, _ = connect(peer)
    _, opened = run_in_thread(conn.channel)
    peer.open_channel()
    ch = opened.get(timeout=WAIT)[1]
    _, declared = run_in_thread(lambda: ch.queue_declare("q", timeout=WAIT * 3))
    peer.expect("queue.declare")
    assert peer.sock is not None
    started = time.monotonic()
    peer.sock.sendall(b"\x01\x00\x01\x00\x00\x00\x04\x00\x32\x00\x0b\x00")  # bad frame-end byte
    status, exc = declared.get(timeout=WAIT)
    assert time.monotonic() - started < 5
    assert status == "error" and isinstance(exc, ConnectionLost)
    assert isinstance(conn.closed_reason, ConnectionLost)
    assert isinstance(conn.closed_reason.__cause__, spec.FrameError)
    with pytest.raises(ConnectionLost):
        ch.basic_publish("", "q", b"x")


def test_confirm_ack_multiple_and_nack(peer: Peer) -> None:
    conn, _ = connect(peer)
    _, opened = run_in_thread(conn.channel)
    cid = peer.open_channel()
    ch = opened.get(timeout=WAIT)[1]
    select_confirms(ch, cid, peer)
    futures = [ch.basic_publish("", "q", str(i).encode()) for i in range(6)]
    for _ in range(6):
        assert peer.next_event().name == "basic.publish"
    peer.send_method(cid, "basic.ack", delivery_tag=2, multiple=False)
    peer.send_method(cid, "basic.ack", delivery_tag=3, multiple=True)
    peer.send_method(cid, "basic.nack", delivery_tag=5, multiple=True, requeue=False)
    assert [f.result(timeout=WAIT) for f in futures[:3]] == [True, True, True]
    for f in futures[3:5]:
        assert type(f.exception(timeout=WAIT)).__name__ == "PublishNacked"
    assert not futures[5].done()
    # The channel dies with a confirm outstanding: the future fails, not hangs.
    peer.send_method(cid, "channel.close", reply_code=406, reply_text="PRECONDITION_FAILED - test", class_id=60, method_id=40)
    exc = futures[5].exception(timeout=WAIT)
    assert isinstance(exc, ChannelClosed) and exc.reply_code == 406
    assert peer.expect("channel.close-ok")
    conn.fail(ConnectionLost("test over"))


def test_operation_timeout_abandons_channel(peer: Peer) -> None:
    conn, _ = connect(peer)
    _, opened = run_in_thread(conn.channel)
    cid = peer.open_channel()
    ch = opened.get(timeout=WAIT)[1]
    with pytest.raises(OperationTimeout):
        ch.queue_declare("q", timeout=0.3)
    peer.expect("queue.declare")
    assert peer.expect("channel.close").channel == cid
    with pytest.raises(ChannelClosed):
        ch.queue_declare("q")
    # The id is not reused until the broker confirms the close.
    assert conn.channel_count == 1
    peer.send_method(cid, "queue.declare-ok", queue="q")  # late reply: ignored
    peer.send_method(cid, "channel.close-ok")
    # A later event as a barrier: once it is seen, close-ok was handled too.
    barrier = threading.Event()
    conn.on_blocked.append(lambda c, blocked, reason: barrier.set())
    peer.send_method(0, "connection.unblocked")
    assert barrier.wait(WAIT)
    assert conn.channel_count == 0
    _, reopened = run_in_thread(conn.channel)
    assert peer.open_channel() == cid
    assert reopened.get(timeout=WAIT)[1].channel_id == cid
    conn.fail(ConnectionLost("test over"))


def test_close_crossing_broker_close(peer: Peer) -> None:
    conn, _ = connect(peer)
    _, opened = run_in_thread(conn.channel)
    cid = peer.open_channel()
    ch = opened.get(timeout=WAIT)[1]
    _, closing = run_in_thread(ch.close)
    peer.expect("channel.close")
    # The broker closed the channel at the same moment.
    peer.send_method(cid, "channel.close", reply_code=406, reply_text="PRECONDITION_FAILED - crossed")
    assert peer.expect("channel.close-ok").channel == cid
    assert closing.get(timeout=WAIT) == ("ok", None)
    assert not ch.is_open
    # The id stays taken until the broker answers our own close.
    assert conn.channel_count == 1
    peer.send_method(cid, "channel.close-ok")
    barrier = threading.Event()
    conn.on_blocked.append(lambda c, blocked, reason: barrier.set())
    peer.send_method(0, "connection.unblocked")
    assert barrier.wait(WAIT)
    assert conn.channel_count == 0
    conn.fail(ConnectionLost("test over"))


def test_broker_cancel_and_unknown_consumer(peer: Peer) -> None:
    conn, _ = connect(peer)
    _, opened = run_in_thread(conn.channel)
    cid = peer.open_channel()
    ch = opened.get(timeout=WAIT)[1]
    got: queue.Queue[Any] = queue.Queue()
    cancelled: queue.Queue[str] = queue.Queue()
    _, consuming = run_in_thread(lambda: ch.basic_consume("q", got.put, on_cancel=cancelled.put))
    tag = peer.expect("basic.consume").args["consumer_tag"]
    assert tag
    peer.send_method(cid, "basic.consume-ok", consumer_tag=tag)
    assert consuming.get(timeout=WAIT) == ("ok", tag)
    peer.writer.content(cid, "basic.deliver", {"consumer_tag": tag, "delivery_tag": 1, "exchange": "", "routing_key": "q"},
                        {"message_id": "a"}, b"hello")
    peer.flush()
    delivery = got.get(timeout=WAIT)
    assert (delivery.body, delivery.delivery_tag, delivery.properties) == (b"hello", 1, {"message_id": "a"})
    peer.send_method(cid, "basic.cancel", consumer_tag=tag, nowait=False)
    assert peer.expect("basic.cancel-ok").args["consumer_tag"] == tag
    assert cancelled.get(timeout=WAIT) == tag
    # A delivery for the removed consumer is dropped, not a crash.
    peer.writer.content(cid, "basic.deliver", {"consumer_tag": tag, "delivery_tag": 2}, {}, b"late")
    peer.flush()
    ch.basic_ack(1)
    assert peer.expect("basic.ack").args["delivery_tag"] == 1
    assert got.empty() and conn.is_open and ch.is_open
    conn.fail(ConnectionLost("test over"))
