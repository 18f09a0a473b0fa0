"""Consuming notifications over AMQP, as oslo's rabbit driver does.

For each ``(target, priority)`` the listener consumes the queue
``<topic>.<priority>`` (or one queue named after the pool, shared by the
listeners of that pool), bound to the target's topic exchange with routing key
``<topic>.<priority>``, declared with the arguments of RPC topic queues: the
queue a sender declares (``AmqpDriver.send_notification``) is the same one.

Unlike RPC requests, a notification is not acknowledged when it is taken: the
listener's user acknowledges it once processed, or requeues it (oslo's
notification server does either, depending on its endpoints' answer), so a
listener that dies mid-way leaves it to another. As oslo's listeners do, the
``_unique_id`` of each acknowledged one is remembered, and one delivered again
(its ack lost to a reconnect, say) is acknowledged and not run twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastrpc import envelope, metrics
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.drivers.amqp.acks import Read
from fastrpc.drivers.amqp.connecting import declare_exchange, declare_queue
from fastrpc.drivers.amqp.consumer import Consumer, ListenerDriver
from fastrpc.drivers.base import IncomingMessage
from fastrpc.drivers.topology import ExchangeSpec, QueueSpec
from fastrpc.envelope import EnvelopeError

if TYPE_CHECKING:
    from collections.abc import Callable

LOG = logging.getLogger(__name__)


class NotificationIncoming(IncomingMessage):
    """One notification; ``acknowledge()`` or ``requeue()`` it once processed."""

    def __init__(self, listener: AmqpNotificationListener, gen: int, channel: Any, tag: int,
                 ctxt: dict, message: dict, unique_id: str | None) -> None:
        super().__init__(ctxt, message)
        self._listener = listener
        self._gen = gen
        self._channel = channel
        self._tag = tag
        self._unique_id = unique_id

    def acknowledge(self) -> None:
        self._listener.settle(self._gen, self._channel, self._tag, requeue=False, handled=self._unique_id)

    def requeue(self) -> None:
        self._listener.settle(self._gen, self._channel, self._tag, requeue=True)

    def reply(self, reply: Any = None, failure: BaseException | None = None) -> None:
        pass  # nobody waits for an answer to a notification

    def heartbeat(self) -> None:
        pass


class AmqpNotificationListener(Consumer):
    """Consumes the notification queues of some targets and priorities on its own connection.

    Reconnecting, stopping and polling are every listener's (:class:`Consumer`);
    what differs is what is declared and that taking a notification does not
    acknowledge it.
    """

    message_kind = "notification"
    MALFORMED_SLOT = metrics.MALFORMED_NOTIFICATIONS

    def __init__(self, driver: ListenerDriver, targets_and_priorities: Iterable[tuple[Any, str]],
                 pool: str | None) -> None:
        targets_and_priorities = list(targets_and_priorities)  # oslo passes a set
        if not targets_and_priorities:
            raise ValueError("a notification listener needs at least one (target, priority)")
        topo = driver.topology
        self._bindings: list[tuple[ExchangeSpec, QueueSpec, str]] = []
        for target, priority in targets_and_priorities:
            routing_key = f"{target.topic}.{priority}"
            exchange = topo.topic_exchange(topo.exchange_name(target.exchange, driver.default_exchange))
            queue = topo.topic_queue(routing_key)
            if pool:
                queue = QueueSpec(pool, queue.durable, queue.auto_delete, queue.arguments)
            self._bindings.append((exchange, queue, routing_key))
        # One consumer per queue, even when a pool's queue has several bindings.
        queues = list(dict.fromkeys(queue.name for _ex, queue, _key in self._bindings))
        super().__init__(driver, queues, targets_and_priorities[0][0].topic)

    def declare(self, ch: Any) -> None:
        for exchange, queue, routing_key in self._bindings:
            declare_exchange(ch, exchange)
            declare_queue(ch, queue)
            ch.queue_bind(queue.name, exchange.name, routing_key)

    def take(self, item: Read) -> list[IncomingMessage]:
        gen, ch, _settled, deliveries = item
        if not self.is_current(gen):
            return []  # from a dead channel: the broker requeued them
        max_body = self._driver.max_body
        taken: list[IncomingMessage] = []
        for delivery in deliveries:
            try:
                ctxt, message, unique_id = envelope.decode_notification(
                    delivery.body, delivery.properties.get("content_type"), max_body)
            except EnvelopeError as exc:
                self.reject(ch, delivery, exc)
                continue
            if unique_id is not None and self.seen_before(unique_id, remember=False):
                # Handled and acknowledged before (as oslo's listeners, which
                # remember the acknowledged ones): acknowledge it, do not run it again.
                LOG.warning("Dropped duplicate notification %s", unique_id)
                self.settle(gen, ch, delivery.delivery_tag, requeue=False)
                continue
            # oslo's listeners hand every context over with this key.
            ctxt["client_timeout"] = message.pop("_timeout", None)
            taken.append(NotificationIncoming(self, gen, ch, delivery.delivery_tag, ctxt, message, unique_id))
        return taken

    def run_read(self, handler: Callable[[IncomingMessage], Any], item: Read) -> None:
        # Each notification is settled by itself once its endpoints ran.
        for msg in self.take(item):
            handler(msg)

    def settle(self, gen: int, channel: Any, tag: int, requeue: bool, handled: str | None = None) -> None:
        """Acknowledge (or requeue) one notification on the channel it came on.

        ``handled``: the ``_unique_id`` of an acknowledged one, remembered so
        that it is not run again if it comes back (its ack lost to a reconnect).
        """
        if handled is not None:
            self.seen_before(handled)
        if not self.is_current(gen):
            # Its channel died: the broker has requeued it already.
            LOG.debug("Notification %d of a lost channel not settled (the broker requeued it)", tag)
            return
        try:
            if requeue:
                channel.basic_reject(tag, requeue=True)
            else:
                channel.basic_ack(tag)
        except amqp_exc.AMQPError as exc:
            LOG.warning("Could not %s a notification: %s (the broker will deliver it again)",
                        "requeue" if requeue else "acknowledge", exc)
