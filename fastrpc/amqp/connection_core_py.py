"""The state of a connection and its read side: the read baton, the reader
thread's loop, and dispatching what was read to the channels; and the
per-frame steps of a send that channels call (a spare frame writer,
``send_locked``, declared here and implemented by the subclass).

:class:`ConnectionCore` is the base class of
:class:`fastrpc.amqp.connection.Connection`, which adds connecting, the send
path, channels and closing; it is not used alone. It holds every attribute of
a connection (so its compiled build lays them all out in one struct) and the
methods that run for every frame read, so both classes together run as one
class did: no call per message is added. Connection-level methods on channel
0 (connection.close, blocked) are the subclass's ``_on_connection_method``.

Threads and the baton are described in :mod:`fastrpc.amqp.connection`.
Import this module as ``fastrpc.amqp.connection_core``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.connection_core`` (see
fastrpc._impl); its C layout is fastrpc/_ext/connection_core.pxd.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from threading import get_ident
from time import monotonic  # a module global: no attribute lookup per call
from typing import Any

from fastrpc.amqp import spec
from fastrpc.amqp.codec import FrameWriter
from fastrpc.amqp.exceptions import AMQPError, ConnectionClosed, ConnectionLost, peer_ended, peer_ended_if_reset
from fastrpc.amqp.sync import Lock, Mailbox
from fastrpc.amqp.transport import PlainTransport
from fastrpc.amqp.url import ConnectionParams, make_params

__all__ = ["LONE_RECV_LOWAT", "LONE_RECV_SLICE", "NUDGE", "READER_STEP_ASIDE", "SHARED_HOLD", "SPARE_WRITERS",
           "WAITER_RECV_SLICE", "ChannelEvents", "ConnectionCore"]

LOG = logging.getLogger("fastrpc.amqp")



# While threads wait in wait_for, the reader thread looks this often whether
# they still do (and reads again once they stopped): data nobody asked for
# (a broker close, heartbeats) waits at most this long.
READER_STEP_ASIDE = 0.05
# After two waits overlapped, the reader thread reads for all waiters for at
# least this long.
SHARED_HOLD = 0.05
# A waiting thread's recv returns at least this often, to check its deadline.
WAITER_RECV_SLICE = 1.0
# A lone waiting thread's recv returns only once this many bytes came (the
# socket's low-water mark, SO_RCVLOWAT) or LONE_RECV_SLICE passed. A reply
# (basic.deliver with its header and body) is always longer; the broker's
# confirm of the request (21 bytes) and heartbeats (8) are shorter, so the
# confirm, which comes first, is read with the reply instead of waking the
# caller once more per call. A small frame that does matter meanwhile (a
# nack, another thread's channel.open-ok) waits at most the slice.
LONE_RECV_LOWAT = 32
LONE_RECV_SLICE = 0.05
# Put into a waiting thread's mailbox: the baton was let go, try to take it.
NUDGE = object()
# Spare FrameWriters a connection keeps: about as many as threads encode at
# once, not one per thread that ever sent (each holds a buffer).
SPARE_WRITERS = 4

_Delivery = spec.Delivery
_Method = spec.Method
_Heartbeat = spec.Heartbeat


class ChannelEvents:
    """What the reader thread hands a channel: the base class of
    :class:`fastrpc.amqp.channel_core.ChannelCore`, declared here so that
    the connection's compiled build calls these methods directly (a
    delivery and a method or two per call on each side)."""

    def handle_delivery(self, delivery: spec.Delivery) -> None:
        """A delivery to one of the channel's consumers."""
        raise NotImplementedError

    def handle_method(self, event: spec.Method) -> None:
        """A method frame for the channel."""
        raise NotImplementedError

    def handle_content(self, event: Any) -> None:
        """A content-bearing method other than a delivery."""
        raise NotImplementedError


