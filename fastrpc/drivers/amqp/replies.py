"""The caller's side of calls: one reply queue ``reply_<uuid hex>`` per
driver, declared on the first call and consumed on the sending connection.
The thread reading that connection decodes each reply and puts it in the
mailbox of the waiter registered under its ``_msg_id``: no polling, many
calls in flight."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from fastrpc import envelope
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.drivers.amqp.connecting import Backoff, declare_queue
from fastrpc.drivers.amqp.sending import Sender
from fastrpc.drivers.topology import QueueSpec, Topology
from fastrpc.envelope import EnvelopeError, Reply
from fastrpc.exceptions import MessagingTimeout

LOG = logging.getLogger(__name__)


class Replies:
    """The reply queue, its consumer and the calls waiting on it.

    ``waiters`` maps a call's ``_msg_id`` to its mailbox; ``name``, ``ch``
    and ``consuming`` say whether the queue is consumed now (checked without
    a lock by each call, see :meth:`ensure`).
    """

    def __init__(self, sender: Sender, topology: Topology, max_body: int) -> None:
        self._sender = sender
        self._topology = topology
        self._max_body = max_body
        self.name: str | None = None
        self.ch: Any = None
        self.consuming = False
        self.waiters: dict[str, queue.SimpleQueue[Reply]] = {}
        self.late_replies = 0  # replies that arrived after their caller gave up
        self.bad_replies = 0
        sender.on_new_connection = self._on_new_connection
        sender.on_connection_lost = self._on_connection_lost
        sender.on_closed = self._forget

    def ensure(self) -> str:
        """The reply queue's name, once it is declared and consumed on the
        sending connection (connecting if needed)."""
        ch = self.ch
        if self.name is not None and ch is not None and ch.is_open and self.consuming:
            return self.name
        sender = self._sender
        with sender.lock:
            conn = sender.connection()
            ch = self.ch
            if self.name is not None and ch is not None and ch.is_open and self.consuming:
                return self.name
            # Its own channel: a refused declare elsewhere must not take the
            # reply consumer down with it. Kept when only the consumer was
            # lost (the broker cancelled it).
            if ch is None or not ch.is_open:
                ch = self.ch = conn.channel()
            q = self._topology.reply_queue()
            if self.name is not None:
                q = QueueSpec(self.name, q.durable, q.auto_delete, q.arguments)
            declare_queue(ch, q)
            ch.basic_consume(q.name, self._on_reply, no_ack=True, on_cancel=self._on_cancelled)
            self.name = q.name
            self.consuming = True
            return q.name

    def wait(self, replies: queue.SimpleQueue[Reply], msg_id: str, deadline: float | None,
             call_monitor_timeout: float | None) -> Reply:
        """The final reply to ``msg_id``; call-monitor keepalives extend the
        wait by ``call_monitor_timeout``. MessagingTimeout when none came in time."""
        now = time.monotonic()
        monitor = None if not call_monitor_timeout else now + call_monitor_timeout
        wait = None if deadline is None else max(0.0, deadline - now)
        if call_monitor_timeout:
            wait = call_monitor_timeout if wait is None else min(wait, call_monitor_timeout)
        sender = self._sender
        while True:
            # The current connection (it changes after a reconnect): this
            # thread reads the reply itself while nobody else reads.
            conn = sender.conn
            try:
                reply = conn.wait_for(replies, wait) if conn is not None else replies.get(timeout=wait)
            except queue.Empty:
                raise MessagingTimeout(f"Timed out waiting for a reply to message ID {msg_id}") from None
            if reply.ending:
                return reply
            # A call-monitor keepalive: the call is still running.
            now = time.monotonic()
            if call_monitor_timeout:
                monitor = now + call_monitor_timeout
            limits = [d for d in (deadline, monitor) if d is not None]
            wait = None if not limits else max(0.0, min(limits) - now)

    def _forget(self) -> None:
        # The sending connection is closed for good (cleanup): under its lock,
        # so no call declares a new queue on it meanwhile.
        self.ch = None
        self.name = None
        self.consuming = False

    def _on_reply(self, delivery: spec.Delivery) -> None:
        # Runs in the thread reading the connection: decode, hand over, return.
        try:
            reply = envelope.decode_reply(delivery.body, delivery.properties.get("content_type"),
                                          self._max_body)
        except EnvelopeError as exc:
            self.bad_replies += 1
            LOG.warning("Dropped malformed reply on %s: %s", delivery.routing_key, exc.reason)
            return
        replies = self.waiters.get(reply.msg_id)
        if replies is None:
            self.late_replies += 1
            LOG.debug("Dropped reply to %s: its caller is no longer waiting", reply.msg_id)
            return
        replies.put(reply)

    def _on_new_connection(self) -> None:
        # The old connection's channel and consumer are gone with it; the
        # queue itself outlives it (x-expires), so its name is kept.
        self.ch = None
        self.consuming = False

    def _on_connection_lost(self) -> None:
        if self.waiters:
            # Calls are waiting: get their reply queue consumed again soon.
            threading.Thread(target=self._recover, name="fastrpc-sender-reconnect", daemon=True).start()

    def _on_cancelled(self, tag: str) -> None:
        # The broker ended the reply consumer: the reply queue was deleted, or
        # the node holding it went away. Declare and consume it again (same
        # name, which the calls in flight gave their servers): at once if calls
        # wait, else at the next call.
        self.consuming = False
        if self._sender.closed.is_set():
            return
        LOG.warning("Reply queue %s lost its consumer (queue deleted or its node lost); declaring it again",
                    self.name)
        if self.waiters:
            threading.Thread(target=self._recover, name="fastrpc-reply-recover", daemon=True).start()

    def _recover(self) -> None:
        backoff = Backoff(self._sender.conf)
        closed = self._sender.closed
        while self.waiters and not closed.is_set():
            try:
                self.ensure()
                LOG.info("Reconnected; reply queue %s consumed again", self.name)
                return
            except (amqp_exc.AMQPError, OSError) as exc:
                delay = backoff.next()
                LOG.warning("Reconnect failed: %s; next attempt in %.1fs", exc, delay)
                time.sleep(delay)
