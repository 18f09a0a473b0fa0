"""The heartbeat timer of one connection: a thread of its own that no
handler, lock holder or slow consumer can starve.

It sends a heartbeat every half interval when nobody is writing, and fails
the connection after two intervals of silence from the broker (counted only
while a thread waits in recv) or of a send that moves no byte. It wakes at
most every second, so it is pure Python only; it sees the connection
through :class:`fastrpc.amqp.interfaces.HeartbeatHost`.
"""

from __future__ import annotations

import time

from fastrpc.amqp.codec import FrameWriter
from fastrpc.amqp.exceptions import ConnectionLost, HeartbeatTimeout
from fastrpc.amqp.interfaces import HeartbeatHost
from fastrpc.amqp.transport import PlainTransport

__all__ = ["run_heartbeats"]


def run_heartbeats(conn: HeartbeatHost, transport: PlainTransport) -> None:
    """The heartbeat thread's body: runs until the connection ends or fails it."""
    interval = float(conn.heartbeat)
    address = conn.params.address
    send_every = interval / 2
    check_every = max(0.05, min(interval / 4, 1.0))
    limit = 2 * interval
    lock = conn.send_lock
    frame = FrameWriter(conn.frame_max)
    frame.heartbeat()
    beat = frame.take()
    next_send = time.monotonic() + send_every
    stop = conn.ended
    while not stop.wait(check_every):
        now = time.monotonic()
        # Silence counts only while the reader waits in recv: time spent
        # in slow callbacks is not the broker's fault.
        since = conn.recv_since
        if since is not None and now - since >= limit:
            conn.fail(HeartbeatTimeout(
                f"no data from {address} for {now - since:.1f}s (heartbeat {conn.heartbeat}s)"
            ))
            return
        # A send stuck behind a broker that stopped reading holds the send
        # lock, and the reader may be queued behind it (acks, close-ok), so
        # the silence check above never fires: judge the send instead.
        sending = transport.send_since
        if sending is not None and now - sending >= limit:
            conn.fail(HeartbeatTimeout(
                f"send to {address} made no progress for {now - sending:.1f}s "
                f"(heartbeat {conn.heartbeat}s)"
            ))
            return
        if now >= next_send:
            next_send = now + send_every
            # While a thread writes, bytes are going out anyway: never
            # write beside it or wait for it (a stuck write would stop
            # this check). Under the lock, nobody starts writing.
            if not conn.writing and lock.acquire(blocking=False):
                try:
                    if not conn.writing:
                        transport.try_send(beat)
                except (OSError, ValueError) as exc:  # ValueError: socket closed meanwhile
                    err = ConnectionLost(f"heartbeat to {address} failed: {exc}")
                    lock.release()
                    conn.fail(err)
                    return
                lock.release()
