"""Notification listeners: servers that consume notification queues and
settle each notification once its endpoints ran.

They run on the RPC server's executors (:class:`fastrpc.server.MessageHandlingServer`):
``threading`` (workers that each take a notification, or a batch, and run it)
or ``blocking`` (one at a time; with the AMQP driver a single notification
runs in the connection's reader thread). For each target and each priority
some endpoint handles, the listener consumes ``<topic>.<priority>`` on the
target's exchange (the control exchange by default), or one queue named after
``pool`` bound for them all: listeners of one pool share its notifications,
each pool (and the default queues) gets its own copy.

A notification is acknowledged after its endpoints ran, or requeued when
one answered ``NotificationResult.REQUEUE`` (or raised) and the listener
was made with ``allow_requeue=True``; without it, it is acknowledged. A
listener that dies before that leaves the notification to the broker, which
delivers it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from fastrpc.drivers.base import IncomingMessage, Listener
from fastrpc.exceptions import InvalidTarget
from fastrpc.notify.dispatcher import BatchNotificationDispatcher, NotificationDispatcher, NotificationResult
from fastrpc.notify.transport import NotificationTransport
from fastrpc.serializer import Serializer
from fastrpc.server import MessageHandlingServer
from fastrpc.target import Target
from fastrpc.transport import Transport

__all__ = ["BatchNotificationServer", "NotificationServer", "get_batch_notification_listener",
           "get_notification_listener"]

LOG = logging.getLogger(__name__)

# Longest single wait while a batch fills, so that stop() is noticed (the
# server's own poll bound).
_GATHER_STEP = 0.5


class NotificationServer(MessageHandlingServer):
    """Listens for the notifications of ``targets`` and runs them one at a time."""

    dispatcher: NotificationDispatcher

    def __init__(self, transport: Transport, targets: Iterable[Target], dispatcher: NotificationDispatcher,
                 executor: str | None = "threading", allow_requeue: bool = False, pool: str | None = None,
                 batch_size: int = 1, batch_timeout: float | None = None) -> None:
        targets = list(targets)
        if not targets:
            raise ValueError("a notification listener needs at least one target")
        for target in targets:
            if not isinstance(target, Target) or not target.topic:
                raise InvalidTarget("A notification listener's target must have a topic", target)
        if pool is not None and not isinstance(pool, str):
            raise TypeError(f"pool must be a queue name, not {type(pool).__name__}")
        if not isinstance(transport, NotificationTransport):
            LOG.warning("Using an RPC transport for notifications: get_notification_transport builds the "
                        "notification one (its own URL, if configured)")
        super().__init__(transport, targets[0], dispatcher, executor)
        self.targets = targets
        self.allow_requeue = bool(allow_requeue)
        self.pool = pool or None
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self._targets_and_priorities = [(target, priority) for target in targets
                                        for priority in dispatcher.supported_priorities]

    def _create_listener(self) -> Listener:
        return self.transport._listen_for_notifications(self._targets_and_priorities, self.pool,
                                                        self.batch_size, self.batch_timeout)

    def _settle(self, incoming: IncomingMessage, requeue: bool) -> None:
        requeue = requeue and self.allow_requeue  # asked for but not allowed: acknowledged
        try:
            if requeue:
                incoming.requeue()
            else:
                incoming.acknowledge()
        except Exception:
            LOG.exception("Could not %s a notification", "requeue" if requeue else "acknowledge")

    def _process_incoming(self, incoming: IncomingMessage) -> None:
        try:
            result = self.dispatcher.dispatch(incoming)
        except Exception:
            LOG.exception("Notification dispatch failed")
            result = NotificationResult.REQUEUE
        self._settle(incoming, result == NotificationResult.REQUEUE)


class BatchNotificationServer(NotificationServer):
    """Runs notifications in batches: up to ``batch_size`` at a time, or
    fewer when ``batch_timeout`` seconds passed since the first of the batch
    came (None: wait for a full batch). One worker fills a batch at a time;
    the others run the batches already taken.

    The broker hands a consumer at most ``rabbit_qos_prefetch_count``
    unacknowledged notifications (when above 0), and a batch's are
    acknowledged only once it ran: a larger batch would never fill. So, as
    oslo does, batches are at most that many."""

    dispatcher: BatchNotificationDispatcher
    dispatch_inline = False  # a batch is not one read of the connection

    def __init__(self, transport: Transport, targets: Iterable[Target], dispatcher: BatchNotificationDispatcher,
                 executor: str | None = "threading", allow_requeue: bool = False, pool: str | None = None,
                 batch_size: int = 1, batch_timeout: float | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_timeout is not None and (isinstance(batch_timeout, bool) or not isinstance(batch_timeout, (int, float))
                                          or not batch_timeout > 0):
            raise ValueError(f"batch_timeout must be a positive number of seconds or None, got {batch_timeout!r}")
        prefetch = int(getattr(transport.conf, "rabbit_qos_prefetch_count", 0) or 0)
        if 0 < prefetch < batch_size:
            LOG.info("Batches of at most %d notifications (rabbit_qos_prefetch_count), not batch_size %d: "
                     "the broker hands no more before they are acknowledged", prefetch, batch_size)
            batch_size = prefetch
        super().__init__(transport, targets, dispatcher, executor, allow_requeue, pool, batch_size, batch_timeout)
        self._filling = threading.Lock()

    def _poll(self, listener: Listener, timeout: float) -> list[Any]:
        if not self._filling.acquire(timeout=timeout):
            return []  # another worker fills the next batch
        try:
            size = self.batch_size
            batch = listener.poll(timeout=timeout, batch_size=size)
            if not batch:
                return []
            deadline = None if self.batch_timeout is None else time.monotonic() + self.batch_timeout
            while len(batch) < size and not self._stopped.is_set():
                wait = _GATHER_STEP if deadline is None else min(_GATHER_STEP, deadline - time.monotonic())
                if wait <= 0:
                    break
                batch += listener.poll(timeout=wait, batch_size=size - len(batch))
        finally:
            self._filling.release()
        return [batch]

    def _process_incoming(self, incoming: list[IncomingMessage]) -> None:  # type: ignore[override]
        try:
            requeue = self.dispatcher.dispatch(incoming)
        except Exception:
            LOG.exception("Notification dispatch failed")
            requeue = set(incoming)
        for message in incoming:
            self._settle(message, message in requeue)


def get_notification_listener(transport: Transport, targets: Iterable[Target], endpoints: Iterable[Any],
                              executor: str | None = "threading", serializer: Serializer | None = None,
                              allow_requeue: bool = False, pool: str | None = None) -> NotificationServer:
    """A listener running ``endpoints`` for the notifications sent to ``targets``.

    Endpoint methods are named after priorities (``info``, ``error``, ...;
    see :mod:`fastrpc.notify.dispatcher`); ``pool`` names a queue that the
    listeners of that pool share; ``allow_requeue`` lets endpoints give a
    notification back with ``NotificationResult.REQUEUE``. ``start()``,
    ``stop()`` and ``wait()`` as an RPC server's.
    """
    dispatcher = NotificationDispatcher(endpoints, serializer)
    return NotificationServer(transport, targets, dispatcher, executor, allow_requeue, pool)


def get_batch_notification_listener(transport: Transport, targets: Iterable[Target], endpoints: Iterable[Any],
                                    executor: str | None = "threading", serializer: Serializer | None = None,
                                    allow_requeue: bool = False, pool: str | None = None,
                                    batch_size: int | None = None,
                                    batch_timeout: float | None = None) -> BatchNotificationServer:
    """A listener handing endpoints lists of notifications (one call per
    batch and priority, with dicts of ``ctxt``, ``publisher_id``,
    ``event_type``, ``payload`` and ``metadata``): up to ``batch_size`` (None:
    1), or what came within ``batch_timeout`` seconds of a batch's first."""
    dispatcher = BatchNotificationDispatcher(endpoints, serializer)
    return BatchNotificationServer(transport, targets, dispatcher, executor, allow_requeue, pool,
                                   1 if batch_size is None else batch_size, batch_timeout)
