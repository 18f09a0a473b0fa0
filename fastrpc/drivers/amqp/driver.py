"""The AMQP driver: what the RPC layer sends (calls, casts, fanout casts,
replies, notifications) and the listeners it asks for.

Sends go through the one sending connection (:mod:`.sending`), calls wait on
the reply queue (:mod:`.replies`), and each listener has a connection of its
own (:mod:`.rpc_listener`, :mod:`.notifications`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from fastrpc import envelope, metrics, tracing
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp.codec import PackedProperties
from fastrpc.amqp.sync import Mailbox
from fastrpc.drivers.amqp.connecting import Backoff, connection_params
from fastrpc.drivers.amqp.consumer import Consumer
from fastrpc.drivers.amqp.errors import messaging_error
from fastrpc.drivers.amqp.notifications import AmqpNotificationListener
from fastrpc.drivers.amqp.replies import Replies
from fastrpc.drivers.amqp.rpc_listener import AmqpListener
from fastrpc.drivers.amqp.sending import Sender
from fastrpc.drivers.base import BaseDriver
from fastrpc.drivers.broker_rules import is_deprecation_refusal
from fastrpc.drivers.topology import ExchangeSpec, Topology, publish_properties
from fastrpc.envelope import EnvelopeError, Reply, encode_bare
from fastrpc.exceptions import BrokerError, ConfigurationError, MessageDeliveryFailure, MessageUndeliverable
from fastrpc.failures import deserialize_remote_exception, serialize_remote_exception
from fastrpc.options import DEFAULT_OPTIONS, Options

LOG = logging.getLogger(__name__)

# Ids for _unique_id / _msg_id, from the envelope codec (compiled: no formatting call).
new_id = envelope.new_id
ROUTE_CACHE_SIZE = 1024  # targets whose exchange and routing key are remembered
_L = TypeVar("_L", bound=Consumer)
# What no wait for the broker can cure: raised at once by listen().
REFUSALS = (amqp_exc.ChannelClosed, amqp_exc.LoginRefused)


def observe(conf: Options) -> None:
    """Turn on what the options ask for, process-wide: metrics, their
    exporter (MetricsExporterError when its port is taken), and traces."""
    if conf.tracing and not tracing.on:
        tracing.enable()
    if conf.metrics or conf.metrics_port:
        metrics.enable()
    if conf.metrics_port:
        try:
            from fastrpc import prometheus
        except ImportError as exc:
            raise ConfigurationError(f"metrics_port is set, but {exc}") from exc
        prometheus.serve(conf.metrics_port, conf.metrics_host)


class AmqpDriver(BaseDriver):
    """The ``rabbit://``, ``fastrpc://`` and ``amqp://`` transport."""

    def __init__(self, conf: Any, url: Any, default_exchange: str | None = None,
                 allowed_remote_exmods: list[str] | None = None) -> None:
        conf = Options.coerce(conf)
        conf.validate()  # also when changed since it was made; below, typed attributes
        observe(conf)
        exchange = default_exchange or conf.control_exchange or DEFAULT_OPTIONS["control_exchange"]
        super().__init__(conf, url, exchange, list(allowed_remote_exmods or []))
        self.topology = Topology(conf)
        self.params = connection_params(conf, url)
        self.binary = conf.serialization == "msgpack"
        self.max_body = int(conf.max_message_size)
        self._lock = threading.Lock()  # the listener list and the closed flag, taken together
        self._closed = threading.Event()  # set by cleanup(); also ends waits for the broker
        self._sender = Sender(conf, self.params, self._closed)
        self._replies = Replies(self._sender, self.topology, self.max_body)
        self._listeners: list[Consumer] = []
        # (exchange, topic, server, fanout) -> (ExchangeSpec, routing key)
        self._routes: dict[tuple[Any, ...], tuple[ExchangeSpec, str]] = {}
        self._ctype = envelope.content_type(self.binary)
        # Every publish of a kind carries the same properties: encoded once
        # (a publish copies their bytes).
        self._cast_props = PackedProperties(publish_properties(self._ctype))
        self._call_props: dict[float | None, PackedProperties] = {}
        self._reply_props = {b: PackedProperties(publish_properties(envelope.content_type(b)))
                             for b in (False, True)}
        # Turns a reply's failure into the exception a call raises: oslo's
        # own function when this driver serves oslo.messaging's API.
        self.rebuild_failure: Callable[[str, list[str]], BaseException] = deserialize_remote_exception

    @property
    def sending_connection(self) -> Any:
        """The connection sends and the reply queue use now (None before the first send)."""
        return self._sender.conn

    @property
    def reply_queue(self) -> str | None:
        """The reply queue's name, once the first call declared it."""
        return self._replies.name

    @property
    def waiting_calls(self) -> dict[str, Any]:
        """The calls waiting for a reply, by ``_msg_id``."""
        return self._replies.waiters

    @property
    def late_replies(self) -> int:
        """Replies that arrived after their caller gave up."""
        return self._replies.late_replies

    @property
    def bad_replies(self) -> int:
        """Replies dropped as malformed."""
        return self._replies.bad_replies

    # -- sending -------------------------------------------------------------

    def _new_route(self, target: Any, key: tuple[Any, ...]) -> tuple[ExchangeSpec, str]:
        """The exchange and routing key of ``target``, cached under ``key``
        (send() looks the cache up itself: a method call per message costs more)."""
        topo = self.topology
        route: tuple[ExchangeSpec, str]
        if target.fanout:
            route = (topo.fanout_exchange(target.topic), target.topic)
        else:
            route = (topo.topic_exchange(topo.exchange_name(target.exchange, self.default_exchange)),
                     topo.routing_key(target.topic, target.server))
        if len(self._routes) >= ROUTE_CACHE_SIZE:
            self._routes.clear()
        self._routes[key] = route
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
            route = self._routes.get(key)
            ex, routing_key = route if route is not None else self._new_route(target, key)
            unique_id = new_id()
            sender = self._sender
            if not wait_for_reply:
                if tracing.on:
                    span, message = tracing.start_send(ex.name, routing_key, message, None)
                body = envelope.encode_request(message, ctxt, unique_id, binary=self.binary)
                if len(body) > self.max_body:  # checked inline: a method call per message costs more
                    self._refuse_size(body, message)
                if at_least_once:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    self._publish_confirmed(ex, routing_key, body, self._cast_props, retry, deadline, message)
                else:
                    sender.publish(ex, routing_key, body, self._cast_props, retry, None)
                if metrics.on:
                    metrics.counts[metrics.CASTS] += 1
                if span is not None:
                    span.end()
                return None

            started = time.monotonic()  # also the call's start for its latency
            deadline = None if timeout is None else started + timeout
            rq = self._replies
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
                self._refuse_size(body, message)
            props = self._call_props.get(timeout)
            if props is None:
                props = PackedProperties(publish_properties(self._ctype, timeout))
                if len(self._call_props) < 64:  # timeouts are few; do not grow without bound
                    self._call_props[timeout] = props
            replies: Mailbox[Reply] = Mailbox()
            waiters = rq.waiters
            waiters[msg_id] = replies
            try:
                if at_least_once:
                    # Confirmed, so in its queue: a lost connection does not lose it.
                    self._publish_confirmed(ex, routing_key, body, props, retry, deadline, message)
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
            self._send_failed(wait_for_reply, error, span)
            raise error from exc
        except Exception as exc:
            self._send_failed(wait_for_reply, exc, span)
            raise
        # Outside the boundary: a remote exception is the caller's, whatever its class.
        if reply.failure is not None:
            remote = self.rebuild_failure(reply.failure, self.allowed_remote_exmods)
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

    @staticmethod
    def _send_failed(call: bool, exc: BaseException, span: tracing.Span | None) -> None:
        """A call or cast raises ``exc`` (not a remote one): count it, end its span."""
        if metrics.on:
            metrics.send_failed(call, exc)
        if span is not None:
            span.end(exc)

    def _publish_confirmed(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: PackedProperties,
                           retry: int | None, deadline: float | None, message: dict) -> None:
        """The sender's confirmed publish, its refusals as fastrpc's exceptions:
        MessageUndeliverable when no queue took the message, MessageDeliveryFailure
        when the broker refused it."""
        try:
            self._sender.publish_confirmed(ex, routing_key, body, props, retry, deadline)
        except amqp_exc.MessageReturned as exc:
            raise MessageUndeliverable(exc, ex.name, routing_key, message) from exc
        except amqp_exc.ChannelClosed as exc:
            raise messaging_error(exc) from exc  # a refused declaration, say
        except amqp_exc.AMQPError as exc:
            raise MessageDeliveryFailure(f"the broker did not take the message: {exc}") from exc

    def send_notification(self, target: Any, ctxt: dict, message: dict, version: float,
                          retry: int | None = None) -> None:
        """Publish a notification as oslo's rabbit driver does.

        To the topic exchange, with the target's topic (``<topic>.<priority>``)
        as routing key. A queue of that name is declared and bound first, so
        notifications wait there until their consumer comes. Version 2.0 is
        enveloped like a request, 1.0 is the bare message; always JSON, since
        any service may consume them. EnvelopeError (nothing sent) when the
        message cannot be encoded or is larger than ``max_message_size``.
        """
        topo = self.topology
        ex = topo.topic_exchange(topo.exchange_name(target.exchange, self.default_exchange))
        routing_key = target.topic
        unique_id = new_id()
        if version == 2.0:
            body = envelope.encode_request(message, ctxt, unique_id)
        else:
            body = encode_bare(message, ctxt, unique_id)
        if len(body) > self.max_body:
            # Bad input as much as an unencodable payload: no retry can send it.
            raise EnvelopeError(f"the notification is {len(body)} bytes, more than max_message_size "
                                f"({self.max_body} bytes)")
        props = self._reply_props[False]  # JSON, no expiration
        sender = self._sender

        def attempt() -> None:
            pub = sender.ensure_exchange(ex)
            if (ex.name, routing_key) not in sender.notify_queues:
                sender.ensure_bound_queue(ex, topo.topic_queue(routing_key), routing_key)
            pub.basic_publish_tracked(ex.name, routing_key, body, props)

        try:
            sender.with_retry(attempt, retry, None)
        except amqp_exc.AMQPError as exc:
            raise messaging_error(exc) from exc

    def _refuse_size(self, body: bytes, message: dict) -> NoReturn:
        """Refuse a request its receiver would reject as too large (no timeout later)."""
        raise MessageDeliveryFailure(
            f"request for method {message.get('method')!r} is {len(body)} bytes, more than "
            f"max_message_size ({self.max_body} bytes); not sent")

    # -- replies (for the RPC listener's incoming messages) ------------------

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
            body = self._error_reply(msg_id, ValueError(f"the result could not be encoded: {reason}"), binary)
        if len(body) > self.max_body:
            # The caller would reject it and wait until its timeout: tell it why instead.
            LOG.error("Reply to %s is %d bytes, more than max_message_size (%d); sending an error instead",
                      msg_id, len(body), self.max_body)
            body = self._error_reply(msg_id, ValueError(f"the reply is {len(body)} bytes, more than "
                                                        f"max_message_size ({self.max_body} bytes) allows"), binary)
        try:
            self._sender.publish_reply(reply_q, body, self._reply_props[bool(binary)],
                                       self.topology.mandatory_replies)
        except amqp_exc.AMQPError as exc:
            raise messaging_error(exc) from exc

    @staticmethod
    def _error_reply(msg_id: str, error: Exception, binary: bool) -> bytes:
        """The body of a final reply that raises ``error`` in the caller."""
        return envelope.encode_reply(msg_id, new_id(), None, serialize_remote_exception(error), True, binary)

    def send_error_reply(self, exc: EnvelopeError) -> None:
        """Tell the caller of a malformed request why it was rejected."""
        assert exc.msg_id is not None and exc.reply_q is not None
        data = serialize_remote_exception(EnvelopeError(f"malformed request rejected: {exc.reason}"))
        try:
            self.send_reply(exc.reply_q, exc.msg_id, None, data, True, exc.binary)
        except (BrokerError, MessageDeliveryFailure) as err:
            LOG.warning("Could not send the error reply for %s: %s", exc.msg_id, err)

    # -- listening -----------------------------------------------------------

    def listen(self, target: Any, batch_size: int = 1, batch_timeout: float | None = None) -> AmqpListener:
        """A listener consuming ``target``'s queues; waits while the broker
        cannot be reached (see :meth:`_until_connected`)."""
        return self._until_connected(lambda: AmqpListener(self, target))

    def listen_for_notifications(self, targets_and_priorities: Iterable[tuple[Any, str]], pool: str | None,
                                 batch_size: int = 1,
                                 batch_timeout: float | None = None) -> AmqpNotificationListener:
        """Consume notifications (see :mod:`.notifications`); waits for the
        broker as :meth:`listen` does."""
        return self._until_connected(lambda: AmqpNotificationListener(self, targets_and_priorities, pool))

    def _until_connected(self, make: Callable[[], _L]) -> _L:
        """``make()``, retried with the reconnect backoff while the broker
        cannot be reached, as oslo's servers wait at start (a service may boot
        before its broker); MessageDeliveryFailure once the transport is
        cleaned up. A refusal (a declare with other arguments, wrong
        credentials, a virtual host that does not exist) is raised at once, as
        a fastrpc exception (:mod:`.errors`)."""
        backoff = Backoff(self.conf)
        while True:
            try:
                listener = make()
            except (amqp_exc.AMQPError, OSError) as exc:
                if isinstance(exc, REFUSALS) or is_deprecation_refusal(exc):
                    raise messaging_error(exc) from exc
                if self._closed.is_set():
                    raise MessageDeliveryFailure(f"the transport was cleaned up: {exc}") from exc
                delay = backoff.next()
                LOG.warning("Cannot listen yet (%s); next attempt in %.1fs", exc, delay)
                self._closed.wait(delay)
                continue
            with self._lock:
                # Checked where cleanup() takes the list: either it cleans this
                # listener up, or this sees the cleanup.
                closed = self._closed.is_set()
                if not closed:
                    self._listeners.append(listener)
            if closed:
                listener.cleanup()
                raise MessageDeliveryFailure("the transport was cleaned up")
            return listener

    def health(self) -> list[dict[str, Any]]:
        """The sending connection's state (once it was used) and each listener's."""
        with self._lock:
            listeners = list(self._listeners)
        report = [lst.link.health().as_dict() for lst in listeners]
        sender = self._sender.link.health().as_dict()
        if sender["state"] == "connected" and self._replies.restoring:
            # Connected, but the reply consumer is not back yet: calls would wait.
            sender.update(state="reconnecting", error="reply queue not consumed again yet")
        return report if sender["state"] == "new" else [sender, *report]

    @property
    def closed(self) -> bool:
        """Whether cleanup() was called."""
        return self._closed.is_set()

    def forget_listener(self, listener: Consumer) -> None:
        """``listener`` was cleaned up: cleanup() need not do it again."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def cleanup(self) -> None:
        with self._lock:
            self._closed.set()
            listeners = list(self._listeners)
        for listener in listeners:
            listener.cleanup()
        self._sender.close()  # and the reply queue forgotten, in the same step
