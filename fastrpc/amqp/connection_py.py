"""One AMQP 0-9-1 connection: handshake, reader thread, heartbeat timer, sends.

Threads and locks:
- the caller's thread runs the handshake, then starts one reader thread and
  (when heartbeats are negotiated) one heartbeat thread;
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
  FrameWriter owned by the sending thread), queued under ``send_lock``
  together with the channel-state checks that decide whether it may go out.
  One thread at a time, the flusher, writes: the first sender that finds
  nobody writing, with the lock released; senders that come meanwhile queue
  and return, and it joins their bytes into its next sendall (bounded, see
  :meth:`send_locked`);
- ``_lock`` guards connection state and channel id allocation only, and is
  never held while doing I/O or calling user code.

The handshake is :func:`fastrpc.amqp.handshake.handshake` and the heartbeat
thread runs :func:`fastrpc.amqp.heartbeat.run_heartbeats`, both pure Python.
Channels use only what :class:`fastrpc.amqp.interfaces.ChannelHost` declares
(``send_lock``, ``send_locked``, ...), the timer what ``HeartbeatHost`` does. Import this module as
``fastrpc.amqp.connection``: it runs as it is, or compiled unchanged into
``fastrpc._ext.connection`` (see fastrpc._impl).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from fastrpc.amqp import spec
from fastrpc.amqp.channel import Channel
from fastrpc.amqp.codec import FrameReader, FrameWriter
from fastrpc.amqp.exceptions import (
    AMQPError,
    ChannelsExhausted,
    ConnectionClosed,
    ConnectionLost,
    HandshakeTimeout,
    HeartbeatTimeout,
    fresh_error,
)
from fastrpc.amqp.handshake import CAPABILITIES, handshake
from fastrpc.amqp.heartbeat import run_heartbeats
from fastrpc.amqp.transport import PlainTransport, open_transport
from fastrpc.amqp.url import ConnectionParams, make_params

__all__ = ["CAPABILITIES", "BlockedCallback", "CloseCallback", "Connection"]

LOG = logging.getLogger("fastrpc.amqp")

CloseCallback = Callable[["Connection", BaseException], None]
BlockedCallback = Callable[["Connection", bool, str], None]

# While threads wait in wait_for, the reader thread looks this often whether
# they still do (and reads again once they stopped): data nobody asked for
# (a broker close, heartbeats) waits at most this long.
READER_STEP_ASIDE = 0.05
# After two waits overlapped, the reader thread reads for all waiters for at
# least this long.
SHARED_HOLD = 0.05
# A waiting thread's recv returns at least this often, to check its deadline.
WAITER_RECV_SLICE = 1.0
# Batches of other senders a writing thread takes before it makes them wait
# (and hands over to one of them), and the bytes queued behind a write past
# which senders wait for it.
FLUSH_BATCHES = 2
OUT_LIMIT = 1 << 20
# Put into a waiting thread's mailbox: the baton was let go, try to take it.
NUDGE = object()

_Delivery = spec.Delivery
_Method = spec.Method
_Heartbeat = spec.Heartbeat


class Connection:
    """An AMQP connection shared by many channels and many threads."""

    def __init__(self, params_or_url: ConnectionParams | str | None = None, **overrides: Any) -> None:
        self.params: ConnectionParams = make_params(params_or_url, **overrides)
        self.server_properties: dict[str, Any] = {}
        self.frame_max: int = self.params.frame_max
        self.channel_max: int = self.params.channel_max
        self.heartbeat: int = 0
        self.on_close: list[CloseCallback] = []
        # called in the reader thread with (connection, blocked, reason)
        self.on_blocked: list[BlockedCallback] = []
        self.blocked = False
        self.blocked_reason = ""

        self._transport: PlainTransport | None = None
        self._frame_reader: Any = None
        self._lock = threading.Lock()
        # Frames to write are queued under _send_lock (together with the
        # channel state checks that decide whether they may be sent); the
        # flusher writes them out with the lock released (see send_locked).
        self._send_lock = threading.Lock()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flushing = False
        self._hand_over = False  # the flusher wants a waiting sender to take over
        # Notified when the flusher takes the queue, hands over, or fails.
        self._taken = threading.Condition(self._send_lock)
        self._out_waiting = 0  # senders waiting for the queue now in _out
        self._waiting = 0  # senders waiting in _taken (some may be told already)
        self._write_failed: BaseException | None = None
        self._channels: dict[int, Channel] = {}
        self._free_ids: list[int] = []
        self._next_id = 1
        self._dead: BaseException | None = None
        self._dead_event = threading.Event()
        self._closing = False
        self._unblocked = threading.Event()
        self._unblocked.set()
        self._local = threading.local()
        self._reader_thread: threading.Thread | None = None
        self._reader_ident: int | None = None
        self._heartbeat_thread: threading.Thread | None = None
        # The read baton (see the module docstring) and the mailboxes of the
        # threads sleeping in wait_for while somebody else reads.
        self._baton = threading.Lock()
        self._sleepers: list[queue.SimpleQueue[Any]] = []
        self._sleepers_lock = threading.Lock()
        self._waits = 0  # wait_for calls so far: the reader thread steps aside while it moves
        # Threads in wait_for now: entries minus _left.
        self._entries = itertools.count()
        self._exits = itertools.count()
        self._left = 0
        self._reader_parked = False
        # Until then several threads wait at once: the reader thread reads for all.
        self._shared_until = 0.0
        self._reader_wanted = False  # a thread needs the reader thread to read now
        self._reader_wake = threading.Event()
        self._recv_timeout = 0.0  # the socket's SO_RCVTIMEO (0: none)
        # Monotonic time since when the reading thread has waited for data
        # (None while nobody is in recv, e.g. while dispatching); a recv that
        # timed out carries its start over to the next one.
        self._recv_since: float | None = None
        self._quiet_since: float | None = None
        # Run by the reading thread once the frames of one read are dispatched
        # (see after_dispatch).
        self._after_dispatch: list[Callable[[], None]] = []
        self._one_event = False  # the read being dispatched brought one event

    # ---- public state --------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._dead is None and not self._closing

    @property
    def closed_reason(self) -> BaseException | None:
        """Why the connection ended (None while open or never opened)."""
        return self._dead

    @property
    def send_lock(self) -> threading.Lock:
        """The lock under which frames are queued (see :meth:`send_locked`)."""
        return self._send_lock

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

    def connect(self) -> Connection:
        """Open the socket, run the AMQP handshake and start the I/O threads."""
        if self._transport is not None:
            raise AMQPError("connection already opened (create a new Connection to reconnect)")
        params = self.params
        deadline = time.monotonic() + params.connect_timeout
        try:
            transport = open_transport(params, params.connect_timeout)
        except TimeoutError:
            raise HandshakeTimeout(
                f"TLS handshake with {params.address} not completed within {params.connect_timeout:g}s"
            ) from None
        reader = FrameReader(spec.DEFAULT_FRAME_MAX)
        try:
            done = handshake(transport, params, deadline, reader, FrameWriter(spec.DEFAULT_FRAME_MAX))
            transport.sock.settimeout(None)
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
        if self.heartbeat:
            # A send that moves no byte for two intervals means the broker
            # stopped reading: fail it rather than hold the send lock forever.
            transport.set_send_timeout(2 * self.heartbeat)
        self._reader_thread = threading.Thread(
            target=self._read_loop, args=(leftover,), name=f"fastrpc-reader-{params.address}", daemon=True
        )
        self._reader_thread.start()
        if self.heartbeat:
            self._heartbeat_thread = threading.Thread(
                target=run_heartbeats, args=(self, transport), name=f"fastrpc-heartbeat-{params.address}", daemon=True
            )
            self._heartbeat_thread.start()
        LOG.debug("connected to %s (frame_max=%d, channel_max=%d, heartbeat=%d)",
                  params.address, self.frame_max, self.channel_max, self.heartbeat)
        return self

    # ---- sending -------------------------------------------------------

    def writer(self) -> Any:
        """The calling thread's FrameWriter for this connection (created on first use)."""
        try:
            return self._local.writer
        except AttributeError:
            w = self._local.writer = FrameWriter(self.frame_max)
            return w

    def send_locked(self, data: bytes, deadline: float | None = None) -> BaseException | None:
        """Send ``data`` after everything queued before it; return the error instead of raising.

        The caller holds ``send_lock``; it may be released and taken again
        here, so nothing checked under it may be relied on after the call.

        While another thread writes (the flusher), ``data`` is queued and the
        caller returns: the flusher takes everything queued for its next
        write, so concurrent senders share one send (and the broker reads one
        segment instead of one each). Otherwise the calling thread becomes
        the flusher: it writes with the lock released, then what others
        queued. It takes at most FLUSH_BATCHES such batches freely; after
        that, senders wait until their bytes are taken, and once the queue
        holds a waiting sender's bytes the flusher hands over to it: no thread
        (the reader, say) writes for others for long. Senders also wait while
        more than OUT_LIMIT bytes are queued, so a broker that stops reading
        holds them up instead of memory growing. ``deadline``: give up
        waiting then (a close must not wait behind a stuck write for ever).
        """
        failed = self._dead or self._write_failed
        if failed is not None:
            return fresh_error(failed)
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
        self._flushing = True
        lock = self._send_lock
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
                    self._fail(err)
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
        """Everything queued, as one buffer (``_send_lock`` held); its waiting senders are told."""
        queued = self._out
        self._out = []
        self._out_bytes = 0
        if self._out_waiting:
            self._out_waiting = 0
            self._taken.notify_all()
        return queued[0] if len(queued) == 1 else b"".join(queued)

    def _wait_taken(self, queued: list[bytes], deadline: float | None) -> BaseException | None:
        """Wait (``_send_lock`` held) until the flusher took ``queued``, handed it over or failed."""
        self._out_waiting += 1
        self._waiting += 1
        counted = True
        try:
            while self._out is queued and self._flushing and self._dead is None:
                if deadline is None:
                    self._taken.wait()
                    continue
                remaining = deadline - time.monotonic()
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
        return ConnectionLost(f"send to {self.params.address} failed: {reason}")

    def send_failed(self, err: BaseException) -> None:
        """A send returned ``err``: a lost connection fails it for everyone."""
        if self._dead is None and isinstance(err, ConnectionLost):
            self._fail(err)

    def send(self, data: bytes) -> None:
        """Write pre-encoded frames as one sendall under the send lock."""
        with self._send_lock:
            err = self.send_locked(data)
        if err is not None:
            self.send_failed(err)
            raise err

    # ---- channels ------------------------------------------------------

    def channel(self, timeout: float | None = None) -> Channel:
        """Open a new channel (ids of closed channels are reused)."""
        self.check_open()
        with self._lock:
            if self._free_ids:
                cid = heapq.heappop(self._free_ids)
            elif self._next_id <= self.channel_max:
                cid = self._next_id
                self._next_id += 1
            else:
                raise ChannelsExhausted(f"all {self.channel_max} channels of {self.params.address} are in use")
            ch = Channel(self, cid)
            self._channels[cid] = ch
        ch.open(timeout)
        return ch

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
        return threading.get_ident() == self._reader_ident

    # ---- reading -------------------------------------------------------

    def _read_loop(self, leftover: list[Any]) -> None:
        """The reader thread: reads whenever no waiting thread does."""
        baton = self._baton
        if leftover:
            with baton:
                self._reader_ident = threading.get_ident()
                try:
                    self._dispatch(leftover)
                except BaseException as exc:
                    self._reader_ident = None
                    self._fail(self._read_error(exc))
                    return
                self._reader_ident = None
        seen = self._waits
        while self._dead is None:
            waits = self._waits
            if waits != seen and not self._reader_wanted and time.monotonic() >= self._shared_until:
                # One thread at a time waits for replies and reads them
                # itself: keep out of recv (the baton would be stuck here
                # until data came), and give it to anyone who waits now.
                seen = waits
                self._hand_off()
                self._park()
                continue
            self._reader_wanted = False
            if not baton.acquire(blocking=False):
                seen = self._waits
                self._park()
                continue
            self._read_batch(0.0)

    def _park(self) -> None:
        """The reader thread waits READER_STEP_ASIDE, or until need_reader()."""
        self._reader_parked = True
        # Checked after announcing the park: need_reader() either sees the
        # flag (and wakes us) or set its wish before this look.
        if not self._reader_wanted:
            self._reader_wake.wait(READER_STEP_ASIDE)
        self._reader_parked = False
        self._reader_wake.clear()

    def need_reader(self) -> None:
        """Make sure somebody reads soon: the caller is about to wait for
        something (a method's reply, a confirm) without reading itself."""
        self._reader_wanted = True
        if self._reader_parked:
            self._reader_wake.set()

    def wait_for(self, mailbox: queue.SimpleQueue[Any], timeout: float | None) -> Any:
        """The next item a callback of this connection puts into ``mailbox``.

        While nobody else reads and no other thread waits, the calling thread
        reads and dispatches itself. Otherwise it sleeps until the item
        arrives or the baton is handed to it; while several threads wait, the
        reader thread reads for all of them (handing the baton from caller to
        caller would cost a wake-up per reply). Raises ``queue.Empty`` after
        ``timeout`` seconds. Call :meth:`done_waiting` when the mailbox is no
        longer used.
        """
        # Counted without a lock (next() is atomic): a late store of _left
        # can only make waits look shared for a moment, never lose one.
        entered = next(self._entries)
        if entered != self._left:
            self._shared_until = time.monotonic() + SHARED_HOLD
        self._waits = entered + 1
        baton = self._baton
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if not mailbox.empty():
                    item = mailbox.get_nowait()
                    if item is not NUDGE:
                        return item
                    continue
                now = time.monotonic()
                remaining = None if deadline is None else deadline - now
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                if now < self._shared_until or self._dead is not None:
                    # Several threads wait: the reader thread reads for all (and
                    # does not stand aside meanwhile). Look again after a while,
                    # in case the waits have become one-at-a-time again.
                    if not baton.locked():
                        self.need_reader()
                    slice_ = SHARED_HOLD if remaining is None else min(remaining, SHARED_HOLD)
                    try:
                        item = mailbox.get(timeout=slice_)
                    except queue.Empty:
                        continue
                    if item is not NUDGE:
                        return item
                    continue
                if not baton.acquire(blocking=False):
                    # Somebody else reads. Register first, then look once more:
                    # the reader lets go either before our second look or after
                    # our registration (and then hands the baton to a sleeper).
                    with self._sleepers_lock:
                        self._sleepers.append(mailbox)
                    if not baton.acquire(blocking=False):
                        try:
                            item = mailbox.get(timeout=remaining)
                        finally:
                            self._forget_sleeper(mailbox)
                        if item is not NUDGE:
                            return item
                        continue
                    self._forget_sleeper(mailbox)
                self._read_batch(WAITER_RECV_SLICE if remaining is None else min(remaining, WAITER_RECV_SLICE))
                if self._sleepers:
                    self._pass_baton()
        finally:
            self._left = next(self._exits) + 1

    def _pass_baton(self) -> None:
        """After a waiting thread read while others sleep: make sure they are read for."""
        if time.monotonic() < self._shared_until:
            self.need_reader()
        else:
            self._hand_off()

    def done_waiting(self, mailbox: queue.SimpleQueue[Any]) -> None:
        """Release ``mailbox``: a baton handed to it meanwhile goes to another sleeper."""
        nudged = False
        while not mailbox.empty():
            if mailbox.get_nowait() is NUDGE:
                nudged = True
        if nudged:
            self._hand_off()

    def _forget_sleeper(self, mailbox: queue.SimpleQueue[Any]) -> None:
        with self._sleepers_lock:
            try:
                self._sleepers.remove(mailbox)
            except ValueError:
                pass  # already handed the baton (a NUDGE is in the mailbox)

    def _hand_off(self) -> None:
        """The baton is free: wake one sleeping waiter to take it."""
        if self._sleepers:
            with self._sleepers_lock:
                mailbox = self._sleepers.pop() if self._sleepers else None
            if mailbox is not None:
                mailbox.put(NUDGE)

    def _read_batch(self, recv_timeout: float) -> None:
        """Read once and dispatch what came (baton held; let go here).

        ``recv_timeout``: how long recv may wait for data; 0 for ever.
        """
        transport = self._transport
        assert transport is not None
        self._reader_ident = threading.get_ident()
        error: BaseException | None = None
        try:
            if recv_timeout != self._recv_timeout:
                transport.set_recv_timeout(recv_timeout)
                self._recv_timeout = recv_timeout
            since = self._quiet_since
            self._recv_since = since if since is not None else time.monotonic()
            try:
                data = transport.recv()
            except BlockingIOError:  # the receive timeout passed: still quiet
                self._quiet_since = self._recv_since
                data = b""
            else:
                self._quiet_since = None
            finally:
                self._recv_since = None
            if data is None:
                error = ConnectionLost(f"connection to {self.params.address} closed by the broker without "
                                       "connection.close")
            elif data:
                self._dispatch(self._frame_reader.feed(data))
        except BaseException as exc:
            error = self._read_error(exc)
        finally:
            self._reader_ident = None
            self._baton.release()
        if error is not None:
            self._fail(error)
            self._hand_off()  # sleepers must not wait for a read that never comes

    def _read_error(self, exc: BaseException) -> BaseException:
        """What a failure while reading means for the connection."""
        address = self.params.address
        error: BaseException
        if isinstance(exc, spec.FrameError):
            error = ConnectionLost(f"invalid data from {address}: {exc}")
            error.__cause__ = exc
        elif isinstance(exc, OSError):
            error = ConnectionLost(f"connection to {address} lost: {exc.strerror or exc}")
        elif isinstance(exc, AMQPError):
            error = exc
        else:  # a bug must not leave waiters hanging
            LOG.error("reading from %s crashed", address, exc_info=exc)
            error = ConnectionLost(f"reading from {address} crashed: {type(exc).__name__}")
            error.__cause__ = exc
        return error

    def after_dispatch(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` once the frames of the current read are all dispatched.

        For callbacks of this connection (they run in the reading thread):
        a consumer can gather the deliveries of one read and settle them with
        one frame. ``fn`` runs in the same thread, in the order registered;
        an exception from it is logged. When the read brought only the event
        being dispatched, ``fn`` runs at once, before this returns.
        """
        self._after_dispatch.append(fn)
        if self._one_event:
            self._run_after_dispatch()

    def _run_after_dispatch(self) -> None:
        after = self._after_dispatch
        while after:
            pending = after.copy()
            after.clear()
            for fn in pending:
                try:
                    fn()
                except Exception:
                    LOG.exception("after_dispatch function failed")

    def _dispatch(self, events: list[Any]) -> None:
        channels = self._channels
        self._one_event = len(events) == 1
        for event in events:
            kind = type(event)
            if kind is _Delivery:
                ch = channels.get(event.channel)
                if ch is not None:
                    ch.handle_delivery(event)
                else:
                    LOG.debug("delivery for unknown channel %d dropped", event.channel)
            elif kind is _Method:
                if event.channel == 0:
                    self._on_connection_method(event)
                else:
                    ch = channels.get(event.channel)
                    if ch is not None:
                        ch.handle_method(event)
                    else:
                        LOG.debug("%s for unknown channel %d ignored", event.name, event.channel)
            elif kind is _Heartbeat:
                pass
            else:
                ch = channels.get(event.channel)
                if ch is not None:
                    ch.handle_content(event)
                else:
                    LOG.debug("%s for unknown channel %d ignored", kind.__name__, event.channel)
        # Not reached when an event raised: the connection is failing then,
        # and what the functions would settle goes back to the broker's queues.
        if self._after_dispatch:
            self._run_after_dispatch()

    def _on_connection_method(self, event: spec.Method) -> None:
        name = event.name
        args = event.args
        if name == "connection.close":
            w = self.writer()
            w.method(0, "connection.close-ok")
            with self._send_lock:
                self.send_locked(w.take())
            raise ConnectionClosed(
                args.get("reply_code", 0), args.get("reply_text", ""), args.get("class_id", 0), args.get("method_id", 0)
            )
        if name == "connection.close-ok":
            self._fail(ConnectionClosed(spec.REPLY_SUCCESS, "connection closed by client"))
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

    # ---- what the heartbeat timer sees (interfaces.HeartbeatHost) -----

    @property
    def ended(self) -> threading.Event:
        """Set once the connection is dead (closed or failed)."""
        return self._dead_event

    @property
    def recv_since(self) -> float | None:
        """Monotonic time since when the reading thread waits in recv (None: nobody does)."""
        return self._recv_since

    @property
    def writing(self) -> bool:
        """Whether a thread is writing queued frames now (the flusher)."""
        return self._flushing

    def fail(self, exc: BaseException) -> None:
        """End the connection with ``exc``: close the socket, fail every waiter (once)."""
        self._fail(exc)

    # ---- shutdown ------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """Mark the connection dead once: close the socket, fail every waiter."""
        with self._lock:
            if self._dead is not None:
                return
            self._dead = exc
            channels = list(self._channels.values())
            self._channels.clear()
            self._free_ids.clear()
        self._dead_event.set()
        self._reader_wake.set()  # a reader thread standing aside ends now
        self._unblocked.set()  # blocked publishers wake up and see the failure
        transport = self._transport
        if transport is not None:
            transport.shutdown()
        clean = isinstance(exc, ConnectionClosed) and exc.reply_code == spec.REPLY_SUCCESS and self._closing
        if clean:
            LOG.debug("connection to %s closed", self.params.address)
        else:
            LOG.warning("connection to %s failed: %s", self.params.address, exc)
        for ch in channels:
            ch.connection_failed(exc)
        for callback in list(self.on_close):
            try:
                callback(self, exc)
            except Exception:
                LOG.exception("on_close callback failed")

    def close(self, timeout: float = 5.0) -> None:
        """Close politely (connection.close, wait for close-ok) and stop the threads.

        Bounded by ``timeout`` (plus a short grace for the threads to end):
        a send lock held by a stuck publisher or a broker that stopped reading
        ends the connection instead of blocking here.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._transport is None or self._dead is not None or self._closing:
                already = True
            else:
                already = False
                self._closing = True
        if not already:
            w = self.writer()
            w.method(0, "connection.close", reply_code=spec.REPLY_SUCCESS, reply_text="Normal shutdown")
            self._send_close(w.take(), deadline)
            self.need_reader()  # close-ok must be read
            if not self.in_reader_thread():
                self._dead_event.wait(max(deadline - time.monotonic(), 0.0))
            self._fail(ConnectionClosed(spec.REPLY_SUCCESS, "connection closed by client"))
        elif self._transport is not None and not self.in_reader_thread():
            self._dead_event.wait(max(deadline - time.monotonic(), 0.0))
        current = threading.current_thread()
        for thread in (self._reader_thread, self._heartbeat_thread):
            if thread is not None and thread is not current:
                # The socket is shut down by now, so the threads end promptly.
                thread.join(max(deadline - time.monotonic(), 1.0))

    def _send_close(self, data: bytes, deadline: float) -> None:
        """Send connection.close, giving up (and failing the connection) at ``deadline``."""
        lock = self._send_lock
        if not lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            self._fail(ConnectionLost(f"close of {self.params.address}: the send lock stayed busy (broker not reading)"))
            return
        try:
            transport = self._transport
            if transport is not None and self._dead is None and not self._flushing:
                try:
                    # This thread will write (nobody else does while we hold
                    # the lock), and the connection ends after this frame.
                    transport.set_send_timeout(max(deadline - time.monotonic(), 0.001))
                except OSError:
                    pass
            err = self.send_locked(data, deadline)
        finally:
            lock.release()
        if err is not None:
            self.send_failed(err)
