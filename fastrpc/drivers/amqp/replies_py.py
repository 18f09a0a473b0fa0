"""The caller's side of calls: one reply queue ``reply_<uuid hex>`` per
driver, declared on the first call and consumed on the sending connection.
The thread reading that connection decodes each reply and puts it in the
mailbox of the waiter registered under its ``_msg_id``: no polling, many
calls in flight.

Import this module as ``fastrpc.drivers.amqp.replies``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.replies`` (see fastrpc._impl); its C
layout is fastrpc/_ext/replies.pxd.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from time import monotonic  # a module global: no attribute lookup per call
from typing import Any

from fastrpc import envelope, metrics
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.sync import Mailbox
from fastrpc.drivers.amqp.connecting import Backoff, declare_queue
from fastrpc.drivers.amqp.sending import RETURNED_RESEND_DELAY, Sender, held_until, op_timeout
from fastrpc.drivers.amqp.settling import RECHECK_TIMEOUT, Rechecks
from fastrpc.drivers.topology import QueueSpec, Topology
from fastrpc.envelope import EnvelopeError, Reply, decode_reply
from fastrpc.exceptions import CallInterrupted, MessagingException, MessagingTimeout

__all__ = ["CLEANUP_TIMEOUT", "REDECLARE_TIMEOUT", "REDECLARE_TRIES", "Lost", "Nacked", "Replies", "Unroutable"]

LOG = logging.getLogger("fastrpc.drivers.amqp.replies")  # one name, whichever build runs

CLEANUP_TIMEOUT = 2.0  # seconds the reply queue's delete may take at cleanup
# Seconds a reply queue's declaration under its old name may take after a
# reconnect before a new queue replaces it (a healthy broker takes ms).
REDECLARE_TIMEOUT = 2.0
REDECLARE_TRIES = 8  # a queue removed under its consume is declared again this often


class Lost:
    """Put in the mailbox of every waiting call when the sending connection
    dies: a call whose request went out on ``conn`` stops waiting."""

    __slots__ = ("conn", "why")
    ending = False  # read like a Reply's: never the final reply

    def __init__(self, conn: Connection, why: str) -> None:
        self.conn = conn
        self.why = why


class Unroutable:
    """Put in the mailbox of a call whose request the broker returned: no
    queue is bound for it (yet). Nothing took it, so it can be sent again."""

    __slots__ = ("why",)
    ending = False  # read like a Reply's: never the final reply

    def __init__(self, why: str) -> None:
        self.why = why


class Nacked:
    """Put in every mailbox when the broker nacks a request (delivery ``tag``
    on channel ``ch``): the call whose request it is sends it again."""

    __slots__ = ("ch", "tag")
    ending = False  # read like a Reply's: never the final reply

    def __init__(self, ch: Any, tag: int) -> None:
        self.ch = ch
        self.tag = tag


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
        self.waiters: dict[str, Mailbox[Reply]] = {}
        # Guards declaring and consuming the reply queue. Its own lock, not
        # the sender's: a declaration the cluster holds up (a hung member,
        # on RabbitMQ 3.x) must not hold up casts and other publishes.
        self._lock = threading.Lock()
        self.late_replies = 0  # replies that arrived after their caller gave up
        self.bad_replies = 0
        sender.on_new_connection = self._on_new_connection
        sender.on_connection_lost = self._on_connection_lost
        sender.on_closed = self._forget
        sender.on_call_returned = self._on_call_returned
        sender.on_call_nacked = self._on_call_nacked
        self._rechecks = Rechecks("fastrpc-reply-recheck", sender.closed)

    def ensure(self, deadline: float | None = None) -> str:
        """The reply queue's name, once it is declared and consumed on the
        sending connection (connecting if needed)."""
        ch = self.ch
        if self.name is not None and ch is not None and ch.is_open and self.consuming:
            return self.name
        sender = self._sender
        conn = sender.connection(deadline)
        with held_until(self._lock, deadline, "the reply queue to be declared"):
            if sender.closed.is_set():
                raise MessagingException("the transport was cleaned up")
            if sender.conn is not conn:
                conn = sender.connection(deadline)
            ch = self.ch
            if self.name is not None and ch is not None and ch.is_open and self.consuming:
                return self.name
            # Its own channel: a refused declare elsewhere must not take the
            # reply consumer down with it. Kept when only the consumer was
            # lost (the broker cancelled it).
            if ch is None or not ch.is_open:
                ch = self.ch = conn.channel(op_timeout(deadline))
            q = self._topology.reply_queue()
            if self.name is None or not self._consumed_again(conn, QueueSpec(self.name, q.durable, q.auto_delete,
                                                                               q.arguments), deadline):
                if self.name is not None:
                    ch = self.ch = conn.channel(op_timeout(deadline))  # the old one was closed
                declare_queue(ch, q, op_timeout(deadline))
                self._consume(ch, q.name, op_timeout(deadline))
                self.name = q.name
            self.consuming = True
            return self.name

    def _consume(self, ch: Any, name: str, timeout: float | None) -> None:
        # Exclusive: a consumer left behind on a half-open connection (the
        # broker still sees it) would otherwise take every other reply.
        ch.basic_consume(name, self._on_reply, no_ack=True, exclusive=True, on_cancel=self._on_cancelled,
                         timeout=timeout)

    def _consumed_again(self, conn: Connection, q: QueueSpec, deadline: float | None) -> bool:
        """Declare and consume the reply queue again under its old name (the
        calls in flight gave it to their servers), on ``self.ch``; False when
        that cannot be: a durable queue whose home node is down (NOT_FOUND),
        no answer in REDECLARE_TIMEOUT (its node is frozen or cut off and the
        cluster has not noticed yet), or a consumer of ours the broker still
        sees on a connection we left (ACCESS_REFUSED: exclusive use). A new
        queue serves the calls from then on. A queue gone between its
        declaration and the consume (the cluster removing a lost node's
        queues) is declared once more."""
        wait = REDECLARE_TIMEOUT if deadline is None else min(REDECLARE_TIMEOUT, op_timeout(deadline) or 0.0)
        for attempt in range(REDECLARE_TRIES):
            try:
                declare_queue(self.ch, q, wait)
                self._consume(self.ch, q.name, wait)
                return True
            except amqp_exc.OperationTimeout as exc:
                why = str(exc)
                break
            except amqp_exc.ChannelClosed as exc:
                if exc.reply_code not in (spec.NOT_FOUND, spec.ACCESS_REFUSED):
                    raise
                why = exc.reply_text
                consuming = (exc.class_id, exc.method_id) == (60, 20)  # basic.consume
                if not (consuming and exc.reply_code == spec.NOT_FOUND) or attempt == REDECLARE_TRIES - 1:
                    break
                time.sleep(0.25)  # the cluster is still removing the lost node's queues
                self.ch = conn.channel(wait)
        LOG.warning("Reply queue %s cannot be consumed again (%s); calls use a new reply queue", q.name, why)
        return False

    def wait(self, replies: Mailbox[Reply], msg_id: str, deadline: float | None,
             call_monitor_timeout: float | None,
             sent: tuple[Any, int, int] | None = None) -> Reply | Unroutable | Lost | Nacked:
        """The final reply to ``msg_id``; call-monitor keepalives extend the
        wait by ``call_monitor_timeout``. MessagingTimeout when none came in
        time. ``sent``: the channel, delivery tag and stream position of the
        request (``Sender.publish_call``). When that channel's connection
        dies before the broker confirmed the request: Lost, after a short
        pause, if the broker certainly never got it (it reset or closed the
        connection with none of the request's bytes acknowledged by its TCP),
        to be sent again; else CallInterrupted at once (nobody knows whether
        it reached its queue). Nacked, after a short pause, when the broker
        refused the request, to be sent again on a new channel. A confirmed request is in its queue: the call waits for its
        reply, which comes once the reply queue is consumed again
        (at-least-once calls pass None: always confirmed). Unroutable, after
        a short pause, when the broker returned the request and the deadline
        leaves time to send it again."""
        now = monotonic()
        monitor = None if not call_monitor_timeout else now + call_monitor_timeout
        wait = None if deadline is None else (deadline - now if deadline > now else 0.0)
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
            now = monotonic()
            if type(reply) is Lost:
                if sent is not None and sent[0].connection is reply.conn and not sent[0].confirmed(sent[1]):
                    if not reply.conn.never_received(sent[2]):
                        raise CallInterrupted(f"the connection the call {msg_id} was sent on was lost before "
                                              f"its reply ({reply.why}); it may or may not have run")
                    # Never reached the broker: sent again after a pause (the
                    # lost node's queues may still be bound until its cluster
                    # removes them, and a request routed there is lost).
                    if deadline is None or now + RETURNED_RESEND_DELAY < deadline:
                        LOG.debug("Request of call %s never reached the broker (%s); sending it again", msg_id,
                                  reply.why)
                        time.sleep(RETURNED_RESEND_DELAY)
                        return reply  # the driver publishes it again, on the next connection
            elif type(reply) is Unroutable:
                # Sent again after a pause while the deadline allows (its
                # server's queue may be on its way back); else wait it out.
                if deadline is None or now + RETURNED_RESEND_DELAY < deadline:
                    LOG.debug("Request of call %s returned by the broker (%s); sending it again", msg_id,
                              reply.why)
                    time.sleep(RETURNED_RESEND_DELAY)
                    return reply  # the driver publishes it again
            elif type(reply) is Nacked:
                # The broker refused the request without handing it to a
                # queue (RabbitMQ: a quorum queue whose leader it cannot
                # reach, a full queue that rejects publishes, a classic queue
                # whose node is gone): sent again after a pause, on a new
                # channel, while the deadline allows.
                mine = sent is not None and reply.ch is sent[0] and reply.tag == sent[1]
                if mine and (deadline is None or now + RETURNED_RESEND_DELAY < deadline):
                    LOG.debug("Request of call %s refused by the broker (basic.nack); sending it again", msg_id)
                    time.sleep(RETURNED_RESEND_DELAY)
                    return reply  # the driver publishes it again
            elif call_monitor_timeout:
                # A call-monitor keepalive: the call is still running.
                monitor = now + call_monitor_timeout
            limits = [d for d in (deadline, monitor) if d is not None]
            wait = None if not limits else max(0.0, min(limits) - now)

    def _forget(self) -> None:
        # The sending connection is closed for good (cleanup). The queue is
        # deleted, not left until it expires: nobody will read it again.
        # Under the reply lock, so no declaration runs meanwhile (one the
        # cluster holds up is not waited for longer than the delete may take;
        # ensure() sees the transport closed and declares nothing more).
        locked = self._lock.acquire(timeout=CLEANUP_TIMEOUT)
        try:
            ch, name = self.ch, self.name
            if ch is not None and ch.is_open and name is not None:
                try:
                    ch.queue_delete(name, timeout=CLEANUP_TIMEOUT)
                except amqp_exc.AMQPError as exc:
                    LOG.debug("Deleting reply queue %s failed: %s", name, exc)
            self.ch = None
            self.name = None
            self.consuming = False
        finally:
            if locked:
                self._lock.release()

    def _on_reply(self, delivery: spec.Delivery) -> None:
        # Runs in the thread reading the connection: decode, hand over, return.
        try:
            reply = decode_reply(delivery.body, delivery.properties.get("content_type"),
                                          self._max_body)
        except EnvelopeError as exc:
            self.bad_replies += 1
            if metrics.on:
                metrics.counts[metrics.MALFORMED_REPLIES] += 1
            LOG.warning("Dropped malformed reply on %s: %s", delivery.routing_key, exc.reason)
            return
        replies = self.waiters.get(reply.msg_id)
        if replies is None:
            self.late_replies += 1
            if metrics.on:
                metrics.counts[metrics.LATE_REPLIES] += 1
            LOG.debug("Dropped reply to %s: its caller is no longer waiting", reply.msg_id)
            return
        replies.put(reply)

    def _on_call_nacked(self, ch: Any, tag: int) -> None:
        # In the reader thread; rare (the request's queue failed), so every
        # waiting call is told and the one that sent ``tag`` on ``ch`` acts.
        marker = Nacked(ch, tag)
        for mailbox in list(self.waiters.values()):
            mailbox.put(marker)  # type: ignore[arg-type]

    def _on_call_returned(self, event: spec.Returned) -> None:
        # In the reader thread: tell the waiting call (found by the request's
        # _msg_id) that no queue took its request.
        try:
            msg_id = envelope.decode_request(event.body, event.properties.get("content_type"),
                                             self._max_body).msg_id
        except EnvelopeError:
            return
        mailbox = self.waiters.get(msg_id) if msg_id is not None else None
        if mailbox is not None:
            mailbox.put(Unroutable(f"{event.reply_code} {event.reply_text}"))  # type: ignore[arg-type]

    def _on_new_connection(self) -> None:
        # The old connection's channel and consumer are gone with it; the
        # queue itself outlives it (x-expires), so its name is kept.
        self.ch = None
        self.consuming = False

    def _on_connection_lost(self, conn: Connection) -> None:
        why = str(conn.closed_reason or "connection lost")
        for mailbox in list(self.waiters.values()):
            mailbox.put(Lost(conn, why))  # type: ignore[arg-type]  # read like a Reply
        if self.name is not None:
            # Consume the reply queue again now, not at the next call: calls
            # still waiting (at-least-once ones) need it, and the transport is
            # not healthy until it is consumed again.
            threading.Thread(target=self._recover, name="fastrpc-sender-reconnect", daemon=True).start()

    def _on_cancelled(self, tag: str) -> None:
        # The broker ended the reply consumer: the reply queue was deleted, or
        # the node holding it went away. Declare and consume it again at once
        # (same name, which the calls in flight gave their servers, while its
        # node can serve it).
        self.consuming = False
        if self._sender.closed.is_set():
            return
        LOG.warning("Reply queue %s lost its consumer (queue deleted or its node lost); declaring it again",
                    self.name)
        threading.Thread(target=self._recover, name="fastrpc-reply-recover", daemon=True).start()

    def _recover(self) -> None:
        backoff = Backoff(self._sender.conf)
        closed = self._sender.closed
        while self.name is not None and not closed.is_set():
            try:
                self.ensure()
                self._sender.link.restored(f"reply queue {self.name} consumer")
                self._rechecks.schedule(functools.partial(self._recheck, self.ch))
                return
            except (amqp_exc.AMQPError, OSError, MessagingException) as exc:
                if closed.is_set():
                    return  # cleaned up meanwhile
                delay = backoff.next()
                LOG.debug("Reply queue recovery failed: %s; next attempt in %.1fs", exc, delay)
                closed.wait(delay)

    def _recheck(self, ch: Any) -> bool:
        """After a restore: whether the reply queue still has our consumer
        (the cluster's cleanup of a lost node may have deleted the queue
        record we consumed, under the same name); when not, consume it again
        at once (waiting calls' replies are being returned to their servers,
        which publish them again). False once ``ch`` is no longer the
        reply channel."""
        name = self.name
        if ch is not self.ch or name is None or not ch.is_open:
            return False
        try:
            consumers = ch.queue_declare(name, passive=True, timeout=RECHECK_TIMEOUT)[2]
        except amqp_exc.ChannelClosed as exc:
            why = exc.reply_text  # NOT_FOUND: the record we consumed was deleted
        except amqp_exc.AMQPError as exc:
            LOG.debug("Reply queue %s: check after restore failed: %s", name, exc)
            return False
        else:
            if consumers:
                return True
            why = "no consumer"
        if ch is not self.ch:
            return False
        LOG.warning("Reply queue %s lost its consumer after a restore (%s); consuming it again", name, why)
        self.consuming = False
        ch.close()
        self._recover()
        return False

    @property
    def restoring(self) -> bool:
        """Whether a reply queue was in use and is not consumed again yet."""
        return self.name is not None and not self.consuming
