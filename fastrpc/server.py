"""Servers: worker threads that poll a listener and dispatch what they take.

:class:`MessageHandlingServer` holds the executors; :class:`RPCServer` answers
requests, and the notification listeners (:mod:`fastrpc.notify.listener`)
settle notifications once their endpoints ran.

Executors:
- ``blocking``: one message at a time. With a driver that can (AMQP), the
  connection's reader thread dispatches each request as it arrives, so a
  request reaches the endpoint without any thread handoff; otherwise one
  thread polls and dispatches.
- ``threading``: up to ``executor_thread_pool_size`` workers, each polling the
  listener for one message when it is free and dispatching it on the spot. A
  message goes from the transport straight to the thread that runs it (no
  poller thread in between), and a busy server leaves work on the broker for
  its peers (backpressure): while every worker is busy, nothing more is
  taken than what a worker acked together with its own request (the AMQP
  listener acks a read's requests with one frame, up to 16).
  Workers are started lazily, by a grower thread: once the workers have all
  been busy for ``_GROW_AFTER`` (5 ms: every message taken meanwhile found
  no other worker waiting, and none waits then), it starts one more, then
  two, four... each time that lasted another 5 ms, up to the pool size.
  Handlers blocked on I/O (a database, a nested call) so get the whole pool
  in a few such steps. Messages that the busy workers take soon enough
  do not grow it, nor do workers that are busy running rather than
  waiting (the process used most of a CPU meanwhile), nor workers that
  each take a message every ``_SHORT_HANDLER`` (100 µs) or faster (their
  CPU time can read low while they wait for the GIL or for a CPU the
  broker uses): under a flood of short casts, more threads add no CPU
  under the GIL, only wake-ups and GIL handoffs, and the reads queued
  behind busy workers are acked together (see docs/benchmarks.md). A
  server seeing one call at a time runs one worker (two if a call outlasts
  the 5 ms). A worker whose polls have found
  nothing for ``_IDLE_EXIT`` (60 s) ends while another worker polls: a
  burst of blocked handlers does not leave its threads behind for good, and
  a long handler never leaves new messages without a worker to take them.

When a request is acknowledged is the listener's business: the AMQP
listener acks what a worker takes before it runs (as oslo's poller does), and,
for the blocking executor, a request read alone after it ran and was answered
(as oslo's blocking executor acks at its next poll); several read together are
acked before they run. Each is answered through ``incoming.reply``.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastrpc import metrics, tracing
from fastrpc.dispatcher import RPCAccessPolicyBase, RPCDispatcher
from fastrpc.drivers.base import IncomingMessage, Listener
from fastrpc.exceptions import (
    ExecutorLoadFailure,
    ExpectedException,
    MessageDeliveryFailure,
    MessageUndeliverable,
    NoSuchMethod,
    ServerListenError,
    TransportDriverError,
)
from fastrpc.serializer import Serializer
from fastrpc.target import Target
from fastrpc.transport import Transport

__all__ = ["MessageHandlingServer", "RPCServer", "get_rpc_server", "EXECUTORS"]

LOG = logging.getLogger(__name__)

EXECUTORS = ("blocking", "threading")
# Upper bound of one poll, so the listener loop notices stop() even from a
# driver whose stop() cannot interrupt a poll in progress.
_POLL_TIMEOUT = 0.5
# How long wait() blocks between "still waiting" log lines.
_LOG_AFTER = 30.0
# The threading executor starts one more worker once its workers have all
# been busy this long, every message taken meanwhile finding none waiting...
_GROW_AFTER = 0.005
# ... unless the process used at least this share of one CPU meanwhile: its
# workers were running, not waiting, and under the GIL another thread would
# only share the same CPU. It looks again this much later.
_CPU_BOUND_SHARE = 0.6
_CPU_BOUND_RECHECK = 0.05
# ... or unless the workers took a message per this many seconds each
# meanwhile: handlers that short gain nothing from one more thread under the
# GIL (it only adds a wake-up per message handed to it), and the process's
# CPU time reads low while its threads wait for the GIL or for a CPU the
# broker beside it uses. Handlers blocked on I/O take far longer each.
_SHORT_HANDLER = 0.0001
_process_cpu = time.process_time  # the process's CPU time (a name tests can replace)
# A threading worker whose polls have found nothing this long ends, if
# another worker polls; the grower starts workers again when all are busy.
_IDLE_EXIT = 60.0


class MessageHandlingServer:
    """Takes messages from a listener with the executor's workers and hands
    each to :meth:`_process_incoming`: what RPC and notification servers share.

    Subclasses say what they listen to (:meth:`_create_listener`), what one
    worker takes at a time (:meth:`_poll`: one message by default) and what
    is done with it (:meth:`_process_incoming`).
    """

    # Whether the blocking executor may run messages in the connection's
    # reader thread (see the module's docstring); not for batches.
    dispatch_inline = True

    def __init__(self, transport: Transport, target: Target, dispatcher: Any,
                 executor: str | None = "threading") -> None:
        executor = executor or "threading"
        if executor not in EXECUTORS:
            raise ExecutorLoadFailure(executor, f"executor must be one of {', '.join(EXECUTORS)}")
        self.transport = transport
        self.conf = transport.conf
        self.target = target
        self.dispatcher = dispatcher
        self.executor_type = executor
        self.listener: Listener | None = None
        self._lock = threading.Lock()
        self._started = False
        self._stopped = threading.Event()
        # Workers of the current run; guarded by _workers_lock.
        self._workers: list[threading.Thread] = []
        self._workers_lock = threading.Lock()
        self._spawned = 0  # workers started in this run: the next one's number
        # A token per worker waiting in a poll: whether to start another. A
        # deque: a list that empties and fills again on every poll frees and
        # allocates its storage each time.
        self._idle: collections.deque[None] = collections.deque()
        self._pool_size = 1
        # When the workers were last found all busy (a message taken while
        # none waited), 0.0 once one was seen waiting; the grower thread
        # starts a worker when that lasts _GROW_AFTER.
        self._busy_since = 0.0
        # Messages the workers have taken (an estimate for the grower: two
        # workers may each add one at once and count it once).
        self._taken = 0
        self._grower: threading.Thread | None = None
        self._grower_parked = False
        self._grow_wake = threading.Event()

    # -- lifecycle -----------------------------------------------------

    def start(self, override_pool_size: int | None = None) -> None:
        """Begin taking messages; returns once the server is listening.

        While the broker cannot be reached this waits for it, retrying with
        the reconnect backoff (as oslo's servers do: a service may boot before
        its broker); ServerListenError once the transport is cleaned up.
        """
        with self._lock:
            if self._started:
                LOG.warning("The server has already been started. Ignoring the redundant call to start().")
                return
            if self._workers or self.listener is not None:
                # stop() without wait(): finish the previous run first.
                self._finish()
            try:
                listener = self._create_listener()
            except (TransportDriverError, MessageDeliveryFailure) as exc:
                raise ServerListenError(self.target, exc) from exc
            self.listener = listener
            self._stopped.clear()
            if self.executor_type == "threading":
                self._pool_size = max(1, int(override_pool_size or self.conf.executor_thread_pool_size))
            else:
                self._pool_size = 1
            self._idle = collections.deque()
            self._busy_since = 0.0
            self._spawned = 0
            self._started = True
            inline = getattr(listener, "dispatch_inline", None)
            if self.executor_type == "blocking" and inline is not None and self.dispatch_inline:
                inline(self._process_incoming)
            else:
                with self._workers_lock:
                    self._spawn_locked(listener)
                if self._pool_size > 1:
                    self._grower_parked = False
                    self._grow_wake.clear()
                    self._grower = threading.Thread(target=self._grow, args=(listener,),
                                                    name="fastrpc-worker-grower", daemon=True)
                    self._grower.start()

    def stop(self) -> None:
        """Stop taking new messages; messages being handled still finish (see wait)."""
        with self._lock:
            self._started = False
            self._stopped.set()
            self._grow_wake.set()
            if self.listener is not None:
                self.listener.stop()

    def wait(self) -> None:
        """Block until stop() was called and every taken message was handled.

        Then release the listener's resources.
        """
        while not self._stopped.wait(_LOG_AFTER):
            LOG.warning("wait() is waiting for stop() to be called on the server for %s", self.target)
        with self._lock:
            self._finish()

    def reset(self) -> None:
        """Service reset hook (SIGHUP); nothing to do."""

    def _finish(self) -> None:
        grower, self._grower = self._grower, None
        if grower is not None and grower is not threading.current_thread():
            grower.join()
        # New workers are started only while not stopped, so once stop() was
        # called this list can only shrink to its final content (a worker
        # ending idle takes itself out).
        while True:
            with self._workers_lock:
                workers = list(self._workers)
            current = threading.current_thread()
            for worker in workers:
                if worker is not current:
                    worker.join()
            with self._workers_lock:
                if len(self._workers) == len(workers):
                    self._workers = []
                    break
        idle = getattr(self.listener, "wait_inline_idle", None)
        if idle is not None:
            idle()
        if self.listener is not None:
            try:
                self.listener.cleanup()
            finally:
                self.listener = None

    # -- message flow --------------------------------------------------

    def _create_listener(self) -> Listener:
        """Start listening (called by start())."""
        raise NotImplementedError

    def _poll(self, listener: Listener, timeout: float) -> list[Any]:
        """What a worker takes in one poll: items it hands one by one to
        :meth:`_process_incoming`; ``[]`` when none came in ``timeout``."""
        return listener.poll(timeout=timeout, batch_size=1)

    def _process_incoming(self, incoming: Any) -> None:
        """Handle one item :meth:`_poll` returned."""
        raise NotImplementedError

    def _spawn_locked(self, listener: Listener) -> None:
        """Start one more worker (``_workers_lock`` held)."""
        index = self._spawned
        self._spawned += 1
        if self.executor_type == "threading":
            name = f"fastrpc-worker_{index}"
        else:
            name = f"fastrpc-server-{self.target.topic}"
        worker = threading.Thread(target=self._work, args=(listener,), name=name, daemon=True)
        worker.start()  # RuntimeError when no thread can be started: not counted then
        self._workers.append(worker)

    def _grow(self, listener: Listener) -> None:
        """The threading executor's grower: starts workers while they have
        all been busy for ``_GROW_AFTER`` (one, then twice as many each time
        they are still all busy ``_GROW_AFTER`` later), until the pool is
        full. Parked while some worker waits for messages, and while the
        pool is full (workers that ended idle make room again)."""
        stopped = self._stopped
        wake = self._grow_wake
        monotonic, process_time = time.monotonic, _process_cpu
        more = 1
        watched = 0.0  # the busy stretch (its _busy_since) being watched
        start = cpu_start = 0.0  # when watching began, and the process's CPU time then
        taken_start = 0  # and the messages taken by then
        while not stopped.is_set():
            since = self._busy_since
            if not since:
                more = 1
                wake.clear()
                self._grower_parked = True
                # Else found busy meanwhile, and maybe not woken; or stop()
                # set the wake-up before the clear above.
                if not self._busy_since and not stopped.is_set():
                    wake.wait()
                self._grower_parked = False
                continue
            if since != watched:
                watched, start, cpu_start, taken_start = since, monotonic(), process_time(), self._taken
            now = monotonic()
            left = start + _GROW_AFTER - now
            if left > 0:
                stopped.wait(left)
                continue
            with self._workers_lock:
                if len(self._workers) >= self._pool_size:
                    # Workers set _busy_since again once one ended idle.
                    self._busy_since = 0.0
                    continue
            cpu = process_time()
            if (cpu - cpu_start >= _CPU_BOUND_SHARE * (now - start)
                    or self._taken - taken_start >= len(self._workers) * (now - start) / _SHORT_HANDLER):
                # Running, not waiting (or handlers too short to wait for
                # long): look again later (not every 5 ms, which would be a
                # wake-up and a GIL handoff each time), and grow by one at
                # first if they wait by then.
                more = 1
                stopped.wait(_CPU_BOUND_RECHECK)
                start, cpu_start, taken_start = monotonic(), process_time(), self._taken
                continue
            with self._workers_lock:
                if stopped.is_set():
                    return
                # The pool still has room (only this thread adds workers).
                # Still the same stretch (no worker seen waiting since), and
                # none waits now (else nothing is queued for a new one).
                if self._busy_since != since:
                    continue
                if self._idle:
                    self._busy_since = 0.0
                    continue
                try:
                    for _ in range(min(more, self._pool_size - len(self._workers))):
                        self._spawn_locked(listener)
                except RuntimeError as exc:  # the process cannot start more threads now
                    LOG.warning("Could not start a worker for %s (%s); %d running", self.target, exc,
                                len(self._workers))
                # Until a worker is seen waiting, the stretch goes on: the
                # clock starts again for the next, larger step.
                self._busy_since = monotonic()
            more *= 2

    def _retire(self) -> bool:
        """Take the calling worker out of the pool, unless no other worker
        polls (all others busy: a long handler must not leave new messages
        unread) or the server is stopping: whether it may end."""
        with self._workers_lock:
            if not self._started or len(self._workers) <= 1:
                return False
            me = threading.current_thread()
            # Out first, then look: a worker that stops polling meanwhile
            # either is seen here, or sees room in the pool and wakes the
            # grower.
            self._workers.remove(me)
            if not self._idle:
                self._workers.append(me)
                return False
            return True

    def _work(self, listener: Listener) -> None:
        stopped = self._stopped
        pool_size = self._pool_size
        process = self._process_incoming
        poll: Callable[[float], list[Any]]
        if type(self)._poll is MessageHandlingServer._poll:
            poll = listener.poll  # one message: its default; without _poll's Python frame
        else:
            poll = functools.partial(self._poll, listener)
        # One token per worker inside a poll: appends and pops of a list are
        # atomic, so counting the idle needs no lock on every poll.
        idle = self._idle
        enter, leave = idle.append, idle.pop
        workers = self._workers
        monotonic = time.monotonic
        quiet_since = 0.0  # when this worker's polls began to come back empty
        # _started is False once stop() was called (a plain attribute: read
        # per message, without Event.is_set()'s Python call).
        while self._started:
            enter(None)
            try:
                messages = poll(_POLL_TIMEOUT)
            except Exception:
                leave()
                LOG.exception("Listener poll failed for %s", self.target)
                # Avoid a hot loop against a broken listener.
                stopped.wait(_POLL_TIMEOUT)
                continue
            leave()
            if not messages:
                now = monotonic()
                if not quiet_since:
                    quiet_since = now
                elif now - quiet_since >= _IDLE_EXIT and self._retire():
                    return
                continue
            quiet_since = 0.0
            self._taken += len(messages)
            # The message goes to this thread. If none is left waiting for
            # the next one, the workers are all busy: the grower starts
            # another if that lasts (see _grow).
            if idle:
                if self._busy_since:
                    self._busy_since = 0.0
            elif not self._busy_since and len(workers) < pool_size:
                self._busy_since = monotonic()
                if self._grower_parked:
                    self._grow_wake.set()
            for incoming in messages:
                process(incoming)
        # A listener may have acknowledged more requests than it returned
        # (one ack for several): they still run, as acknowledged ones do
        # (see wait()).
        while True:
            try:
                messages = poll(0)
            except Exception:
                LOG.exception("Listener poll failed for %s", self.target)
                return
            if not messages:
                return
            for incoming in messages:
                process(incoming)


class RPCServer(MessageHandlingServer):
    """Serves the endpoints of one dispatcher on one target."""

    dispatcher: RPCDispatcher

    def _create_listener(self) -> Listener:
        return self.transport._listen(self.target, 1, None)

    def _process_incoming(self, incoming: IncomingMessage) -> None:
        if not incoming.settled_by_listener:
            try:
                incoming.acknowledge()
            except Exception:
                LOG.exception("Can not acknowledge message. Skip processing")
                return

        result: Any = None
        failure: BaseException | None = None
        span = tracing.start_process(incoming) if tracing.on else None
        started = time.monotonic() if metrics.on else None
        try:
            result = self.dispatcher.dispatch(incoming)
        except ExpectedException as exc:
            failure = exc.exc_info[1] or exc
            LOG.debug("Expected exception during message handling (%s)", type(failure).__name__)
        except NoSuchMethod as exc:
            failure = exc
            if exc.method.endswith("_ignore_errors"):
                LOG.debug("Method %s not found", exc.method)
            else:
                LOG.exception("Exception during message handling")
        except Exception as exc:
            failure = exc
            LOG.exception("Exception during message handling")
        if started is not None:
            metrics.handler_done(started, failure)

        try:
            if failure is None:
                incoming.reply(result)
            else:
                incoming.reply(failure=failure)
        except MessageUndeliverable as exc:
            LOG.error("Reply undeliverable (exchange %r, routing key %r): %s",
                      exc.exchange, exc.routing_key, exc.exception)
        except Exception:
            LOG.exception("Can not send reply for message")
        finally:
            if span is not None:
                span.end(failure)
            failure = None


def get_rpc_server(transport: Transport, target: Target, endpoints: list[Any],
                   executor: str | None = "threading", serializer: Serializer | None = None,
                   access_policy: type[RPCAccessPolicyBase] | None = None,
                   server_cls: type[RPCServer] = RPCServer) -> RPCServer:
    """Build an RPC server for ``endpoints`` listening on ``target`` (topic and server)."""
    dispatcher = RPCDispatcher(endpoints, serializer, access_policy,
                               rpc_ping_enabled=bool(getattr(transport.conf, "rpc_ping_enabled", False)))
    return server_cls(transport, target, dispatcher, executor)