class ConnectionCore:
    """A connection's state, read side and per-frame send steps (base class of ``Connection``)."""

    def __init__(self, params_or_url: ConnectionParams | str | None = None, **overrides: Any) -> None:
        self.params: ConnectionParams = make_params(params_or_url, **overrides)
        self.server_properties: dict[str, Any] = {}
        self.frame_max: int = self.params.frame_max
        self.channel_max: int = self.params.channel_max
        self.heartbeat: int = 0
        self.on_close: list[Callable[[Any, BaseException], None]] = []
        # called in the reader thread with (connection, blocked, reason)
        self.on_blocked: list[Callable[[Any, bool, str], None]] = []
        self.blocked = False
        self.blocked_reason = ""

        self._transport: PlainTransport | None = None
        self._frame_reader: Any = None
        self._lock = Lock()
        # Frames to write are queued under send_lock (together with the
        # channel state checks that decide whether they may be sent); the
        # flusher writes them out with the lock released (see send_locked).
        self.send_lock = Lock()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flushing = False
        self._hand_over = False  # the flusher wants a waiting sender to take over
        # The thread of the last send, and how many sends in a row before it
        # came from that thread: a connection one thread writes to may send
        # without the flusher's steps (see send_locked).
        self._last_writer: int | None = None
        self._writer_run = 0
        # Notified when the flusher takes the queue, hands over, or fails.
        self._taken = threading.Condition(self.send_lock)
        self._out_waiting = 0  # senders waiting for the queue now in _out
        self._waiting = 0  # senders waiting in _taken (some may be told already)
        self._write_failed: BaseException | None = None
        self._channels: dict[int, Any] = {}  # id -> Channel (a ChannelEvents)
        self._free_ids: list[int] = []
        self._next_id = 1
        self._dead: BaseException | None = None
        # Set when the broker reset or closed the connection: the bytes its
        # TCP had acknowledged by then (see never_received).
        self.lost_acked: int | None = None
        self._dead_event = threading.Event()
        self._closing = False
        self._unblocked = threading.Event()
        self._unblocked.set()
        # Spare FrameWriters (writer, take). A deque: a list whose last item
        # is taken and given back on every send frees and allocates its
        # storage each time.
        self._writers: collections.deque[Any] = collections.deque()
        self._reader_thread: threading.Thread | None = None
        self._reader_ident: int | None = None
        self._heartbeat_thread: threading.Thread | None = None
        # The read baton (see the module docstring) and the mailboxes of the
        # threads sleeping in wait_for while somebody else reads.
        self._baton = Lock()
        self._sleepers: list[Mailbox[Any]] = []
        self._sleepers_lock = Lock()
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
        self._recv_lowat = 1  # the socket's SO_RCVLOWAT
        # Monotonic time since when the reading thread has waited for data
        # (None while nobody is in recv, e.g. while dispatching); a recv that
        # timed out carries its start over to the next one.
        self._recv_since: float | None = None
        self._quiet_since: float | None = None
        # Run by the reading thread once the frames of one read are dispatched
        # (see after_dispatch).
        self._after_dispatch: list[Callable[[], None]] = []
        # The channel the watchdog sends liveness probes on (opened by the first probe).
        self._probe_channel: Any = None
        # Set by every send, cleared when the broker sends anything: frames
        # the broker has not answered (a reply published on a frozen broker's
        # connection would otherwise go unnoticed until the heartbeat timeout).
        self._unanswered = False
        self._one_event = False  # the read being dispatched brought one event


    # ---- sending: what channels call per frame they send -----------------
    # Here rather than in Connection so that a channel, which holds its
    # connection typed as this class in the compiled build, calls them
    # directly instead of looking them up by name on every send.

    def writer(self) -> Any:
        """A FrameWriter for the calling thread alone until it gives it back with :meth:`take`.

        One that raised while encoding is simply not given back (it may hold
        half a frame).
        """
        try:
            return self._writers.pop()  # atomic: no two threads get the same one
        except IndexError:
            return FrameWriter(self.frame_max)

    def take(self, writer: Any) -> bytes:
        """The frames ``writer`` (from :meth:`writer`) holds; it goes back to the spares."""
        if writer is None:  # compiled, the typed call below would not check
            raise TypeError("take() needs a FrameWriter from writer()")
        data: bytes = writer.take()
        if len(self._writers) < SPARE_WRITERS:
            self._writers.append(writer)
        return data

    def stream_position(self) -> int:
        """How many bytes went to the socket so far (called under
        ``send_lock``: frames queued now start at or after it)."""
        transport = self._transport
        return transport.sent if transport is not None else 0

    def send_locked(self, data: bytes, deadline: float | None = None) -> BaseException | None:
        """Send ``data`` (with ``send_lock`` held); the error instead of raising.
        Connection's send path (see ``Connection.send_locked``)."""
        raise NotImplementedError

    # ---- reading -------------------------------------------------------

    def _read_loop(self, leftover: list[Any]) -> None:
        """The reader thread: reads whenever no waiting thread does."""
        baton = self._baton
        if leftover:
            with baton:
                self._reader_ident = get_ident()
                try:
                    self._dispatch(leftover)
                except BaseException as exc:
                    self._reader_ident = None
                    self.fail(self._read_error(exc))
                    return
                self._reader_ident = None
        seen = self._waits
        while self._dead is None:
            waits = self._waits
            if waits != seen and not self._reader_wanted and monotonic() >= self._shared_until:
                # One thread at a time waits for replies and reads them
                # itself: keep out of recv (the baton would be stuck here
                # until data came), and give it to anyone who waits now.
                seen = waits
                self._hand_off()
                self._park()
                continue
            self._reader_wanted = False
            if not baton.acquire(False):
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

    def wait_for(self, mailbox: Mailbox[Any], timeout: float | None) -> Any:
        """The next item a callback of this connection puts into ``mailbox``.

        While nobody else reads and no other thread waits, the calling thread
        reads and dispatches itself. Otherwise it sleeps until the item
        arrives or the baton is handed to it; while several threads wait, the
        reader thread reads for all of them (handing the baton from caller to
        caller would cost a wake-up per reply). Raises ``queue.Empty`` after
        ``timeout`` seconds. Call :meth:`done_waiting` when the mailbox is no
        longer used.
        """
        if mailbox is None:  # compiled, the typed calls below would not check
            raise TypeError("wait_for() needs a Mailbox")
        # Counted without a lock (next() is atomic): a late store of _left
        # can only make waits look shared for a moment, never lose one.
        entered = next(self._entries)
        if entered != self._left:
            self._shared_until = monotonic() + SHARED_HOLD
        self._waits = entered + 1
        baton = self._baton
        deadline = None if timeout is None else monotonic() + timeout
        try:
            while True:
                if not mailbox.empty():
                    item = mailbox.get_nowait()
                    if item is not NUDGE:
                        return item
                    continue
                now = monotonic()
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
                        item = mailbox.get(True, slice_)
                    except queue.Empty:
                        continue
                    if item is not NUDGE:
                        return item
                    continue
                if not baton.acquire(False):
                    # Somebody else reads. Register first, then look once more:
                    # the reader lets go either before our second look or after
                    # our registration (and then hands the baton to a sleeper).
                    with self._sleepers_lock:
                        self._sleepers.append(mailbox)
                    if not baton.acquire(False):
                        try:
                            item = mailbox.get(True, remaining)
                        finally:
                            self._forget_sleeper(mailbox)
                        if item is not NUDGE:
                            return item
                        continue
                    self._forget_sleeper(mailbox)
                if self._sleepers:
                    self._read_batch(WAITER_RECV_SLICE if remaining is None else min(remaining, WAITER_RECV_SLICE))
                else:
                    self._read_batch(LONE_RECV_SLICE if remaining is None else min(remaining, LONE_RECV_SLICE),
                                     LONE_RECV_LOWAT)
                if self._sleepers:
                    self._pass_baton()
        finally:
            self._left = next(self._exits) + 1

    def _pass_baton(self) -> None:
        """After a waiting thread read while others sleep: make sure they are read for."""
        if monotonic() < self._shared_until:
            self.need_reader()
        else:
            self._hand_off()

    def done_waiting(self, mailbox: Mailbox[Any]) -> None:
        """Release ``mailbox``: a baton handed to it meanwhile goes to another sleeper."""
        if mailbox is None:  # compiled, the typed calls below would not check
            raise TypeError("done_waiting() needs a Mailbox")
        nudged = False
        while not mailbox.empty():
            if mailbox.get_nowait() is NUDGE:
                nudged = True
        if nudged:
            self._hand_off()

    def _forget_sleeper(self, mailbox: Mailbox[Any]) -> None:
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

    def _read_batch(self, recv_timeout: float, lowat: int = 1) -> None:
        """Read once and dispatch what came (baton held; let go here).

        ``recv_timeout``: how long recv may wait for data; 0 for ever.
        ``lowat``: the bytes recv waits for before that (see LONE_RECV_LOWAT).
        """
        transport = self._transport
        assert transport is not None
        self._reader_ident = get_ident()
        error: BaseException | None = None
        try:
            # Socket options set only when they change: none per call while
            # calls come one at a time.
            if recv_timeout != self._recv_timeout:
                transport.set_recv_timeout(recv_timeout)
                self._recv_timeout = recv_timeout
            if lowat != self._recv_lowat:
                transport.set_recv_lowat(lowat)
                self._recv_lowat = lowat
            since = self._quiet_since
            self._recv_since = since if since is not None else monotonic()
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
                error = peer_ended(ConnectionLost(f"connection to {self.params.address} closed by the broker "
                                                  "without connection.close"))
            elif data:
                self._unanswered = False
                self._dispatch(self._frame_reader.feed(data))
        except BaseException as exc:
            error = self._read_error(exc)
        finally:
            self._reader_ident = None
            self._baton.release()
        if error is not None:
            self.fail(error)
            self._hand_off()  # sleepers must not wait for a read that never comes

    def _read_error(self, exc: BaseException) -> BaseException:
        """What a failure while reading means for the connection."""
        address = self.params.address
        error: BaseException
        if isinstance(exc, spec.FrameError):
            error = ConnectionLost(f"invalid data from {address}: {exc}")
            error.__cause__ = exc
        elif isinstance(exc, OSError):
            error = peer_ended_if_reset(ConnectionLost(f"connection to {address} lost: {exc.strerror or exc}"), exc)
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
        if self._one_event:
            # Nothing else comes with this read: run fn now, without the list
            # (the usual case of a consumer that gathers a read's deliveries).
            try:
                fn()
            except Exception:
                LOG.exception("after_dispatch function failed")
            return
        self._after_dispatch.append(fn)

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
        """A method on channel 0 (connection.close, blocked, ...): see Connection."""
        raise NotImplementedError

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

    # ---- shutdown ------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
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
            if getattr(exc, "peer_ended", False):
                self.lost_acked = transport.acked()  # read before the socket closes
            transport.shutdown()
        clean = isinstance(exc, ConnectionClosed) and exc.reply_code == spec.REPLY_SUCCESS and self._closing
        if clean:
            LOG.debug("connection to %s closed", self.params.address)
        elif self.on_close:
            # Its owner is told (on_close) and reports the loss in its own
            # words, once: one line per event, not one per layer.
            LOG.debug("connection to %s failed: %s", self.params.address, exc)
        else:
            LOG.warning("connection to %s failed: %s", self.params.address, exc)
        for ch in channels:
            ch.connection_failed(exc)
        for callback in list(self.on_close):
            try:
                callback(self, exc)
            except Exception:
                LOG.exception("on_close callback failed")
