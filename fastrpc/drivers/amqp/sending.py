"""The driver's one sending connection: requests, replies and notifications
are published on it from any thread (it also carries the reply queue's
consumer, see :mod:`fastrpc.drivers.amqp.replies`), with reconnects and
retries as the caller's ``retry`` and deadline allow."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.amqp.connecting import Backoff, declare_exchange, declare_queue, open_connection
from fastrpc.drivers.broker_rules import is_deprecation_refusal
from fastrpc.drivers.topology import ExchangeSpec, QueueSpec
from fastrpc.exceptions import MessageDeliveryFailure, MessagingTimeout

LOG = logging.getLogger(__name__)

REPLY_RETRIES = 3  # reconnect attempts for one reply before giving up
# What a publish raises when the connection or channel went away: worth a
# reconnect and another attempt.
RETRIABLE = (amqp_exc.ConnectionLost, amqp_exc.ConnectionRefused, amqp_exc.ConnectionClosed,
             amqp_exc.ChannelClosed, OSError)


def blocked_error(exc: amqp_exc.PublishBlocked, deadline: float | None) -> Exception:
    """What a publish the broker kept blocking (memory or disk alarm) means for
    the caller: a call's timeout, or a delivery failure once the connection's
    ``blocked_timeout`` passed (casts, and calls with a longer timeout)."""
    if deadline is not None and time.monotonic() >= deadline:
        return MessagingTimeout(f"the broker blocked publishing until the call timed out: {exc}")
    return MessageDeliveryFailure(f"the broker blocked publishing: {exc}")


class Sender:
    """Owns the sending connection, its channels and what was declared on it.

    ``lock`` (re-entrant) guards the connection, the channels and the
    declarations; the reply queue takes it too. ``closed`` is the driver's:
    set at cleanup, it ends every wait for the broker.
    """

    def __init__(self, conf: Any, params: list[ConnectionParams], closed: threading.Event) -> None:
        self.conf = conf
        self.params = params
        self.closed = closed
        self.lock = threading.RLock()
        self.conn: Connection | None = None
        self.pub_ch: Any = None
        self.decl_ch: Any = None
        self.confirm_ch: Any = None  # publisher confirms on: at-least-once sends
        self.declared: set[str] = set()  # exchanges
        self.notify_queues: set[tuple[str, str]] = set()  # (exchange, routing key)
        self.confirm_timeout = float(conf.rpc_response_timeout)  # Options refuses <= 0
        # Hooks of the reply queue: a new connection (its channel and consumer
        # are gone), a lost one (calls may be waiting), and the close at cleanup.
        self.on_new_connection: Callable[[], None] | None = None
        self.on_connection_lost: Callable[[], None] | None = None
        self.on_closed: Callable[[], None] | None = None  # under the lock, by close()

    # -- connection ----------------------------------------------------------

    def connection(self) -> Connection:
        with self.lock:
            conn = self.conn
            if conn is not None and conn.is_open:
                return conn
            if self.closed.is_set():
                raise MessageDeliveryFailure("the transport was cleaned up")
            # A previous connection died: its channels and consumer are gone,
            # but the reply queue outlives it (x-expires), so keep its name.
            self.declared.clear()
            self.notify_queues.clear()
            self.pub_ch = self.decl_ch = self.confirm_ch = None
            if self.on_new_connection is not None:
                self.on_new_connection()
            conn = self.conn = open_connection(self.params, conn)
            conn.on_close.append(self._on_connection_closed)
            return conn

    def _on_connection_closed(self, conn: Connection, exc: BaseException) -> None:
        if self.closed.is_set() or conn is not self.conn or self.on_connection_lost is None:
            return
        self.on_connection_lost()

    def channels(self) -> tuple[Any, Any]:
        """The publishing channel and the declaring one (a refused declare
        closes only the latter)."""
        with self.lock:
            conn = self.connection()
            if self.pub_ch is None or not self.pub_ch.is_open:
                self.pub_ch = conn.channel()
                self.pub_ch.on_return = self._on_returned
            if self.decl_ch is None or not self.decl_ch.is_open:
                self.decl_ch = conn.channel()
            return self.pub_ch, self.decl_ch

    def ensure_exchange(self, ex: ExchangeSpec) -> Any:
        """The publishing channel, once ``ex`` is declared on this connection."""
        pub, decl = self.channels()
        if ex.name in self.declared:
            return pub
        with self.lock:
            if ex.name not in self.declared:
                try:
                    declare_exchange(decl, ex)
                except amqp_exc.ChannelClosed:
                    self.decl_ch = None
                    raise
                self.declared.add(ex.name)
        return pub

    def ensure_bound_queue(self, ex: ExchangeSpec, queue_spec: QueueSpec, routing_key: str) -> None:
        """Declare ``queue_spec`` and bind it to ``ex`` with ``routing_key``,
        once per connection (notifications wait there for their consumer);
        callers skip the call when ``notify_queues`` holds the pair already."""
        with self.lock:
            if (ex.name, routing_key) in self.notify_queues:
                return
            _pub, decl = self.channels()
            declare_queue(decl, queue_spec)
            decl.queue_bind(queue_spec.name, ex.name, routing_key)
            self.notify_queues.add((ex.name, routing_key))

    def _on_returned(self, event: spec.Returned) -> None:
        # A mandatory reply whose queue is gone: the caller stopped waiting.
        LOG.warning("Reply to %s was returned by the broker: %s %s", event.routing_key, event.reply_code,
                    event.reply_text)

    def close(self) -> None:
        with self.lock:
            conn, self.conn = self.conn, None
            self.pub_ch = self.decl_ch = self.confirm_ch = None
            self.declared.clear()
            self.notify_queues.clear()
            if self.on_closed is not None:
                self.on_closed()
        if conn is not None:
            conn.close()

    # -- publishing ----------------------------------------------------------

    def publish(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: dict[str, Any],
                retry: int | None, deadline: float | None) -> None:
        # Usual case: the channel is open and the exchange declared, so no
        # lock and no retry machinery; any failure takes the full path below.
        pub = self.pub_ch
        if pub is not None and ex.name in self.declared:
            try:
                pub.basic_publish(ex.name, routing_key, body, props, False, False, deadline)
                return
            except RETRIABLE:
                pass
            except amqp_exc.PublishBlocked as exc:
                raise blocked_error(exc, deadline) from exc
        # partial, not a closure: a closure's cells would be made on every call.
        self.with_retry(functools.partial(self._publish_once, ex, routing_key, body, props, deadline),
                        retry, deadline)

    def _publish_once(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: dict[str, Any],
                      deadline: float | None) -> None:
        self.ensure_exchange(ex).basic_publish(ex.name, routing_key, body, props, False, False, deadline)

    def publish_confirmed(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: dict[str, Any],
                          retry: int | None, deadline: float | None) -> None:
        """Publish mandatory on the confirm channel and wait for the broker's
        answer: ``amqp.exceptions.MessageReturned`` when it returned the
        message (no queue bound), another AMQPError when it refused it,
        MessagingTimeout when no answer came before ``deadline`` (casts:
        ``rpc_response_timeout``). A connection lost before the confirm
        publishes again, as ``retry`` allows (a server drops the duplicate by
        its ``_unique_id``)."""
        confirm_timeout = self.confirm_timeout

        def attempt() -> None:
            self.ensure_exchange(ex)
            with self.lock:
                ch = self.confirm_ch
                if ch is None or not ch.is_open:
                    ch = self.connection().channel()
                    ch.confirm_select()
                    self.confirm_ch = ch
            confirmed = ch.basic_publish(ex.name, routing_key, body, props, True, False, deadline)
            wait = confirm_timeout if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                confirmed.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                raise MessagingTimeout(f"no publisher confirm for a message to {ex.name!r} / {routing_key!r} "
                                       f"within {wait:g}s") from None

        self.with_retry(attempt, retry, deadline)

    def publish_reply(self, reply_q: str, body: bytes, props: dict[str, Any], mandatory: bool) -> None:
        """Publish a reply to ``reply_q`` through the default exchange."""
        pub = self.pub_ch
        if pub is not None:
            try:
                pub.basic_publish("", reply_q, body, props, mandatory)
                return
            except RETRIABLE:
                pass
            except amqp_exc.PublishBlocked as exc:
                raise blocked_error(exc, None) from exc
        # A few attempts ride out a reconnect; the caller's reply queue
        # survives it, so the answer is still worth sending.
        self.with_retry(functools.partial(self._reply_once, reply_q, body, props, mandatory), REPLY_RETRIES, None)

    def _reply_once(self, reply_q: str, body: bytes, props: dict[str, Any], mandatory: bool) -> None:
        pub, _decl = self.channels()
        pub.basic_publish("", reply_q, body, props, mandatory)

    def with_retry(self, func: Any, retry: int | None, deadline: float | None) -> Any:
        """Run ``func``, reconnecting after connection errors.

        ``retry`` None or negative retries until ``deadline`` (forever for
        casts, as oslo does), 0 never retries, N retries N times. A broker
        that kept publishing blocked is no connection error: see
        ``blocked_error``.
        """
        if retry is not None and retry < 0:
            retry = None
        backoff = Backoff(self.conf)
        attempts = 0
        while True:
            try:
                return func()
            except amqp_exc.PublishBlocked as exc:
                raise blocked_error(exc, deadline) from exc
            except RETRIABLE as exc:
                if isinstance(exc, amqp_exc.ChannelClosed) and exc.reply_code not in (
                        spec.CONNECTION_FORCED, spec.INTERNAL_ERROR) or is_deprecation_refusal(exc):
                    raise  # a refused declare or publish: retrying cannot help
                attempts += 1
                if retry is not None and attempts > retry:
                    raise MessageDeliveryFailure(f"cannot reach the broker: {exc}") from exc
                delay = backoff.next()
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise MessagingTimeout(f"broker unreachable until the call timed out: {exc}") from exc
                LOG.warning("Broker connection problem (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
