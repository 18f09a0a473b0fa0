"""Heartbeats, a frozen broker and memory alarms, on a private private_node.

These tests freeze (SIGSTOP) or alarm the broker, so they use their own node
instead of the shared ``broker`` fixture.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import (
    ConnectionLost,
    HeartbeatTimeout,
    OperationTimeout,
    ProbeTimeout,
    PublishBlocked,
)
from fastrpc.testing.node import RabbitNode

pytestmark = pytest.mark.twins

WAIT = 15.0


def test_silent_broker_detected_by_heartbeat(private_node: RabbitNode) -> None:
    """With liveness probes off, heartbeats alone: dead after the negotiated
    timeout (two of the broker's heartbeats missed), as AMQP 0-9-1 says."""
    interval = 2
    c = Connection(private_node.url, heartbeat=interval, probe_after=0)
    c.connect()
    assert c.heartbeat == interval
    ch = c.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    ch.confirm_select()
    closed: queue.Queue[tuple[float, BaseException]] = queue.Queue()
    c.on_close.append(lambda conn, exc: closed.put((time.monotonic(), exc)))
    private_node.pause()
    try:
        paused_at = time.monotonic()
        # The reader idles in recv since it handled the broker's last bytes
        # (None: it is handling some right now).
        idle_since = c._recv_since or time.monotonic()
        future = ch.basic_publish("", qname, b"never confirmed")
        waiting: queue.Queue[BaseException | None] = queue.Queue()

        def sync_call() -> None:
            try:
                ch.queue_declare("", exclusive=True, timeout=120)
                waiting.put(None)
            except BaseException as exc:
                waiting.put(exc)

        threading.Thread(target=sync_call, daemon=True).start()
        died_at, exc = closed.get(timeout=interval + WAIT)
        assert isinstance(exc, HeartbeatTimeout)
        assert not isinstance(exc, ProbeTimeout)
        assert isinstance(exc, ConnectionLost)
        # Never before the timeout's silence; soon after (check period
        # plus scheduling margin).
        assert died_at - idle_since >= interval
        assert died_at - paused_at <= interval + 2.5
        sync_exc = waiting.get(timeout=2)
        assert isinstance(sync_exc, HeartbeatTimeout)
        assert future is not None and isinstance(future.exception(timeout=2), HeartbeatTimeout)
        assert not c.is_open
        with pytest.raises(HeartbeatTimeout):
            ch.basic_publish("", qname, b"x")
    finally:
        private_node.resume()
    c.close()
    # The broker recovers and serves new connections.
    with Connection(private_node.url) as again:
        assert again.channel().queue_declare("", exclusive=True)[0]


def test_slow_consumer_is_not_a_dead_broker(private_node: RabbitNode) -> None:
    """A callback that blocks the reader for 3 heartbeat intervals: our
    heartbeats keep flowing (the broker does not drop us) and the broker's
    queued heartbeats are not counted as silence."""
    with Connection(private_node.url, heartbeat=1) as c:
        assert c.heartbeat == 1
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        done = threading.Event()

        def slow(delivery: spec.Delivery) -> None:
            time.sleep(3.0)  # simulated slow work, not synchronisation
            done.set()

        ch.basic_consume(qname, slow, no_ack=True)
        ch.basic_publish("", qname, b"slow")
        assert done.wait(WAIT)
        assert c.is_open
        # Still fully usable after the stall.
        assert ch.queue_declare(qname, passive=True)[0] == qname
        assert c.is_open


def test_idle_connection_kept_alive_by_heartbeats(private_node: RabbitNode) -> None:
    with Connection(private_node.url, heartbeat=1) as c:
        closed = threading.Event()
        c.on_close.append(lambda conn, exc: closed.set())
        # The broker drops clients silent for 2 intervals; wait 4.
        assert not closed.wait(4.0)
        assert c.is_open
        assert c.channel().queue_declare("", exclusive=True)[0]


def test_operation_timeout_on_frozen_broker(private_node: RabbitNode) -> None:
    with Connection(private_node.url, heartbeat=60) as c:
        ch = c.channel()
        private_node.pause()
        try:
            started = time.monotonic()
            with pytest.raises(OperationTimeout):
                ch.queue_declare("", exclusive=True, timeout=0.5)
            assert time.monotonic() - started < 5
            assert not ch.is_open
        finally:
            private_node.resume()
        assert c.channel().queue_declare("", exclusive=True)[0]


def test_memory_alarm_blocks_publishers(private_node: RabbitNode) -> None:
    with Connection(private_node.url, blocked_timeout=1.0) as c:
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        states: queue.Queue[bool] = queue.Queue()
        c.on_blocked.append(lambda conn, blocked, reason: states.put(blocked))
        private_node.set_memory_watermark(0.00001)
        try:
            # RabbitMQ blocks a connection once it publishes during the alarm.
            ch.basic_publish("", qname, b"triggers the block")
            assert states.get(timeout=WAIT) is True
            assert c.blocked
            started = time.monotonic()
            with pytest.raises(PublishBlocked):
                ch.basic_publish("", qname, b"refused")
            assert time.monotonic() - started >= 0.9
        finally:
            private_node.set_memory_watermark(0.4)
        assert states.get(timeout=WAIT) is False
        assert not c.blocked
        ch.basic_publish("", qname, b"after")
        got = [ch.basic_get(qname, no_ack=True) for _ in range(2)]
        assert [g.body for g in got if g is not None] == [b"triggers the block", b"after"]


def test_stuck_sender_does_not_hide_a_dead_broker(private_node: RabbitNode) -> None:
    """A publisher blocked in sendall (frozen broker, full socket buffers)
    holds the send lock; the heartbeat timer must still detect the silence
    and free the publisher with the failure."""
    interval = 2
    c = Connection(private_node.url, heartbeat=interval, probe_after=0)
    c.connect()
    ch = c.channel()
    qname = ch.queue_declare("", exclusive=True)[0]
    closed: queue.Queue[BaseException] = queue.Queue()
    c.on_close.append(lambda conn, exc: closed.put(exc))
    publisher_error: queue.Queue[BaseException | None] = queue.Queue()
    big = b"z" * (1024 * 1024)

    def flood() -> None:
        try:
            for _ in range(500):  # far more than any socket buffer holds
                ch.basic_publish("", qname, big)
            publisher_error.put(None)
        except BaseException as exc:
            publisher_error.put(exc)

    private_node.pause()
    try:
        started = time.monotonic()
        threading.Thread(target=flood, daemon=True).start()
        exc = closed.get(timeout=interval + WAIT)
        assert isinstance(exc, HeartbeatTimeout)
        assert time.monotonic() - started <= interval + 2.5
        err = publisher_error.get(timeout=5)
        assert isinstance(err, ConnectionLost)
    finally:
        private_node.resume()
    c.close()
