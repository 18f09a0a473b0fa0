"""The driver's one sending connection: requests, replies and notifications
are published on it from any thread (it also carries the reply queue's
consumer, see :mod:`fastrpc.drivers.amqp.replies`), with reconnects and
retries as the caller's ``retry`` and deadline allow.

Import this module as ``fastrpc.drivers.amqp.sending``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.sending`` (see fastrpc._impl); its C
layout is fastrpc/_ext/sending.pxi.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastrpc import metrics
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.amqp.codec import PackedProperties
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.amqp.connecting import Backoff, HostOrder, declare_exchange, declare_queue, open_connection
from fastrpc.drivers.amqp.link import Link
from fastrpc.drivers.broker_rules import is_deprecation_refusal
from fastrpc.drivers.topology import ExchangeSpec, QueueSpec
from fastrpc.exceptions import MessageDeliveryFailure, MessagingTimeout

# A message's properties: a dict, or encoded once for many publishes.
Properties = dict[str, Any] | PackedProperties

__all__ = [
    "REPLY_RETRIES", "RETRIABLE", "RETURNED_RESEND_DELAY", "RETURNED_TRACKED", "Sender", "blocked_error",
    "broker_silent", "held_until", "op_timeout", "time_left",
]

LOG = logging.getLogger("fastrpc.drivers.amqp.sending")  # one name, whichever build runs

REPLY_RETRIES = 3  # reconnect attempts for one reply before giving up
# Seconds before a message the broker returned (no queue bound yet) is
# published again: a reply by its server, a call's request by its caller.
RETURNED_RESEND_DELAY = 0.25
RETURNED_TRACKED = 4096  # returned replies remembered (when each first came back)
# What a publish raises when the connection or channel went away, or the
# broker did not answer in time: worth a new connection and another attempt.
RETRIABLE = (amqp_exc.ConnectionLost, amqp_exc.ConnectionRefused, amqp_exc.ConnectionClosed,
             amqp_exc.ChannelClosed, amqp_exc.HandshakeTimeout, amqp_exc.OperationTimeout, OSError)


def time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no limit), never negative."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def op_timeout(deadline: float | None) -> float | None:
    """The wait of a synchronous method for a caller with ``deadline``:
    the connection's operation timeout, cut to what is left (None: its own)."""
    return None if deadline is None else max(0.001, deadline - time.monotonic())


@contextlib.contextmanager
def held_until(lock: threading.Lock | threading.RLock, deadline: float | None, what: str) -> Iterator[None]:
    """``lock`` held, waited for no longer than ``deadline`` (then MessagingTimeout naming ``what``)."""
    wait = time_left(deadline)
    if not lock.acquire(timeout=-1 if wait is None else wait):
        raise MessagingTimeout(f"timed out waiting for {what}")
    try:
        yield
    finally:
        lock.release()


def broker_silent(conn: Connection | None) -> bool:
    """Whether ``conn``'s broker has said nothing for a probe interval (the
    connection's watchdog probes a busy connection after that long): then an
    operation that timed out on it was lost in that silence, and the
    connection is given up. One whose broker still answers keeps it: the
    operation was held up elsewhere in the cluster (on RabbitMQ 3.x, a
    declaration waits for a hung member until the cluster drops it)."""
    if conn is None:
        return False
    probe_after = conn.params.probe_after
    if not probe_after:
        return True  # no probes: nothing else would notice
    since = conn.recv_since
    return since is not None and time.monotonic() - since >= probe_after


