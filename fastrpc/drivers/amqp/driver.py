"""The AMQP driver: what the RPC layer sends (calls, casts, fanout casts,
replies, notifications) and the listeners it asks for.

Sends go through the one sending connection (:mod:`.sending`), calls wait on
the reply queue (:mod:`.replies`), and each listener has a connection of its
own (:mod:`.rpc_listener`, :mod:`.notifications`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastrpc import envelope, metrics, tracing
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.drivers.amqp.calls import Calls
from fastrpc.drivers.amqp.connecting import Backoff, connection_params
from fastrpc.drivers.amqp.consumer import Consumer
from fastrpc.drivers.amqp.errors import messaging_error
from fastrpc.drivers.amqp.notifications import AmqpNotificationListener
from fastrpc.drivers.amqp.replies import Replies
from fastrpc.drivers.amqp.rpc_listener import AmqpListener
from fastrpc.drivers.amqp.sending import Sender
from fastrpc.drivers.base import BaseDriver
from fastrpc.drivers.broker_rules import is_deprecation_refusal
from fastrpc.drivers.topology import Topology
from fastrpc.envelope import EnvelopeError, encode_bare
from fastrpc.exceptions import BrokerError, ConfigurationError, MessageDeliveryFailure
from fastrpc.failures import deserialize_remote_exception, serialize_remote_exception
from fastrpc.options import DEFAULT_OPTIONS, Options

LOG = logging.getLogger(__name__)

# Ids for _unique_id / _msg_id, from the envelope codec (compiled: no formatting call).
new_id = envelope.new_id
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
        # max_message_size: the largest body taken (the listeners read it per
        # request) and, in Calls (a copy), sent.
        self.max_body = max_body = int(conf.max_message_size)
        self._lock = threading.Lock()  # the listener list and the closed flag, taken together
        self._closed = threading.Event()  # set by cleanup(); also ends waits for the broker
        self._sender = Sender(conf, self.params, self._closed)
        self._replies = Replies(self._sender, self.topology, max_body)
        self._calls = Calls(self, self.topology, self.default_exchange, self._sender, self._replies, self.binary,
                            max_body)
        # Transport._send and a request's reply call the compiled Calls'
        # methods themselves: no Python frame in between (send() and
        # send_reply() below say the same for readers and type checkers).
        self.send = self._calls.send  # type: ignore[method-assign]
        self.send_reply = self._calls.send_reply  # type: ignore[method-assign]
        self._listeners: list[Consumer] = []
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

    def send(self, target: Any, ctxt: dict, message: dict, wait_for_reply: bool = False,
             timeout: float | None = None, call_monitor_timeout: float | None = None,
             retry: int | None = None, at_least_once: bool = False) -> Any:
        """Send a call or cast: see :meth:`fastrpc.drivers.amqp.calls.Calls.send`."""
        return self._calls.send(target, ctxt, message, wait_for_reply, timeout, call_monitor_timeout, retry,
                                at_least_once)

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
        props = self._calls.reply_props[False]  # JSON, no expiration
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

    # -- replies (for the RPC listener's incoming messages) ------------------

    def send_reply(self, reply_q: str, msg_id: str, result: Any, failure: str | None, ending: bool,
                   binary: bool) -> None:
        """Answer a call: see :meth:`fastrpc.drivers.amqp.calls.Calls.send_reply`."""
        self._calls.send_reply(reply_q, msg_id, result, failure, ending, binary)

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
