"""Liveness probes: a frozen broker found dead within seconds whatever the
heartbeat says, while something waits on it; and the kernel's bounds on a
peer that stops acknowledging (TCP_USER_TIMEOUT, keepalive).

These tests freeze (SIGSTOP) their own node, not the shared ``broker``.
"""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest

from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import HandshakeTimeout, HeartbeatTimeout, ProbeTimeout
from fastrpc.amqp.url import ConnectionParams
from fastrpc.testing.node import RabbitNode

pytestmark = pytest.mark.twins

WAIT = 15.0
MARGIN = 2.0  # watchdog period plus scheduling on a loaded 2-core host


def _closed_queue(c: Connection) -> queue.Queue[tuple[float, BaseException]]:
    closed: queue.Queue[tuple[float, BaseException]] = queue.Queue()
    c.on_close.append(lambda conn, exc: closed.put((time.monotonic(), exc)))
    return closed


def test_frozen_broker_found_dead_by_probe_despite_long_heartbeat(private_node: RabbitNode) -> None:
    """heartbeat=60 (oslo's default): a consumer's connection to a frozen
    broker ends within probe_after + probe_timeout, not after a minute."""
    c = Connection(private_node.url, heartbeat=60, probe_after=1.0, probe_timeout=1.5).connect()
    try:
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        ch.basic_consume(qname, lambda delivery: None, no_ack=True)
        assert c.busy()
        closed = _closed_queue(c)
        private_node.pause()
        try:
            paused_at = time.monotonic()
            died_at, exc = closed.get(timeout=WAIT)
            assert isinstance(exc, ProbeTimeout)
            assert isinstance(exc, HeartbeatTimeout)  # handled like any dead peer
            assert died_at - paused_at <= 1.0 + 1.5 + MARGIN
            assert not c.is_open
        finally:
            private_node.resume()
    finally:
        c.close()


def test_frozen_broker_fails_a_waiting_sync_method_by_probe(private_node: RabbitNode) -> None:
    c = Connection(private_node.url, heartbeat=60, probe_after=1.0, probe_timeout=1.5).connect()
    try:
        ch = c.channel()
        result: queue.Queue[BaseException | None] = queue.Queue()
        private_node.pause()
        try:
            started = time.monotonic()

            def declare() -> None:
                try:
                    ch.queue_declare("", exclusive=True, timeout=120)
                    result.put(None)
                except BaseException as exc:
                    result.put(exc)

            threading.Thread(target=declare, daemon=True).start()
            exc = result.get(timeout=WAIT)
            assert isinstance(exc, ProbeTimeout)
            assert time.monotonic() - started <= 1.0 + 1.5 + MARGIN
        finally:
            private_node.resume()
    finally:
        c.close()


def test_idle_connection_is_not_probed(private_node: RabbitNode) -> None:
    """Nothing waits on the broker: a pause longer than the probe's bounds
    ends nothing (heartbeats off here), and the connection works after."""
    with Connection(private_node.url, heartbeat=0, probe_after=0.5, probe_timeout=0.5) as c:
        ch = c.channel()
        assert not c.busy()
        closed = _closed_queue(c)
        private_node.pause()
        try:
            with pytest.raises(queue.Empty):
                closed.get(timeout=3.0)  # six probe periods
        finally:
            private_node.resume()
        assert c.is_open
        assert ch.queue_declare("", exclusive=True)[0]


def test_quiet_consumer_of_a_live_broker_stays_connected(private_node: RabbitNode) -> None:
    """Probes of a live broker are answered: a consumer with nothing to
    consume keeps its connection over many probe periods, and the probe
    channel is one channel, not one per probe."""
    with Connection(private_node.url, heartbeat=0, probe_after=0.3, probe_timeout=1.0) as c:
        ch = c.channel()
        qname = ch.queue_declare("", exclusive=True)[0]
        got: queue.Queue[bytes] = queue.Queue()
        ch.basic_consume(qname, lambda d: got.put(bytes(d.body)), no_ack=True)
        closed = _closed_queue(c)
        with pytest.raises(queue.Empty):
            closed.get(timeout=3.0)  # ten probe periods
        assert c.is_open
        assert c.channel_count == 2  # the consumer's and the probes'
        ch.basic_publish("", qname, b"still here")
        assert got.get(timeout=WAIT) == b"still here"


def test_probes_off_leave_only_heartbeats(private_node: RabbitNode) -> None:
    params = ConnectionParams(port=private_node.port, heartbeat=0, probe_after=0)
    with Connection(params) as c:
        assert c._heartbeat_thread is None  # no watchdog: nothing to watch for


def test_socket_bounds_for_a_peer_that_stops_acknowledging(private_node: RabbitNode) -> None:
    with Connection(private_node.url, tcp_user_timeout=8) as c:
        sock = c._transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 8000
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 4
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


def test_connect_never_runs_past_the_callers_deadline() -> None:
    """A listener that accepts but never answers the AMQP header: the
    handshake gives up at the caller's deadline, not at connect_timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        port = server.getsockname()[1]
        c = Connection(ConnectionParams(port=port, connect_timeout=30))
        started = time.monotonic()
        with pytest.raises(HandshakeTimeout):
            c.connect(deadline=started + 0.5)
        assert time.monotonic() - started < 0.5 + MARGIN
        with pytest.raises(HandshakeTimeout, match="no time left"):
            Connection(ConnectionParams(port=port)).connect(deadline=time.monotonic() - 1)
    finally:
        server.close()
