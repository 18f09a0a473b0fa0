"""The RPC listener: consumes ``<topic>``, ``<topic>.<server>`` and its own
``<topic>_fanout_<uuid hex>``, decodes requests, acks them (when a poller
takes them, or after an inline run of one) and answers through the driver."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from fastrpc import envelope, tracing
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.amqp.sync import Lock
from fastrpc.drivers.amqp.acks import Read, Settled
from fastrpc.drivers.amqp.connecting import declare_exchange, declare_queue
from fastrpc.drivers.amqp.consumer import Consumer, ListenerDriver
from fastrpc.drivers.amqp.incoming import IncomingCore, RequestIntake, ack_failed
from fastrpc.drivers.base import IncomingMessage
from fastrpc.drivers.topology import QueueSpec
from fastrpc.envelope import EnvelopeError

if TYPE_CHECKING:
    from collections.abc import Callable

LOG = logging.getLogger(__name__)


class RpcDriver(ListenerDriver, Protocol):
    """What the RPC listener and its messages need of the driver: answering."""

    def send_reply(self, reply_q: str, msg_id: str, result: Any, failure: str | None, ending: bool,
                   binary: bool) -> None:
        """Answer a call (``ending``), or tell its caller it still runs."""

    def send_error_reply(self, exc: EnvelopeError) -> None:
        """Tell the caller of a malformed request why it was rejected."""


class AmqpIncomingMessage(IncomingCore, IncomingMessage):
    """A request taken from a queue; the listener acks it (when a worker takes
    it, or after it ran with inline dispatch), as oslo's executors do. Its
    fields and answers are :class:`IncomingCore`'s (compiled)."""

    settled_by_listener = True  # acknowledge() does nothing: see AmqpListener.take and run_read


