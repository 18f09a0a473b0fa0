"""A driver's sends: a request's route, envelope and publish and, for a
call, the wait for its reply and what the reply says; and the replies a
server sends.

:class:`Calls` is the body of ``AmqpDriver.send`` and ``send_reply``; they
run once per call, cast or request served, so its state is laid out in C in
the compiled build (a call reads the reply queue's state and waits on it
without a look-up by name).

Import this module as ``fastrpc.drivers.amqp.calls``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.calls`` (see fastrpc._impl); its C
layout is fastrpc/_ext/calls.pxd.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, NoReturn

from fastrpc import envelope, metrics, tracing
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp.codec import PackedProperties
from fastrpc.amqp.sync import Mailbox
from fastrpc.drivers.amqp.errors import messaging_error
from fastrpc.drivers.amqp.replies import Replies
from fastrpc.drivers.amqp.sending import Sender
from fastrpc.drivers.topology import ExchangeSpec, Topology, publish_properties
from fastrpc.envelope import EnvelopeError, Reply, new_id
from fastrpc.exceptions import MessageDeliveryFailure, MessageUndeliverable
from fastrpc.failures import serialize_remote_exception

__all__ = ["ROUTE_CACHE_SIZE", "Calls", "error_reply"]

LOG = logging.getLogger("fastrpc.drivers.amqp.driver")  # the driver's name, whichever build runs

ROUTE_CACHE_SIZE = 1024  # targets whose exchange and routing key are remembered
CALL_PROPS_CACHE_SIZE = 64  # timeouts are few; their properties are not kept without bound


class Calls:
    """Sends requests for one driver: ``send`` is ``AmqpDriver.send``.

    ``driver`` is read only when a reply carries a remote failure (its
    ``rebuild_failure`` and ``allowed_remote_exmods`` may change after it was
    made: oslo's API installs its own). ``max_body`` is the driver's
    ``max_message_size``.
    """

    def __init__(self, driver: Any, topology: Topology, default_exchange: str, sender: Sender, replies: Replies,
                 binary: bool, max_body: int) -> None:
        self.driver = driver
        self.topology = topology
        self.default_exchange = default_exchange
        self.sender = sender
        self.replies = replies
        self.binary = binary
        self.max_body = max_body
        # (exchange, topic, server, fanout) -> (ExchangeSpec, routing key)
        self.routes: dict[tuple[Any, ...], tuple[ExchangeSpec, str]] = {}
        self.ctype = envelope.content_type(binary)
        # Every publish of a kind carries the same properties: encoded once
        # (a publish copies their bytes); a call's depend on its timeout.
        self.cast_props = PackedProperties(publish_properties(self.ctype))
        self.call_props: dict[float | None, PackedProperties] = {}
        # A reply is written as its request was (msgpack or JSON).
        self.reply_props = {b: PackedProperties(publish_properties(envelope.content_type(b))) for b in (False, True)}

    def new_route(self, target: Any, key: tuple[Any, ...]) -> tuple[ExchangeSpec, str]:
        """The exchange and routing key of ``target``, cached under ``key``
        (send() looks the cache up itself: a method call per message costs more)."""
        topo = self.topology
        route: tuple[ExchangeSpec, str]
        if target.fanout:
            route = (topo.fanout_exchange(target.topic), target.topic)
        else:
            route = (topo.topic_exchange(topo.exchange_name(target.exchange, self.default_exchange)),
                     topo.routing_key(target.topic, target.server))
        if len(self.routes) >= ROUTE_CACHE_SIZE:
            self.routes.clear()
        self.routes[key] = route
        return route

    def send(self, target: Any, ctxt: dict, message: dict, wait_for_reply: bool = False,
             timeout: float | None = None, call_monitor_timeout: float | None = None,
             retry: int | None = None, at_least_once: bool = False) -> Any:
        """``at_least_once``: publish mandatory and wait for the broker's
        confirm, raising MessageUndeliverable at once when no queue is bound
        for the target (oslo's ``TransportOptions(at_least_once=True)``); a
        cast's ``timeout``, if any, bounds that wait and everything before it."""
        span = None
        try:
            key = (target.exchange, target.topic, target.server, target.fanout)
            route = self.routes.get(key)
            ex, routing_key = route if route is not None else self.new_route(target, key)
            unique_id = new_id()
            sender = self.sender
            if not wait_for_reply:
                if tracing.on:
                    span, message = tracing.start_send(ex.name, routing_key, message, None)
                body = envelope.encode_request(message, ctxt, unique_id, None, None, None, self.binary)
                if len(body) > self.max_body:  # checked inline: a method call per message costs more
                    self.refuse_size(body, message)
                if at_least_once:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    self.publish_confirmed(ex, routing_key, body, self.cast_props, retry, deadline, message)
                else:
                    sender.publish(ex, routing_key, body, self.cast_props, retry, None)
                if metrics.on:
                    metrics.counts[metrics.CASTS] += 1
                if span is not None:
                    span.end()
                return None

            started = time.monotonic()  # also the call's start for its latency
            deadline = None if timeout is None else started + timeout
            rq = self.replies
            reply_q = rq.name
            ch = rq.ch
            if reply_q is None or ch is None or not ch.is_open or not rq.consuming:
                reply_q = sender.with_retry(functools.partial(rq.ensure, deadline), retry, deadline)
            msg_id = new_id()
            if tracing.on:
                span, message = tracing.start_send(ex.name, routing_key, message, msg_id)
            body = envelope.encode_request(message, ctxt, unique_id, msg_id, reply_q, call_monitor_timeout,
                                           self.binary)
            if len(body) > self.max_body:
                self.refuse_size(body, message)
            props = self.call_props.get(timeout)
            if props is None:
                props = PackedProperties(publish_properties(self.ctype, timeout))
                if len(self.call_props) < CALL_PROPS_CACHE_SIZE:
                    self.call_props[timeout] = props
            replies: Mailbox[Reply] = Mailbox()
            waiters = rq.waiters
            waiters[msg_id] = replies
            try:
                if at_least_once:
                    # Confirmed, so in its queue: a lost connection does not lose it.
                    self.publish_confirmed(ex, routing_key, body, props, retry, deadline, message)
                    sent = None
                else:
                    sent = sender.publish_call(ex, routing_key, body, props, retry, deadline)
                # The same deadline: a publish that had to reconnect took some of the timeout.
                reply = rq.wait(replies, msg_id, deadline, call_monitor_timeout, sent)
                while not isinstance(reply, Reply):
                    # Returned (no queue took it), refused (nacked) or lost
                    # before the broker got it: send it again, to the reply
                    # queue of now.
                    if rq.name is not None and rq.name != reply_q:
                        reply_q = rq.name
                        body = envelope.encode_request(message, ctxt, unique_id, msg_id, reply_q,
                                                       call_monitor_timeout, self.binary)
                    sent = sender.publish_call(ex, routing_key, body, props, retry, deadline)
                    reply = rq.wait(replies, msg_id, deadline, call_monitor_timeout, sent)
            finally:
                waiters.pop(msg_id, None)
                conn = sender.conn
                if conn is not None:
                    conn.done_waiting(replies)  # a read baton handed to this call goes on
        except amqp_exc.AMQPError as exc:
            error = messaging_error(exc)
            send_failed(wait_for_reply, error, span)
            raise error from exc
        except Exception as exc:
            send_failed(wait_for_reply, exc, span)
            raise
        # Outside the boundary: a remote exception is the caller's, whatever its class.
        if reply.failure is not None:
            driver = self.driver
            remote = driver.rebuild_failure(reply.failure, driver.allowed_remote_exmods)
            if metrics.on:
                metrics.remote_error(started, remote)
            if span is not None:
                span.end(remote)
            raise remote
        if metrics.on:
            metrics.call_answered(started)
        if span is not None:
            span.end()
        return reply.result

    def publish_confirmed(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: PackedProperties,
                          retry: int | None, deadline: float | None, message: dict) -> None:
        """The sender's confirmed publish, its refusals as fastrpc's exceptions:
        MessageUndeliverable when no queue took the message, MessageDeliveryFailure
        when the broker refused it."""
        try:
            self.sender.publish_confirmed(ex, routing_key, body, props, retry, deadline)
        except amqp_exc.MessageReturned as exc:
            raise MessageUndeliverable(exc, ex.name, routing_key, message) from exc
        except amqp_exc.ChannelClosed as exc:
            raise messaging_error(exc) from exc  # a refused declaration, say
        except amqp_exc.AMQPError as exc:
            raise MessageDeliveryFailure(f"the broker did not take the message: {exc}") from exc

    def send_reply(self, reply_q: str, msg_id: str, result: Any, failure: str | None, ending: bool,
                   binary: bool) -> None:
        """Answer a call (``ending``), or tell its caller it still runs;
        MessageDeliveryFailure or a BrokerError when that failed."""
        try:
            body = envelope.encode_reply(msg_id, new_id(), result, failure, ending, binary)
        except Exception as exc:  # noqa: BLE001 - a result's own to_dict() may raise anything
            # Without an answer the caller would wait until its timeout: tell it why instead.
            reason = exc.reason if isinstance(exc, EnvelopeError) else f"{type(exc).__name__}: {exc}"
            LOG.error("Reply to %s could not be encoded (%s); sending an error instead", msg_id, reason)
            body = error_reply(msg_id, ValueError(f"the result could not be encoded: {reason}"), binary)
        if len(body) > self.max_body:
            # The caller would reject it and wait until its timeout: tell it why instead.
            LOG.error("Reply to %s is %d bytes, more than max_message_size (%d); sending an error instead",
                      msg_id, len(body), self.max_body)
            body = error_reply(msg_id, ValueError(f"the reply is {len(body)} bytes, more than "
                                                  f"max_message_size ({self.max_body} bytes) allows"), binary)
        try:
            self.sender.publish_reply(reply_q, body, self.reply_props[bool(binary)], self.topology.mandatory_replies)
        except amqp_exc.AMQPError as exc:
            raise messaging_error(exc) from exc

    def refuse_size(self, body: bytes, message: dict) -> NoReturn:
        """Refuse a request its receiver would reject as too large (no timeout later)."""
        raise MessageDeliveryFailure(
            f"request for method {message.get('method')!r} is {len(body)} bytes, more than "
            f"max_message_size ({self.max_body} bytes); not sent")


def send_failed(call: bool, exc: BaseException, span: tracing.Span | None) -> None:
    """A call or cast raises ``exc`` (not a remote one): count it, end its span."""
    if metrics.on:
        metrics.send_failed(call, exc)
    if span is not None:
        span.end(exc)


def error_reply(msg_id: str, error: Exception, binary: bool) -> bytes:
    """The body of a final reply that raises ``error`` in the caller."""
    return envelope.encode_reply(msg_id, new_id(), None, serialize_remote_exception(error), True, binary)
