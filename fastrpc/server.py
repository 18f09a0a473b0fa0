"""RPC server: a listener thread feeding the dispatcher through an executor.

Executors:
- ``blocking``: the listener thread dispatches each message itself, one at a time.
- ``threading``: a pool of ``executor_thread_pool_size`` workers; the listener
  only takes a message off the transport when a worker is free, so a busy
  server leaves work on the broker for its peers (backpressure).

Requests are acknowledged before dispatch (at-most-once, as oslo's rabbit
driver does), then answered through ``incoming.reply``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastrpc.dispatcher import RPCAccessPolicyBase, RPCDispatcher
from fastrpc.drivers.base import IncomingMessage, Listener
from fastrpc.exceptions import (
    ExecutorLoadFailure,
    ExpectedException,
    MessageUndeliverable,
    NoSuchMethod,
    ServerListenError,
    TransportDriverError,
)
from fastrpc.serializer import Serializer
from fastrpc.target import Target
from fastrpc.transport import Transport

__all__ = ["RPCServer", "get_rpc_server", "EXECUTORS"]

LOG = logging.getLogger(__name__)

EXECUTORS = ("blocking", "threading")
# Upper bound of one poll, so the listener loop notices stop() even from a
# driver whose stop() cannot interrupt a poll in progress.
_POLL_TIMEOUT = 0.5
# How long wait() blocks between "still waiting" log lines.
_LOG_AFTER = 30.0


class _Slots:
    """Counts free workers; the listener takes messages only for free ones."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._cond = threading.Condition()
        self._closed = False

    def acquire_some(self, most: int, timeout: float) -> int:
        """Wait up to ``timeout`` for at least one slot; take up to ``most``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free > 0 or self._closed, timeout):
                return 0
            if self._closed:
                return 0
            taken = min(most, self._free)
            self._free -= taken
            return taken

    def release(self, count: int = 1) -> None:
        with self._cond:
            self._free += count
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RPCServer:
    """Serves the endpoints of one dispatcher on one target."""

    def __init__(self, transport: Transport, target: Target, dispatcher: RPCDispatcher,
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
        self._poller: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: _Slots | None = None
        self._pool_size = 1

    # -- lifecycle -----------------------------------------------------

    def start(self, override_pool_size: int | None = None) -> None:
        """Begin taking messages; returns once the server is listening."""
        with self._lock:
            if self._started:
                LOG.warning("The server has already been started. Ignoring the redundant call to start().")
                return
            if self._poller is not None:
                # stop() without wait(): finish the previous run first.
                self._finish()
            try:
                listener = self.transport._listen(self.target, 1, None)
            except TransportDriverError as exc:
                raise ServerListenError(self.target, exc) from exc
            self.listener = listener
            self._stopped.clear()
            if self.executor_type == "threading":
                self._pool_size = int(override_pool_size or self.conf.executor_thread_pool_size)
                self._pool = ThreadPoolExecutor(max_workers=self._pool_size,
                                                thread_name_prefix="fastrpc-worker")
            else:
                self._pool_size = 1
                self._pool = None
            self._slots = _Slots(self._pool_size)
            self._poller = threading.Thread(target=self._poll_loop, args=(listener, self._slots),
                                            name=f"fastrpc-server-{self.target.topic}", daemon=True)
            self._started = True
            self._poller.start()

    def stop(self) -> None:
        """Stop taking new messages; messages being handled still finish (see wait)."""
        with self._lock:
            self._started = False
            self._stopped.set()
            if self._slots is not None:
                self._slots.close()
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
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.listener is not None:
            try:
                self.listener.cleanup()
            finally:
                self.listener = None

    # -- message flow --------------------------------------------------

    def _poll_loop(self, listener: Listener, slots: _Slots) -> None:
        while not self._stopped.is_set():
            taken = slots.acquire_some(self._pool_size, _POLL_TIMEOUT)
            if not taken:
                continue
            try:
                messages = listener.poll(timeout=_POLL_TIMEOUT, batch_size=taken)
            except Exception:
                LOG.exception("Listener poll failed for %s", self.target)
                slots.release(taken)
                # Avoid a hot loop against a broken listener.
                self._stopped.wait(_POLL_TIMEOUT)
                continue
            if len(messages) > taken:
                LOG.error("Listener returned %d messages for a batch of %d", len(messages), taken)
            slots.release(max(0, taken - len(messages)))
            for incoming in messages:
                if self._pool is None:
                    try:
                        self._process_incoming(incoming)
                    finally:
                        slots.release()
                else:
                    self._pool.submit(self._run_task, incoming, slots)

    def _run_task(self, incoming: IncomingMessage, slots: _Slots) -> None:
        try:
            self._process_incoming(incoming)
        finally:
            slots.release()

    def _process_incoming(self, incoming: IncomingMessage) -> None:
        method = incoming.message.get("method")
        start = time.monotonic()
        try:
            incoming.acknowledge()
        except Exception:
            LOG.exception("Can not acknowledge message. Skip processing")
            return

        result: Any = None
        failure: BaseException | None = None
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

        try:
            if failure is None:
                incoming.reply(result)
            else:
                incoming.reply(failure=failure)
            LOG.debug("Replied to %s (msg_id %s) in %.3fs", method, incoming.msg_id, time.monotonic() - start)
        except MessageUndeliverable as exc:
            LOG.error("Reply undeliverable (exchange %r, routing key %r): %s",
                      exc.exchange, exc.routing_key, exc.exception)
        except Exception:
            LOG.exception("Can not send reply for message")
        finally:
            failure = None


def get_rpc_server(transport: Transport, target: Target, endpoints: list[Any],
                   executor: str | None = "threading", serializer: Serializer | None = None,
                   access_policy: type[RPCAccessPolicyBase] | None = None,
                   server_cls: type[RPCServer] = RPCServer) -> RPCServer:
    """Build an RPC server for ``endpoints`` listening on ``target`` (topic and server)."""
    dispatcher = RPCDispatcher(endpoints, serializer, access_policy,
                               rpc_ping_enabled=bool(getattr(transport.conf, "rpc_ping_enabled", False)))
    return server_cls(transport, target, dispatcher, executor)