class _Attempt:
    """One connect in progress, which other senders wait for."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


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
        self.hosts = HostOrder(params, conf.kombu_failover_strategy)
        self.closed = closed
        self.link = Link("sending connection")
        self.lock = threading.RLock()
        self.conn: Connection | None = None
        self._attempt: _Attempt | None = None
        self.pub_ch: Any = None
        self.decl_ch: Any = None
        self.confirm_ch: Any = None  # publisher confirms on: at-least-once sends
        self.reply_ch: Any = None  # replies: mandatory, their returns published again
        self.declared: set[str] = set()  # exchanges
        self.notify_queues: set[tuple[str, str]] = set()  # (exchange, routing key)
        self.confirm_timeout = float(conf.rpc_response_timeout)  # Options refuses <= 0
        self.missing_consumer_timeout = float(conf.kombu_missing_consumer_retry_timeout)
        self._returned: dict[tuple[str, bytes], float] = {}  # returned replies: when first returned
        # Hooks of the reply queue: a new connection (its channel and consumer
        # are gone), a lost one (calls may be waiting on it), and the close at cleanup.
        self.on_new_connection: Callable[[], None] | None = None
        self.on_connection_lost: Callable[[Connection], None] | None = None
        self.on_closed: Callable[[], None] | None = None  # under the lock, by close()
        # A call's request the broker could not route (in the reader thread).
        self.on_call_returned: Callable[[spec.Returned], None] | None = None
        # A publish the broker refused: its channel and delivery tag (in the reader thread).
        self.on_call_nacked: Callable[[Any, int], None] | None = None
        metrics.track_sender(self)

    def pending_confirms(self) -> int:
        """Publishes on the sending connection the broker has not confirmed yet."""
        conn = self.conn
        return conn.pending_confirms if conn is not None and conn.is_open else 0

    def locked(self, deadline: float | None) -> contextlib.AbstractContextManager[None]:
        """``lock``, waited for no longer than ``deadline`` (then MessagingTimeout)."""
        return held_until(self.lock, deadline, "the sending connection")

    # -- connection ----------------------------------------------------------

    def connection(self, deadline: float | None = None) -> Connection:
        """The open sending connection, connecting if needed.

        One thread connects at a time and without holding ``lock``, so that
        senders are not held up behind a host that hangs; the others wait for
        its attempt, each no longer than its own ``deadline``, and get its
        error when it fails.
        """
        while True:
            with self.locked(deadline):
                conn = self.conn
                if conn is not None and conn.is_open:
                    return conn
                if self.closed.is_set():
                    raise MessageDeliveryFailure("the transport was cleaned up")
                attempt = self._attempt
                mine = attempt is None
                if attempt is None:
                    attempt = self._attempt = _Attempt()
            if mine:
                return self._connect(attempt, conn, deadline)
            if not attempt.done.wait(time_left(deadline)):
                raise amqp_exc.HandshakeTimeout("no connection to the broker before the deadline")
            if attempt.error is not None:
                raise amqp_exc.fresh_error(attempt.error)

    def _connect(self, attempt: _Attempt, lost: Connection | None, deadline: float | None) -> Connection:
        try:
            conn = open_connection(self.hosts, lost, deadline)
        except BaseException as exc:
            attempt.error = exc
            with self.lock:
                self._attempt = None
            attempt.done.set()
            self.link.attempt_failed(exc, self.hosts.after(lost)[0].address, None)
            raise
        with self.lock:
            self._attempt = None
            if self.closed.is_set():
                attempt.error = MessageDeliveryFailure("the transport was cleaned up")
            else:
                # A previous connection died: its channels and consumer are gone,
                # but the reply queue outlives it (x-expires), so keep its name.
                self.declared.clear()
                self.notify_queues.clear()
                self.pub_ch = self.decl_ch = self.confirm_ch = self.reply_ch = None
                if self.on_new_connection is not None:
                    self.on_new_connection()
                self.conn = conn
                conn.on_close.append(self._on_connection_closed)
        attempt.done.set()
        if attempt.error is not None:
            conn.close()
            raise attempt.error
        self.link.connected(conn.params.address)
        return conn

    def abandon(self, conn: Connection | None, why: str) -> None:
        """Never use ``conn`` again (the broker stopped answering on it): fail
        it, so that everything waiting on it fails over now."""
        if conn is not None and conn.is_open:
            conn.fail(amqp_exc.ConnectionLost(f"connection to {conn.params.address} abandoned: {why}"))

    def _on_connection_closed(self, conn: Connection, exc: BaseException) -> None:
        if self.closed.is_set() or conn is not self.conn:
            return
        self.link.lost(conn.params.address, exc)
        if self.on_connection_lost is not None:
            self.on_connection_lost(conn)

    def channels(self, deadline: float | None = None) -> tuple[Any, Any]:
        """The publishing channel and the declaring one (a refused declare
        closes only the latter).

        Calls, casts and notifications all go out on the publishing channel,
        so one thread's sends reach a queue in the order it made them (the
        broker keeps no order across channels). Its confirms are on and never
        waited for: a publish is tracked by its delivery tag, which tells,
        when the connection dies, whether the broker had taken it.
        """
        conn = self.connection(deadline)
        with self.locked(deadline):
            if self.conn is not conn:
                conn = self.connection(deadline)  # replaced meanwhile: the current one
            if self.pub_ch is None or not self.pub_ch.is_open:
                ch = conn.channel(op_timeout(deadline))
                ch.confirm_select(op_timeout(deadline))
                ch.on_return = self.on_call_returned
                ch.on_nack = self._on_nacked
                self.pub_ch = ch
            if self.decl_ch is None or not self.decl_ch.is_open:
                self.decl_ch = conn.channel(op_timeout(deadline))
            return self.pub_ch, self.decl_ch

    def ensure_exchange(self, ex: ExchangeSpec, deadline: float | None = None) -> Any:
        """The publishing channel, once ``ex`` is declared on this connection."""
        pub, decl = self.channels(deadline)
        if ex.name in self.declared:
            return pub
        with self.locked(deadline):
            if ex.name not in self.declared:
                try:
                    declare_exchange(decl, ex, op_timeout(deadline))
                except amqp_exc.ChannelClosed:
                    self.decl_ch = None
                    raise
                self.declared.add(ex.name)
        return pub

    def ensure_bound_queue(self, ex: ExchangeSpec, queue_spec: QueueSpec, routing_key: str,
                           deadline: float | None = None) -> None:
        """Declare ``queue_spec`` and bind it to ``ex`` with ``routing_key``,
        once per connection (notifications wait there for their consumer);
        callers skip the call when ``notify_queues`` holds the pair already."""
        with self.locked(deadline):
            if (ex.name, routing_key) in self.notify_queues:
                return
            _pub, decl = self.channels(deadline)
            declare_queue(decl, queue_spec, op_timeout(deadline))
            decl.queue_bind(queue_spec.name, ex.name, routing_key, timeout=op_timeout(deadline))
            self.notify_queues.add((ex.name, routing_key))

    def _on_nacked(self, ch: Any, tag: int) -> None:
        # In the reader thread. The broker refused a publish without handing
        # it to a queue. After a quorum queue's leader is lost, RabbitMQ's
        # channel can keep the dead leader and refuse every later publish to
        # that queue: the publishing channel is replaced (closed here without
        # waiting; the next publish opens a new one), and a call is told.
        if self.pub_ch is ch:
            self.pub_ch = None
            try:
                ch.close()
            except amqp_exc.AMQPError:
                pass
        if self.on_call_nacked is not None:
            self.on_call_nacked(ch, tag)

    def _on_returned(self, event: spec.Returned) -> None:
        """A mandatory reply came back: its queue is not there (yet). Its
        caller may be reconnecting and declaring it again, so publish it again
        a little later, until ``kombu_missing_consumer_retry_timeout`` (as
        oslo's servers do); in the reader thread, so only a timer is set."""
        key = (event.routing_key, event.body)
        now = time.monotonic()
        returned = self._returned
        first = returned.get(key)
        if first is None:
            if len(returned) >= RETURNED_TRACKED:
                # Forget the oldest half: they are past their limit by now or close.
                for old in list(returned)[:RETURNED_TRACKED // 2]:
                    returned.pop(old, None)
            first = returned[key] = now
        if event.reply_code != spec.NO_ROUTE or now - first >= self.missing_consumer_timeout:
            returned.pop(key, None)
            LOG.warning("Reply to %s dropped: returned by the broker (%s %s) for %.0fs", event.routing_key,
                        event.reply_code, event.reply_text, now - first)
            return
        LOG.debug("Reply to %s returned (%s); publishing it again", event.routing_key, event.reply_text)
        timer = threading.Timer(RETURNED_RESEND_DELAY, self._publish_returned, (event,))
        timer.daemon = True
        timer.start()

    def _publish_returned(self, event: spec.Returned) -> None:
        if self.closed.is_set():
            return
        try:
            self.publish_reply(event.routing_key, event.body, event.properties, True)
        except (amqp_exc.AMQPError, MessageDeliveryFailure, MessagingTimeout) as exc:
            LOG.warning("Reply to %s could not be published again: %s", event.routing_key, exc)

    def close(self) -> None:
        with self.lock:
            conn, self.conn = self.conn, None
            self.pub_ch = self.decl_ch = self.confirm_ch = self.reply_ch = None
            self.declared.clear()
            self.notify_queues.clear()
            if self.on_closed is not None:
                self.on_closed()
        if conn is not None:
            conn.close()

    # -- publishing ----------------------------------------------------------

    def publish(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: Properties,
                retry: int | None, deadline: float | None) -> None:
        # Usual case: the channel is open and the exchange declared, so no
        # lock and no retry machinery; any failure takes the full path below.
        pub = self.pub_ch
        if pub is not None and ex.name in self.declared:
            try:
                pub.basic_publish_tracked(ex.name, routing_key, body, props, deadline)
                return
            except RETRIABLE:
                pass
            except amqp_exc.PublishBlocked as exc:
                raise blocked_error(exc, deadline) from exc
        # partial, not a closure: a closure's cells would be made on every call.
        self.with_retry(functools.partial(self._publish_once, ex, routing_key, body, props, deadline),
                        retry, deadline)

    def _publish_once(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: Properties,
                      deadline: float | None) -> None:
        self.ensure_exchange(ex, deadline).basic_publish_tracked(ex.name, routing_key, body, props, deadline)

    def publish_call(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: Properties,
                     retry: int | None, deadline: float | None) -> tuple[Any, int, int]:
        """Publish a call's request; returns the channel, its delivery tag
        and its stream position, which tell later whether the broker took the
        request (``ch.confirmed(tag)``), or certainly never got it
        (``ch.connection.never_received(position)``), should the connection
        die before the reply. Mandatory: a request no queue takes (its
        server's queue is being declared again after a node loss) comes back
        to ``on_call_returned``."""
        ch = self.pub_ch
        if ch is not None and ex.name in self.declared:
            try:
                return ch, *ch.basic_publish_tracked(ex.name, routing_key, body, props, deadline, True)
            except RETRIABLE:
                pass
            except amqp_exc.PublishBlocked as exc:
                raise blocked_error(exc, deadline) from exc
        return self.with_retry(functools.partial(self._call_once, ex, routing_key, body, props, deadline),
                               retry, deadline)

    def _call_once(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: Properties,
                   deadline: float | None) -> tuple[Any, int, int]:
        ch = self.ensure_exchange(ex, deadline)
        return ch, *ch.basic_publish_tracked(ex.name, routing_key, body, props, deadline, True)

    def publish_confirmed(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: Properties,
                          retry: int | None, deadline: float | None) -> None:
        """Publish mandatory on the confirm channel and wait for the broker's
        answer: ``amqp.exceptions.MessageReturned`` when it returned the
        message (no queue bound), another AMQPError when it refused it,
        MessagingTimeout when no answer came before ``deadline`` (casts:
        ``rpc_response_timeout``). A connection lost before the confirm
        publishes again, as ``retry`` allows (a server drops the duplicate by
        its ``_unique_id``). A message the broker refuses (nacks) is published
        again after a pause on a new channel, until the same limit: see
        :meth:`_on_nacked`."""
        confirm_timeout = self.confirm_timeout
        limit = deadline if deadline is not None else time.monotonic() + confirm_timeout

        def attempt() -> None:
            while True:
                self.ensure_exchange(ex, deadline)
                with self.locked(deadline):
                    ch = self.confirm_ch
                    if ch is None or not ch.is_open:
                        ch = self.connection(deadline).channel(op_timeout(deadline))
                        ch.confirm_select(op_timeout(deadline))
                        self.confirm_ch = ch
                confirmed = ch.basic_publish(ex.name, routing_key, body, props, True, False, deadline)
                wait = max(0.0, limit - time.monotonic())
                try:
                    confirmed.result(timeout=wait)
                    return
                except concurrent.futures.TimeoutError:
                    raise MessagingTimeout(f"no publisher confirm for a message to {ex.name!r} / "
                                           f"{routing_key!r} within {wait:g}s") from None
                except amqp_exc.PublishNacked:
                    with self.locked(deadline):
                        if self.confirm_ch is ch:
                            self.confirm_ch = None
                    with contextlib.suppress(amqp_exc.AMQPError):
                        ch.close(op_timeout(deadline))
                    if time.monotonic() + RETURNED_RESEND_DELAY >= limit:
                        raise
                    LOG.debug("message to %r / %r refused by the broker (basic.nack); publishing it again on a "
                              "new channel", ex.name, routing_key)
                    time.sleep(RETURNED_RESEND_DELAY)

        self.with_retry(attempt, retry, deadline)

    def publish_reply(self, reply_q: str, body: bytes, props: Properties, mandatory: bool) -> None:
        """Publish a reply to ``reply_q`` through the default exchange."""
        ch = self.reply_ch
        if ch is not None:
            try:
                ch.basic_publish("", reply_q, body, props, mandatory)
                return
            except RETRIABLE:
                pass
            except amqp_exc.PublishBlocked as exc:
                raise blocked_error(exc, None) from exc
        # A few attempts ride out a reconnect; the caller's reply queue
        # survives it, so the answer is still worth sending.
        self.with_retry(functools.partial(self._reply_once, reply_q, body, props, mandatory), REPLY_RETRIES, None)

    def _reply_once(self, reply_q: str, body: bytes, props: Properties, mandatory: bool) -> None:
        conn = self.connection()
        with self.lock:
            ch = self.reply_ch
            if ch is None or not ch.is_open or self.conn is not conn:
                ch = self.reply_ch = conn.channel()
                ch.on_return = self._on_returned
        ch.basic_publish("", reply_q, body, props, mandatory)

    def with_retry(self, func: Any, retry: int | None, deadline: float | None) -> Any:
        """Run ``func``, reconnecting after connection errors.

        ``retry`` None or negative retries until ``deadline`` (forever for
        casts, as oslo does), 0 never retries, N retries N times. A broker
        that kept publishing blocked is no connection error: see
        ``blocked_error``. A synchronous method that got no answer abandons
        the connection: retrying on a frozen broker's connection cannot help.
        Failures are logged by the connection's :class:`Link` (once per state),
        not here once per caller.
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
                if isinstance(exc, amqp_exc.OperationTimeout) and broker_silent(self.conn):
                    self.abandon(self.conn, str(exc))
                attempts += 1
                if retry is not None and attempts > retry:
                    raise MessageDeliveryFailure(f"cannot reach the broker: {exc}") from exc
                delay = backoff.next()
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise MessagingTimeout(f"broker unreachable until the call timed out: {exc}") from exc
                LOG.debug("Send failed (%s); attempt %d in %.1fs", exc, attempts + 1, delay)
                if delay and self.closed.wait(delay):
                    raise MessageDeliveryFailure("the transport was cleaned up") from exc
