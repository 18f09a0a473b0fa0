"""One AMQP 0-9-1 connection: handshake, reader thread, watchdog, sends.

Threads and locks:
- the caller's thread runs the handshake, then starts one reader thread and
  one watchdog thread (heartbeats, liveness probes);
- reading is a role, the *baton*: whoever holds it blocks in recv (GIL
  released), feeds the FrameReader and hands every event of the batch to its
  channel, in stream order, then lets go. The reader thread holds it when
  nobody else wants it. A thread waiting for a reply (:meth:`wait_for`) takes
  it while it is free and reads its own reply: the reply then wakes the one
  thread that wants it instead of the reader thread and then that one (a
  cross-CPU wake-up costs tens of microseconds on a virtual machine). While
  such waits keep coming, the reader thread stays out of recv so the baton
  stays free for them; whoever lets the baton go passes it on to a waiting
  thread, so someone always reads while anyone waits;
- every send is a pre-encoded buffer (encoded before any lock, in a
  FrameWriter the sending thread borrows from the connection's few spare
  ones: :meth:`writer` and :meth:`take`), queued under ``send_lock``
  together with the channel-state checks that decide whether it may go out.
  One thread at a time, the flusher, writes: the first sender that finds
  nobody writing, with the lock released; senders that come meanwhile queue
  and return, and it joins their bytes into its next sendall (bounded, see
  :meth:`send_locked`);
- ``_lock`` guards connection state and channel id allocation only, and is
  never held while doing I/O or calling user code.

A connection's state and its read side (the baton, the reader thread's loop,
dispatching to channels, failing) are its base class
:class:`fastrpc.amqp.connection_core.ConnectionCore`; this module adds
connecting, the send path, channels, connection-level methods and closing.
The handshake is :func:`fastrpc.amqp.handshake.handshake` and the watchdog
thread (heartbeats, liveness probes) runs
:func:`fastrpc.amqp.heartbeat.watch_connection`, both pure Python.
Channels use only what :class:`fastrpc.amqp.interfaces.ChannelHost` declares
(``send_lock``, ``send_locked``, ...), the watchdog what ``HeartbeatHost`` does. Import this module as
``fastrpc.amqp.connection``: it runs as it is, or compiled unchanged into
``fastrpc._ext.connection`` (see fastrpc._impl).
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable
from threading import get_ident
from time import monotonic  # a module global: no attribute lookup per call
from typing import Any

from fastrpc.amqp import spec
from fastrpc.amqp.channel import Channel
from fastrpc.amqp.codec import FrameReader, FrameWriter
from fastrpc.amqp.connection_core import READER_STEP_ASIDE, ConnectionCore
from fastrpc.amqp.exceptions import (
    AMQPError,
    ChannelsExhausted,
    ConnectionClosed,
    ConnectionLost,
    HandshakeTimeout,
    HeartbeatTimeout,
    fresh_error,
    peer_ended_if_reset,
)
from fastrpc.amqp.handshake import handshake
from fastrpc.amqp.heartbeat import ProbeChannel, dead_after, watch_connection
from fastrpc.amqp.transport import SEND_CHUNK, open_transport

__all__ = ["READER_STEP_ASIDE", "BlockedCallback", "CloseCallback", "Connection"]

LOG = logging.getLogger("fastrpc.amqp")

CloseCallback = Callable[["Connection", BaseException], None]
BlockedCallback = Callable[["Connection", bool, str], None]
# Batches of other senders a writing thread takes before it makes them wait
# (and hands over to one of them), and the bytes queued behind a write past
# which senders wait for it.
FLUSH_BATCHES = 2
OUT_LIMIT = 1 << 20
# Sends in a row from one thread after which its small writes go straight to
# the socket (see send_locked).
ONE_WRITER_RUN = 8


class Connection(ConnectionCore):
    """An AMQP connection shared by many channels and many threads."""

    # ---- public state --------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._dead is None and not self._closing

    @property
    def closed_reason(self) -> BaseException | None:
        """Why the connection ended (None while open or never opened)."""
        return self._dead

    def __repr__(self) -> str:
        if self._dead is not None:
            state = "closed"
        elif self._transport is None:
            state = "new"
        else:
            state = "open"
        return f"<Connection {self.params} {state} channels={len(self._channels)}>"

    def __enter__(self) -> Connection:
        if self._transport is None:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- connecting ----------------------------------------------------

    def connect(self, deadline: float | None = None) -> Connection:
        """Open the socket, run the AMQP handshake and start the I/O threads.

        TCP connect, TLS and AMQP handshakes together take at most
        ``params.connect_timeout``, and never run past ``deadline`` (a
        monotonic time: the caller's own limit).
        """
        if self._transport is not None:
            raise AMQPError("connection already opened (create a new Connection to reconnect)")
        params = self.params
        timeout = params.connect_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - monotonic())
            if timeout <= 0:
                raise HandshakeTimeout(f"no time left to connect to {params.address}")
        deadline = monotonic() + timeout
        try:
            transport = open_transport(params, timeout)
        except TimeoutError:
            raise HandshakeTimeout(
                f"TLS handshake with {params.address} not completed within {timeout:g}s"
            ) from None
        reader = FrameReader(spec.DEFAULT_FRAME_MAX)
        try:
            done = handshake(transport, params, deadline, reader, FrameWriter(spec.DEFAULT_FRAME_MAX))
            transport.make_blocking()
        except BaseException:
            transport.shutdown()
            raise
        self.server_properties = done.server_properties
        self.channel_max = done.channel_max
        self.frame_max = done.frame_max
        self.heartbeat = done.heartbeat
        self._frame_reader = reader
        leftover = done.leftover
        self._transport = transport
        stuck_after = dead_after(self.heartbeat, params)
        if stuck_after:
            # A send that moves no byte for that long means the broker
            # stopped reading: fail it rather than hold the send lock forever.
            transport.set_send_timeout(stuck_after)
        self._reader_thread = threading.Thread(
            target=self._read_loop, args=(leftover,), name=f"fastrpc-reader-{params.address}", daemon=True
        )
        self._reader_thread.start()
        if stuck_after:
            self._heartbeat_thread = threading.Thread(
                target=watch_connection, args=(self, transport), name=f"fastrpc-watchdog-{params.address}",
                daemon=True
            )
            self._heartbeat_thread.start()
        LOG.debug("connected to %s (frame_max=%d, channel_max=%d, heartbeat=%d)",
                  params.address, self.frame_max, self.channel_max, self.heartbeat)
        return self

    # ---- sending -------------------------------------------------------

    def send_locked(self, data: bytes, deadline: float | None = None) -> BaseException | None:
        """Send ``data`` after everything queued before it; return the error instead of raising.

        The caller holds ``send_lock``; it may be released and taken again
        here, so nothing checked under it may be relied on after the call.

        While another thread writes (the flusher), ``data`` is queued and the
        caller returns: the flusher takes everything queued for its next
        write, so concurrent senders share one send (and the broker reads one
        segment instead of one each). Otherwise the calling thread becomes
        the flusher: it writes with the lock released, then what others
        queued. (When one thread has made the last ONE_WRITER_RUN sends, its
        small write that the socket buffer has room for goes out at once,
        under the lock: it cannot block.) It takes at most FLUSH_BATCHES
        such batches freely; after that, senders wait until their bytes are
        taken, and once the queue holds a waiting sender's bytes the flusher
        hands over to it: no thread (the reader, say) writes for others for
        long. Senders also wait while more than OUT_LIMIT bytes are queued,
        so a broker that stops reading holds them up instead of memory
        growing. ``deadline``: give up
        waiting then (a close must not wait behind a stuck write for ever).
        """
        failed = self._dead or self._write_failed
        if failed is not None:
            return fresh_error(failed)
        writer = get_ident()
        if writer == self._last_writer:
            if self._writer_run < ONE_WRITER_RUN:  # counted no further: a C int in the compiled build
                self._writer_run += 1
        else:
            self._last_writer = writer
            self._writer_run = 0
        self._unanswered = True
        transport = self._transport
        if transport is None:
            return ConnectionLost("connection is not open")
        if self._flushing:
            queued = self._out
            queued.append(data)
            self._out_bytes += len(data)
            if not self._hand_over and self._out_bytes <= OUT_LIMIT:
                return None
            err = self._wait_taken(queued, deadline)
            if err is not None or self._out is not queued:
                return err
            # The flusher handed this queue over: write it here.
            data = self._take()
        elif self._out:
            # A flusher handed over and its waiting senders have not woken
            # yet: their bytes are older, so they go first.
            self._out.append(data)
            data = self._take()
        elif self._writer_run >= ONE_WRITER_RUN and len(data) <= SEND_CHUNK:
            # Nobody writes, nothing waits, and one thread has been sending
            # alone: a small write that fits in the socket buffer goes now,
            # under the lock (it cannot block). Where several threads send,
            # the flusher's steps let them queue instead of waiting here,
            # and let others take the GIL while the bytes go out.
            try:
                n = transport.send_now(data)
            except (OSError, ValueError):
                n = 0  # the write below meets the error again and reports it
            if n == len(data):
                return None
            if n:
                data = data[n:]  # at most SEND_CHUNK copied, and only when the buffer filled
        self._flushing = True
        lock = self.send_lock
        lock.release()
        held = False
        done = False
        free = FLUSH_BATCHES  # batches this thread may still take before handing over
        err = None
        try:
            while True:
                try:
                    transport.sendall(data)
                except (OSError, ValueError) as exc:  # ValueError: socket closed meanwhile
                    err = self._write_error(exc)
                lock.acquire()
                held = True
                if err is not None or not self._out:
                    done = True
                    return err
                if free:
                    free -= 1
                elif self._out_waiting:
                    done = True  # a waiting sender takes over (notified below)
                    return None
                else:
                    # Only senders that did not wait queued this: take it,
                    # and make the next ones wait, so one of them can take over.
                    self._hand_over = True
                data = self._take()
                lock.release()
                held = False
        finally:
            if not done:
                # Interrupted (KeyboardInterrupt, say): the stream may end
                # inside a frame, so the connection cannot go on.
                err = ConnectionLost(f"send to {self.params.address} interrupted")
                if not held:
                    self.fail(err)
                    lock.acquire()
            self._flushing = False
            self._hand_over = False
            if err is not None:
                # What was queued goes nowhere; its senders learn why.
                self._write_failed = err
                self._out = []
                self._out_bytes = 0
                self._out_waiting = 0
            if self._waiting:
                self._taken.notify_all()  # taken, failed, or one of them takes over

    def _take(self) -> bytes:
        """Everything queued, as one buffer (``send_lock`` held); its waiting senders are told."""
        queued = self._out
        self._out = []
        self._out_bytes = 0
        if self._out_waiting:
            self._out_waiting = 0
            self._taken.notify_all()
        return queued[0] if len(queued) == 1 else b"".join(queued)

    def _wait_taken(self, queued: list[bytes], deadline: float | None) -> BaseException | None:
        """Wait (``send_lock`` held) until the flusher took ``queued``, handed it over or failed."""
        self._out_waiting += 1
        self._waiting += 1
        counted = True
        try:
            while self._out is queued and self._flushing and self._dead is None:
                if deadline is None:
                    self._taken.wait()
                    continue
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return ConnectionLost(f"send to {self.params.address} waited in vain behind a write in "
                                          "progress (broker not reading)")
                self._taken.wait(remaining)
            counted = False  # taken, handed over or failed: the count was reset or is moot
        finally:
            self._waiting -= 1
            if counted and self._out is queued:
                # Timed out or interrupted: the flusher must not hand over to us.
                self._out_waiting -= 1
        failed = self._dead or self._write_failed
        return fresh_error(failed) if failed is not None else None

    def _write_error(self, exc: OSError | ValueError) -> BaseException:
        """What a failed sendall means for the caller."""
        if self._dead is not None:
            return fresh_error(self._dead)
        if isinstance(exc, BlockingIOError):
            # SO_SNDTIMEO expired: not one byte went out for the whole limit.
            return HeartbeatTimeout(f"send to {self.params.address} made no progress (broker not reading)")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        err = ConnectionLost(f"send to {self.params.address} failed: {reason}")
        return peer_ended_if_reset(err, exc)

    def send_failed(self, err: BaseException) -> None:
        """A send returned ``err``: a lost connection fails it for everyone."""
        if self._dead is None and isinstance(err, ConnectionLost):
            self.fail(err)

    def send(self, data: bytes) -> None:
        """Write pre-encoded frames as one sendall under the send lock."""
        with self.send_lock:
            err = self.send_locked(data)
        if err is not None:
            self.send_failed(err)
            raise err

    # ---- channels ------------------------------------------------------

    def channel(self, timeout: float | None = None) -> Channel:
        """Open a new channel (ids of closed channels are reused)."""
        ch = self._new_channel(Channel)
        ch.open(timeout)
        return ch

    def _new_channel(self, cls: Any) -> Any:
        """A channel of class ``cls`` under a free id, not yet opened."""
        self.check_open()
        with self._lock:
            if self._free_ids:
                cid = heapq.heappop(self._free_ids)
            elif self._next_id <= self.channel_max:
                cid = self._next_id
                self._next_id += 1
            else:
                raise ChannelsExhausted(f"all {self.channel_max} channels of {self.params.address} are in use")
            ch = cls(self, cid)
            self._channels[cid] = ch
        return ch

    # ---- liveness (what the watchdog sees, interfaces.HeartbeatHost) ----

    def busy(self) -> bool:
        """Whether anything waits on the broker: a synchronous method's
        reply, a publisher confirm, a consumer's deliveries, or frames sent
        since the broker last said anything (a reply, a cast: nothing answers
        them, so a frozen broker would otherwise go unnoticed)."""
        if self._unanswered:
            return True
        for ch in list(self._channels.values()):
            if ch._waiter is not None or ch._pending or (ch._consumers and ch._closed is None):
                return True
        return False

    def probe_frames(self) -> bytes:
        """Frames of one liveness probe: a basic.qos that changes nothing, on
        a channel of its own (opened in the same write the first time), whose
        reply proves the broker still reads and answers."""
        ch = self._probe_channel
        frames = b""
        if ch is None or ch._closed is not None:
            ch = self._probe_channel = self._new_channel(ProbeChannel)
            frames = ch._encode("channel.open", {"out_of_band": ""})
        return frames + ch._encode("basic.qos", {"prefetch_size": 0, "prefetch_count": 0, "global_": False})

    def release_channel(self, ch: Channel) -> None:
        """Give a channel id back once the broker has confirmed the close."""
        with self._lock:
            if self._channels.get(ch.channel_id) is ch:
                del self._channels[ch.channel_id]
                if self._dead is None:
                    heapq.heappush(self._free_ids, ch.channel_id)

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def pending_confirms(self) -> int:
        """Publishes on this connection the broker has not confirmed yet."""
        return sum(ch.pending_confirms for ch in list(self._channels.values()))

    def never_received(self, position: int) -> bool:
        """Whether frames that started at ``position`` (:meth:`stream_position`)
        certainly never reached the broker: it reset or closed the connection
        and its TCP had acknowledged none of their bytes. A broker reads
        only what its TCP received, and acknowledges that at the latest with
        the next frame it sends; a broker that stopped answering (frozen, cut
        off) says nothing, and neither does this."""
        acked = self.lost_acked
        return acked is not None and acked <= position

    def check_open(self) -> None:
        """Raise why the connection cannot be used (lost, not opened, closing)."""
        if self._dead is not None:
            raise fresh_error(self._dead)
        if self._transport is None:
            raise ConnectionLost("connection is not open (call connect() first)")
        if self._closing:
            raise ConnectionClosed(spec.REPLY_SUCCESS, "connection is closing")

    def in_reader_thread(self) -> bool:
        """Whether the calling thread holds the read baton (runs callbacks of this connection)."""
        return get_ident() == self._reader_ident

    def _on_connection_method(self, event: spec.Method) -> None:
        name = event.name
        args = event.args
        if name == "connection.close":
            w = self.writer()
            w.method(0, "connection.close-ok")
            with self.send_lock:
                self.send_locked(self.take(w))
            raise ConnectionClosed(
                args.get("reply_code", 0), args.get("reply_text", ""), args.get("class_id", 0), args.get("method_id", 0)
            )
        if name == "connection.close-ok":
            self.fail(ConnectionClosed(spec.REPLY_SUCCESS, "connection closed by client"))
            raise ConnectionClosed(spec.REPLY_SUCCESS, "connection closed by client")
        if name == "connection.blocked":
            self.blocked_reason = str(args.get("reason", ""))
            self.blocked = True
            self._unblocked.clear()
            LOG.warning("broker %s blocked publishing: %s", self.params.address, self.blocked_reason)
        elif name == "connection.unblocked":
            self.blocked = False
            self.blocked_reason = ""
            self._unblocked.set()
            LOG.info("broker %s unblocked publishing", self.params.address)
        else:
            LOG.warning("unexpected %s from %s ignored", name, self.params.address)
            return
        for callback in list(self.on_blocked):
            try:
                callback(self, self.blocked, self.blocked_reason)
            except Exception:
                LOG.exception("on_blocked callback failed")

    def wait_unblocked(self, timeout: float) -> bool:
        """Wait until the broker lifts connection.blocked (or the connection dies)."""
        return self._unblocked.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Close politely (connection.close, wait for close-ok) and stop the threads.

        Bounded by ``timeout`` (plus a short grace for the threads to end):
        a send lock held by a stuck publisher or a broker that stopped reading
        ends the connection instead of blocking here.
        """
        deadline = monotonic() + timeout
        with self._lock:
            if self._transport is None or self._dead is not None or self._closing:
                already = True
            else:
                already = False
                self._closing = True
        if not already:
            w = self.writer()
            w.method(0, "connection.close", reply_code=spec.REPLY_SUCCESS, reply_text="Normal shutdown")
            self._send_close(self.take(w), deadline)
            self.need_reader()  # close-ok must be read
            if not self.in_reader_thread():
                self._dead_event.wait(max(deadline - monotonic(), 0.0))
            self.fail(ConnectionClosed(spec.REPLY_SUCCESS, "connection closed by client"))
        elif self._transport is not None and not self.in_reader_thread():
            self._dead_event.wait(max(deadline - monotonic(), 0.0))
        current = threading.current_thread()
        for thread in (self._reader_thread, self._heartbeat_thread):
            if thread is not None and thread is not current:
                # The socket is shut down by now, so the threads end promptly.
                thread.join(max(deadline - monotonic(), 1.0))

    def _send_close(self, data: bytes, deadline: float) -> None:
        """Send connection.close, giving up (and failing the connection) at ``deadline``."""
        lock = self.send_lock
        if not lock.acquire(True, max(deadline - monotonic(), 0.0)):
            self.fail(ConnectionLost(f"close of {self.params.address}: the send lock stayed busy (broker not reading)"))
            return
        try:
            transport = self._transport
            if transport is not None and self._dead is None and not self._flushing:
                try:
                    # This thread will write (nobody else does while we hold
                    # the lock), and the connection ends after this frame.
                    transport.set_send_timeout(max(deadline - monotonic(), 0.001))
                except OSError:
                    pass
            err = self.send_locked(data, deadline)
        finally:
            lock.release()
        if err is not None:
            self.send_failed(err)
