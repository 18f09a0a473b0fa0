"""What reaches a listener, on the per-message path: the deliveries of one
read gathered and handed on, a request taken from its delivery, and a
request's fields and answers.

:class:`ReadCollector` is a listener channel's consumer callback: it gathers
the deliveries one read brings and, once the read is dispatched, hands them
on together (one ack frame for all of them), to the inline handler in the
reader thread or to the listener's pollers. :class:`RequestIntake` is an RPC
listener's path from one delivered request to the message its server runs:
decoded, checked against the ``_unique_id`` window, acked.
:class:`IncomingCore` holds a request's fields and answers it through the
driver; :class:`fastrpc.drivers.amqp.rpc_listener.AmqpIncomingMessage` adds
the :class:`fastrpc.drivers.base.IncomingMessage` interface on top. All of
them run for every message: compiled, they run no Python frame.

Import this module as ``fastrpc.drivers.amqp.incoming``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.incoming`` (see fastrpc._impl); its C
layout is fastrpc/_ext/incoming.pxd.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastrpc import envelope, tracing
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.drivers.amqp.acks import Read, Settled
from fastrpc.drivers.amqp.handoff import EMPTY, Handoff
from fastrpc.envelope import EnvelopeError
from fastrpc.exceptions import BrokerError, MessageDeliveryFailure
from fastrpc.failures import serialize_remote_exception

__all__ = ["DEDUP_WINDOW", "IncomingCore", "ReadCollector", "RequestIntake", "ack_failed", "ack_one"]

# The RPC listener's log, where what happens to its requests is told.
LOG = logging.getLogger("fastrpc.drivers.amqp.rpc_listener")

DEDUP_WINDOW = 8192  # _unique_ids remembered per listener (oslo keeps 16)


class ReadCollector:
    """The consumer callback of one listener channel: ``on_message`` gathers
    the deliveries of a read; once the read is dispatched
    (``after_read``, the connection's ``after_dispatch``), or once
    ``ack_batch`` came, they go on as one :class:`Read`.

    ``listener`` is the :class:`fastrpc.drivers.amqp.consumer.Consumer` that
    consumes on ``ch`` (connection generation ``gen``, ack bookkeeping
    ``settled``); its per-message state (``_inline``, ``_polled``,
    ``_stopping``) is read here on each read, as its own code would.
    """

    def __init__(self, listener: Any, gen: int, ch: Any, settled: Any, after_read: Any,
                 ack_batch: int) -> None:
        self._listener = listener
        self._gen = gen
        self._ch = ch
        self._settled = settled
        self._after_read = after_read
        self._ack_batch = ack_batch
        self._put = listener._incoming.put
        # An RPC listener's one-request path (None for other kinds): a read
        # of one request, run inline, goes through it without a Read.
        self._intake = listener.intake
        inline_lock = listener._inline_lock
        if inline_lock is None:  # compiled, the typed calls per read would not check
            raise TypeError("ReadCollector needs its listener's Lock")
        self._inline_lock = inline_lock
        self._arrived: list[Any] = []
        # Registered with after_read once per read: bound once, not per read.
        self._dispatched = self.on_read_dispatched

    def on_message(self, delivery: Any) -> None:
        arrived = self._arrived
        arrived.append(delivery)
        if len(arrived) == 1:
            self._after_read(self._dispatched)  # at once when the read brought only this
        elif len(arrived) >= self._ack_batch:
            self.on_read_dispatched()  # the registered call takes the rest

    def on_read_dispatched(self) -> None:
        arrived = self._arrived
        if not arrived:
            return
        self._arrived = []
        listener = self._listener
        handler = listener._inline
        lock = self._inline_lock
        if handler is not None and self._intake is not None and len(arrived) == 1:
            lock.acquire()
            try:
                if not listener._stopping:  # as below
                    self._intake.run_one(handler, self._gen, self._ch, self._settled, arrived[0])
            finally:
                lock.release()
            return
        # tuple.__new__: the NamedTuple's own __new__ is a Python call.
        item = tuple.__new__(Read, (self._gen, self._ch, self._settled, arrived))
        if handler is None:
            if listener._polled:
                # Pollers take the reads, nothing runs inline: no lock.
                self._put(item)
                return
            # Decide under the lock: dispatch_inline() must not look at the
            # backlog between our check and our put.
            lock.acquire()
            try:
                handler = listener._inline
                if handler is None:
                    self._put(item)
                    return
            finally:
                lock.release()
        # acquire/release, not `with`: half the instructions, per read.
        lock.acquire()
        try:
            # Checked under the lock: once stop() and wait_inline_idle()
            # returned, nothing more runs. Unacked, the message goes back to
            # the queue when the channel closes.
            if not listener._stopping:
                listener.run_read(handler, item)
        finally:
            lock.release()


class RequestIntake:
    """An RPC listener's path from one delivered request to the message its
    server runs, and the ack of that delivery.

    ``listener`` is the :class:`fastrpc.drivers.amqp.rpc_listener.AmqpListener`
    it serves (its connection generation, ``_unique_id`` window, ack lock and
    rejections are read or called here, as its own code would);
    ``message_class`` makes each request's message (an
    :class:`IncomingCore`).
    """

    def __init__(self, listener: Any, message_class: Any) -> None:
        self._listener = listener
        self._driver = listener._driver
        self._message_class = message_class
        self._seen = listener._seen
        self._marks = listener._marks
        self._ack_lock = listener._ack_lock
        self._incoming: Handoff = listener._incoming

    def poll(self, timeout: float | None = None, batch_size: int = 1) -> list:
        """The listener's poll (:meth:`fastrpc.drivers.amqp.consumer.Consumer.poll`),
        its usual case compiled: one read of one request, nothing queued
        behind it, taken (acked) at once. Everything else goes on in the
        listener's ``poll_until``."""
        listener = self._listener
        listener._polled = True
        deadline = None if timeout is None else time.monotonic() + timeout
        if batch_size != 1 or listener._stopping:
            return listener.poll_until(deadline, batch_size, EMPTY, timeout)  # type: ignore[no-any-return]
        incoming = self._incoming
        item = incoming.get(timeout)
        if item is EMPTY:
            return []
        if type(item) is not Read or incoming.queued:
            return listener.poll_until(deadline, 1, item, None)  # type: ignore[no-any-return]
        deliveries = item.deliveries
        if len(deliveries) != 1:
            return listener.poll_until(deadline, 1, item, None)  # type: ignore[no-any-return]
        result = self.take_one(item.gen, item.channel, item.settled, deliveries[0])
        if result:
            return result
        # Dropped (a duplicate, malformed): wait on for the time left.
        return listener.poll_until(deadline, 1, EMPTY, None)  # type: ignore[no-any-return]

    def accept(self, req: Any) -> Any:
        """The incoming message of a decoded request (a
        :class:`fastrpc.envelope.Request`); None for a duplicate."""
        ctxt, message, uid, msg_id, reply_q, timeout, binary = req  # one unpacking, not seven lookups
        if uid is not None:
            # Consumer.seen_before(uid), its usual case written out.
            mark = next(self._marks)
            seen = self._seen
            if seen.setdefault(uid, mark) != mark:
                self._listener.count_duplicate()
                LOG.warning("Dropped duplicate request %s", uid)
                return None
            if len(seen) > DEDUP_WINDOW:  # Consumer.forget_oldest(), written out
                try:
                    seen.popitem(False)
                except KeyError:  # emptied meanwhile (cannot be at this size)
                    pass
        # oslo's servers hand endpoints the context with this key added; do
        # the same so an endpoint sees one context whichever server runs it.
        ctxt["client_timeout"] = timeout
        return self._message_class(self._driver, ctxt, message, msg_id, reply_q, binary, timeout)

    def _decoded(self, ch: Any, settled: Settled, delivery: Any, properties: Any, body: Any) -> Any:
        """The request ``delivery`` carries (its ``properties`` and ``body``);
        None once a malformed one was rejected and settled."""
        try:
            return envelope.decode_request(body, properties.get("content_type"), self._driver.max_body)
        except EnvelopeError as exc:
            self._listener.rejected_one(ch, settled, delivery, exc)
            return None

    def take_one(self, gen: Any, ch: Any, settled: Settled, delivery: Any) -> list:
        """The message of a read of one request, acked before it runs (for
        pollers); ``[]`` when there is none to run."""
        if gen != self._listener._gen:
            return []  # a lost connection's: the broker requeued it
        tag = delivery.delivery_tag
        req = self._decoded(ch, settled, delivery, delivery.properties, delivery.body)
        if req is None:
            return []
        failed = None
        lock = self._ack_lock
        lock.acquire()  # not `with`: half the instructions, per request
        try:
            ack_one(ch, settled, tag)
        except amqp_exc.AMQPError as err:
            failed = err
        finally:
            lock.release()
        if failed is not None:
            ack_failed(1, failed, False)
            return []
        msg = self.accept(req)
        if msg is None:
            return []
        if tracing.on:
            msg.exchange, msg.routing_key = delivery.exchange, delivery.routing_key
        return [msg]

    def run_one(self, handler: Any, gen: Any, ch: Any, settled: Settled, delivery: Any) -> None:
        """Run ``handler`` for the message of a read of one request, in this
        thread (inline dispatch), then ack it: see
        :meth:`fastrpc.drivers.amqp.rpc_listener.AmqpListener.run_read`."""
        if gen != self._listener._gen:
            return
        tag = delivery.delivery_tag
        req = self._decoded(ch, settled, delivery, delivery.properties, delivery.body)
        if req is None:
            return
        msg = self.accept(req)
        if msg is not None:
            if tracing.on:
                msg.exchange, msg.routing_key = delivery.exchange, delivery.routing_key
            handler(msg)
        # Inline dispatch runs one read at a time (under the inline lock): no
        # other thread settles meanwhile, no lock needed.
        try:
            ack_one(ch, settled, tag)
        except amqp_exc.AMQPError as err:
            ack_failed(1, err, True)