class AmqpListener(Consumer):
    """Consumes the three queues of one RPC target on its own connection."""

    _driver: RpcDriver
    intake: RequestIntake  # never None here: see request_intake

    def __init__(self, driver: RpcDriver, target: Any) -> None:
        topo = driver.topology
        self._target = target
        self._exchange = topo.exchange_name(target.exchange, driver.default_exchange)
        self.fanout_queue = topo.fanout_queue(target.topic).name
        self._ack_lock = Lock()  # guards each channel's Settled
        queues = [topo.routing_key(target.topic), topo.routing_key(target.topic, target.server),
                  self.fanout_queue]
        super().__init__(driver, queues, target.topic)

    def request_intake(self) -> RequestIntake:
        return RequestIntake(self, AmqpIncomingMessage)

    def owned_queues(self) -> list[str]:
        # Our uniquely named fanout queue has no other user: do not leave it
        # collecting broadcasts until x-expires.
        return [self.fanout_queue]

    def declare(self, ch: Any) -> None:
        topo = self._driver.topology
        target = self._target
        declare_exchange(ch, topo.topic_exchange(self._exchange))
        for server in (None, target.server):
            q = topo.topic_queue(target.topic, server)
            declare_queue(ch, q)
            ch.queue_bind(q.name, self._exchange, q.name)
        fanout_ex = topo.fanout_exchange(target.topic)
        declare_exchange(ch, fanout_ex)
        fq = topo.fanout_queue(target.topic)
        declare_queue(ch, QueueSpec(self.fanout_queue, fq.durable, fq.auto_delete, fq.arguments))
        ch.queue_bind(self.fanout_queue, fanout_ex.name, target.topic)

    def take(self, item: Read) -> list[IncomingMessage]:
        """Decode the requests of one read and ack them (one frame when possible),
        before they run: for pollers (the threading executor).

        Malformed ones are rejected (and answered with an error where the
        caller is known), duplicates dropped.
        """
        gen, ch, settled, deliveries = item
        if len(deliveries) == 1:  # the usual read: one request, without the lists
            return self.intake.take_one(gen, ch, settled, deliveries[0])
        requests, settle = self._decode(item)
        if settle is None or not self._ack(*settle):
            return []
        if tracing.on:
            return self._accepted_traced(requests, item, settle[3])
        return [msg for msg in map(self.intake.accept, requests) if msg is not None]

    def run_read(self, handler: Callable[[IncomingMessage], Any], item: Read) -> None:
        """Run the requests of one read in this thread (inline dispatch).

        A read of one request (a caller waiting for each answer) is acked
        after it ran and was answered, as oslo's blocking executor sends a
        request's ack at its next poll: the ack's send stays off the caller's
        wait. Unacked while it runs, it comes back if the connection drops
        meanwhile; its ``_unique_id`` is remembered by then, so this listener
        drops it, as oslo's does. A read of several (requests piling up) is
        acked with one frame before they run, as pollers do: none of them
        waits unacked behind the others, so none is run again elsewhere
        after it was answered.
        """
        gen, ch, settled, deliveries = item
        if len(deliveries) > 1:
            for msg in self.take(item):
                handler(msg)
            return
        self.intake.run_one(handler, gen, ch, settled, deliveries[0])

    def reject(self, ch: Any, delivery: spec.Delivery, exc: EnvelopeError) -> None:
        super().reject(ch, delivery, exc)
        if exc.msg_id and exc.reply_q:
            try:
                self._driver.send_error_reply(exc)
            except Exception:
                # The rest of the read must still be settled and run.
                LOG.exception("Error reply for a malformed request failed")

    def _decode(self, item: Read) -> tuple[list[Any], tuple[Any, Settled, list[int], list[int]] | None]:
        """The well-formed requests of one read, and what ``_ack`` needs to
        settle the read (None: its channel is gone, the broker requeued them).
        Malformed ones are rejected here."""
        gen, ch, settled, deliveries = item
        if gen != self._gen:
            return [], None
        max_body = self._driver.max_body
        decode = envelope.decode_request
        requests = []
        ack = []
        for delivery in deliveries:
            try:
                req = decode(delivery.body, delivery.properties.get("content_type"), max_body)
            except EnvelopeError as exc:
                self.reject(ch, delivery, exc)
                continue
            requests.append(req)
            ack.append(delivery.delivery_tag)
        tags = ack if len(ack) == len(deliveries) else [d.delivery_tag for d in deliveries]
        return requests, (ch, settled, tags, ack)

    def rejected_one(self, ch: Any, settled: Settled, delivery: spec.Delivery, exc: EnvelopeError) -> None:
        """The one delivery of a read was malformed: reject it, and settle it."""
        self.reject(ch, delivery, exc)
        self._ack(ch, settled, [delivery.delivery_tag], [])

    def _accepted_traced(self, requests: list[Any], item: Read, tags: list[int]) -> list[IncomingMessage]:
        """The incoming messages of a read's decoded ``requests`` (``tags``:
        their delivery tags, in the same order), duplicates left out, each
        noting its delivery's exchange and routing key for its trace."""
        deliveries = {delivery.delivery_tag: delivery for delivery in item.deliveries}
        taken: list[IncomingMessage] = []
        for req, tag in zip(requests, tags, strict=True):
            msg = self.intake.accept(req)
            if msg is not None:
                delivery = deliveries[tag]
                msg.exchange, msg.routing_key = delivery.exchange, delivery.routing_key
                taken.append(msg)
        return taken

    def _ack(self, ch: Any, settled: Settled, tags: list[int], ack: list[int], ran: bool = False) -> bool:
        """Settle the ``tags`` of one read, sending acks for ``ack``; False if
        that failed. ``ran``: the requests ran already (inline dispatch)."""
        try:
            with self._ack_lock:
                for tag, multiple in settled.settle(tags, ack):
                    ch.basic_ack(tag, multiple)
        except amqp_exc.AMQPError as err:
            ack_failed(len(ack), err, ran)
            return False
        return True

