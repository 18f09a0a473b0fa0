"""The watchdog of one connection: a thread of its own that no handler, lock
holder or slow consumer can starve, and that decides when a silent broker is
dead.

Two rules end a connection:

* heartbeats, as AMQP 0-9-1 says them: a heartbeat goes out every half of
  the negotiated interval when nobody is writing, and a broker silent for
  the whole interval (two of its heartbeats missed) is dead;
* the liveness probe, whatever the heartbeat setting (oslo's default of 60 s
  would leave a frozen broker alone for a minute): while something waits on
  the broker (a reply, a confirm, a consumer's deliveries, see
  ``Connection.busy``) and it has been silent for ``probe_after`` seconds,
  a basic.qos on a channel of its own asks whether it still answers; no byte
  back within ``probe_timeout`` means it does not.

Silence counts only while a thread waits in recv (time spent in slow
callbacks is not the broker's fault), and a send that moves no byte for as
long as either rule allows is judged the same way. The thread wakes at most
every half second, so it is pure Python only; it sees the connection through
:class:`fastrpc.amqp.interfaces.HeartbeatHost`.
"""

from __future__ import annotations

import time
from typing import Any

from fastrpc.amqp.channel import Channel
from fastrpc.amqp.codec import FrameWriter
from fastrpc.amqp.exceptions import ConnectionClosed, ConnectionLost, HeartbeatTimeout, ProbeTimeout
from fastrpc.amqp.interfaces import HeartbeatHost
from fastrpc.amqp.transport import PlainTransport
from fastrpc.amqp.url import ConnectionParams

__all__ = ["ProbeChannel", "dead_after", "watch_connection"]

# The probe's channel answers only what the probe asks.
_PROBE_REPLIES = frozenset({"channel.open-ok", "basic.qos-ok"})


class ProbeChannel(Channel):
    """The channel liveness probes go out on: its replies only prove that the
    broker answers, so they are dropped without a waiter."""

    def handle_method(self, event: Any) -> None:
        if event.name in _PROBE_REPLIES:
            return
        super().handle_method(event)


def dead_after(heartbeat: int, params: ConnectionParams) -> float:
    """The longest silence (or stuck send) a connection survives while busy;
    0 when neither heartbeats nor probes are on."""
    limits = [float(heartbeat)] if heartbeat else []
    if params.probe_after:
        limits.append(params.probe_after + params.probe_timeout)
    return min(limits) if limits else 0.0


def watch_connection(conn: HeartbeatHost, transport: PlainTransport) -> None:
    """The watchdog thread's body: runs until the connection ends or fails it."""
    params = conn.params
    address = params.address
    interval = float(conn.heartbeat)
    probe_after, probe_timeout = params.probe_after, params.probe_timeout
    send_every = interval / 2
    check_every = min(0.5, interval / 4) if interval else 0.5
    stuck_after = dead_after(conn.heartbeat, params)
    beat = b""
    if interval:
        frame = FrameWriter(conn.frame_max)
        frame.heartbeat()
        beat = frame.take()
        del frame  # its buffer would otherwise live as long as the connection
    next_beat = time.monotonic() + send_every
    probe_sent: float | None = None  # when the unanswered probe went out
    probe = b""  # a probe's frames not yet written (they may open its channel)
    stop = conn.ended
    while not stop.wait(check_every):
        now = time.monotonic()
        since = conn.recv_since
        if since is not None and interval and now - since >= interval:
            conn.fail(HeartbeatTimeout(
                f"no data from {address} for {now - since:.1f}s (heartbeat {conn.heartbeat}s)"
            ))
            return
        # A send stuck behind a broker that stopped reading holds the send
        # lock, and the reader may be queued behind it (acks, close-ok), so
        # the silence checks never fire: judge the send instead.
        sending = transport.send_since
        if sending is not None and now - sending >= stuck_after:
            conn.fail(HeartbeatTimeout(
                f"send to {address} made no progress for {now - sending:.1f}s"
            ))
            return
        if probe_sent is not None:
            if since is None or since > probe_sent:
                probe_sent = None  # bytes came (or the reader is busy with them)
            elif now - probe_sent >= probe_timeout:
                conn.fail(ProbeTimeout(
                    f"{address} did not answer a liveness probe within {probe_timeout:g}s "
                    f"(silent for {now - since:.1f}s)"
                ))
                return
        elif (probe_after and since is not None and now - since >= probe_after and not conn.blocked
              and conn.busy()):
            # While the broker blocks publishers it may stop reading: no probe then.
            try:
                probe = probe or conn.probe_frames()
                if _try_send(conn, transport, probe):
                    probe, probe_sent = b"", now
            except ConnectionClosed:
                # Closing or closed already: close() is bounded on its own
                # and a dead connection has its reason.
                return
            except (OSError, ValueError, ConnectionLost) as exc:
                conn.fail(ConnectionLost(f"liveness probe to {address} failed: {exc}"))
                return
        if interval and now >= next_beat:
            next_beat = now + send_every
            try:
                _try_send(conn, transport, beat)
            except (OSError, ValueError) as exc:  # ValueError: socket closed meanwhile
                conn.fail(ConnectionLost(f"heartbeat to {address} failed: {exc}"))
                return


def _try_send(conn: HeartbeatHost, transport: PlainTransport, data: bytes) -> bool:
    """Write ``data`` if nobody writes and the socket has room now; never wait.

    While a thread writes, bytes are going out anyway: never write beside it
    or wait for it (a stuck write would stop the watchdog). Under the lock,
    nobody starts writing.
    """
    lock = conn.send_lock
    if conn.writing or not lock.acquire(blocking=False):
        return False
    try:
        return not conn.writing and transport.try_send(data)
    finally:
        lock.release()