def ack_one(ch: Any, settled: Settled, tag: int) -> None:
    """Settle and acknowledge the one delivery ``tag`` of ``ch`` (its
    bookkeeping ``settled``), under the lock that guards it."""
    n = tag  # a C integer, compiled
    if n == settled.upto + 1 and not settled.early:  # the usual case, written out
        settled.upto = n
        ch.basic_ack(tag)
        return
    # Some lower tag is unsettled, or a higher one was settled early.
    for acked, multiple in settled.settle([tag], [tag]):
        ch.basic_ack(acked, multiple)


def ack_failed(count: int, err: Exception, ran: bool) -> None:
    """Log that the ack of ``count`` requests failed (``ran``: they ran already)."""
    if ran:
        LOG.warning("Could not acknowledge %d request(s) that ran: %s (the broker will deliver them "
                    "again; this listener drops them as duplicates)", count, err)
    else:
        # Not acked means the broker will deliver them again: do not run them twice.
        LOG.warning("Discarding %d request(s) after a failed acknowledge: %s", count, err)


class IncomingCore:
    """A request's fields, and its answers through ``driver.send_reply``."""

    def __init__(self, driver: Any, ctxt: dict, message: dict, msg_id: str | None,
                 reply_q: str | None, binary: bool, client_timeout: float | None = None) -> None:
        self.ctxt = ctxt
        self.message = message
        self.msg_id = msg_id
        self._driver = driver
        self.reply_q = reply_q
        self.binary = binary
        # The caller's call-monitor timeout: the dispatcher sends heartbeats
        # more often than this while the call runs.
        self.client_timeout = client_timeout
        # Where it was published (the exchange and routing key of its
        # delivery), noted for its trace only while tracing is on.
        self.exchange: str | None = None
        self.routing_key: str | None = None

    def acknowledge(self) -> None:
        # The listener acks (see AmqpListener.take and run_read): nothing to do here.
        pass

    def requeue(self) -> None:
        pass

    def reply(self, reply: Any = None, failure: BaseException | None = None) -> None:
        if self.msg_id is None or self.reply_q is None:
            return
        data = serialize_remote_exception(failure) if failure is not None else None
        self._driver.send_reply(self.reply_q, self.msg_id, reply, data, True, self.binary)

    def heartbeat(self) -> None:
        if self.msg_id is None or self.reply_q is None:
            return
        try:
            self._driver.send_reply(self.reply_q, self.msg_id, None, None, False, self.binary)
        except BrokerError as exc:
            raise MessageDeliveryFailure(f"heartbeat send failed: {exc}") from exc
