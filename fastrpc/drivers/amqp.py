"""AMQP 0-9-1 RPC driver, wire-compatible with oslo.messaging's rabbit driver.

Layout (names and declare arguments in :mod:`fastrpc.drivers.topology`):

* one *sender* connection per driver: requests and replies are published on it
  from any thread, and it also carries the driver's reply queue consumer;
* one reply queue ``reply_<uuid hex>`` per driver, declared on the first call;
  the connection's reader thread decodes each reply and hands it to the waiter
  registered under its ``_msg_id`` (no polling; many calls in flight);
* one connection per listener, consuming ``<topic>``, ``<topic>.<server>`` and
  ``<topic>_fanout_<uuid hex>``; requests are acked (or, when malformed,
  rejected without requeue) before the RPC layer dispatches them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from fastrpc import _impl
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.base import BaseDriver, IncomingMessage, Listener
from fastrpc.drivers.topology import ExchangeSpec, QueueSpec, Topology, publish_properties
from fastrpc.envelope_py import DEFAULT_MAX_BODY, EnvelopeError, Reply, encode_bare
from fastrpc.exceptions import MessageDeliveryFailure, MessageUndeliverable, MessagingTimeout
from fastrpc.failures import deserialize_remote_exception, serialize_remote_exception

LOG = logging.getLogger(__name__)

envelope = _impl.envelope
# Ids for _unique_id / _msg_id, from the envelope codec (compiled: no formatting call).
new_id = envelope.new_id
# Requests acked with one frame at most. Acked ones still run after stop(),
# so this also bounds what a stopping server finishes: up to this many per
# worker of the threading executor beyond those running.
ACK_BATCH = 16
DEDUP_WINDOW = 8192  # request _unique_ids remembered per listener (oslo keeps 16)
REPLY_RETRIES = 3  # reconnect attempts for one reply before giving up
ROUTE_CACHE_SIZE = 1024  # targets whose exchange and routing key are remembered
_STOP = object()
_EMPTY = object()
# What a publish raises when the connection or channel went away: worth a
# reconnect and another attempt.
_RETRIABLE = (amqp_exc.ConnectionLost, amqp_exc.ConnectionRefused, amqp_exc.ConnectionClosed,
              amqp_exc.ChannelClosed, OSError)


def _blocked_error(exc: amqp_exc.PublishBlocked, deadline: float | None) -> Exception:
    """What a publish the broker kept blocking (memory or disk alarm) means for
    the caller: a call's timeout, or a delivery failure once the connection's
    ``blocked_timeout`` passed (casts, and calls with a longer timeout)."""
    if deadline is not None and time.monotonic() >= deadline:
        return MessagingTimeout(f"the broker blocked publishing until the call timed out: {exc}")
    return MessageDeliveryFailure(f"the broker blocked publishing: {exc}")


def connection_params(conf: Any, url: Any) -> list[ConnectionParams]:
    """One ConnectionParams per host of the transport URL, in failover order."""
    vhost = url.virtual_host or "/" if url is not None else "/"
    use_ssl = bool(getattr(conf, "ssl", False))
    heartbeat = int(getattr(conf, "heartbeat_timeout_threshold", 60) or 0)
    common: dict[str, Any] = {"virtual_host": vhost, "ssl": use_ssl, "heartbeat": heartbeat,
                              "blocked_timeout": float(getattr(conf, "blocked_timeout", 60.0)),
                              "connection_name": f"{getattr(conf, 'processname', 'fastrpc')}:fastrpc"}
    if use_ssl:
        common["cafile"] = getattr(conf, "ssl_ca_file", "") or None
        common["certfile"] = getattr(conf, "ssl_cert_file", "") or None
        common["keyfile"] = getattr(conf, "ssl_key_file", "") or None
    hosts = list(getattr(url, "hosts", None) or [])
    if not hosts:
        return [ConnectionParams(**common)]
    result = []
    for host in hosts:
        values = dict(common)
        values["host"] = host.hostname or "localhost"
        values["port"] = host.port or (5671 if use_ssl else 5672)
        if host.username is not None:
            values["username"] = host.username
        if host.password is not None:
            values["password"] = host.password
        result.append(ConnectionParams(**values))
    return result


def open_connection(params: list[ConnectionParams], lost: Connection | None = None) -> Connection:
    """Connect to the first host that answers, in URL order.

    After ``lost`` (the previous connection of the same owner) failed, start
    with the host after its host: that one is likely down, and a host that
    hangs instead of refusing would cost a whole connect timeout on every
    reconnect (round robin, as oslo's default failover strategy).
    """
    if lost is not None:
        at = next((i for i, p in enumerate(params) if p.address == lost.params.address), None)
        if at is not None:
            params = params[at + 1:] + params[:at + 1]
    last: Exception | None = None
    for p in params:
        conn = Connection(p)
        try:
            conn.connect()
            return conn
        except amqp_exc.AMQPError as exc:
            LOG.warning("Cannot connect to %s: %s", p.address, exc)
            last = exc
    assert last is not None
    raise last


def _declare_exchange(ch: Any, ex: ExchangeSpec) -> None:
    ch.exchange_declare(ex.name, ex.type, durable=ex.durable, auto_delete=ex.auto_delete)


def _declare_queue(ch: Any, q: QueueSpec) -> None:
    ch.queue_declare(q.name, durable=q.durable, auto_delete=q.auto_delete, exclusive=q.exclusive,
                     arguments=q.arguments)


class Backoff:
    """Exponential reconnect delays with jitter (no synchronized storms)."""

    def __init__(self, conf: Any) -> None:
        self.delay = float(getattr(conf, "rabbit_retry_interval", 1) or 1)
        self.step = float(getattr(conf, "rabbit_retry_backoff", 2) or 0)
        self.limit = float(getattr(conf, "rabbit_interval_max", 30) or 30)

    def next(self) -> float:
        delay = min(self.delay, self.limit)
        self.delay = min(self.delay + self.step, self.limit) if self.step else self.delay * 2
        return delay * random.uniform(0.5, 1.0)


class _Slot:
    """One poller blocked in :meth:`_Handoff.get`: its own lock, its own item."""

    __slots__ = ("lock", "item")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.item: Any = _EMPTY


class _Handoff:
    """Deliveries from the reader thread to the threads polling a listener.

    A put hands the item straight to the most recently idle poller and wakes
    that one thread only. (A SimpleQueue with several blocked getters wakes a
    second getter for nothing on every item: a context switch and a GIL round
    trip per message.) Items nobody waits for queue up in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[Any] = collections.deque()
        self._waiting: list[_Slot] = []  # a stack: the warmest thread first

    def put(self, item: Any) -> None:
        with self._lock:
            if self._waiting:
                slot = self._waiting.pop()
                slot.item = item
                slot.lock.release()
                return
            self._items.append(item)

    def put_front(self, items: list[Any], hand: bool = True) -> None:
        """Hand ``items`` to idle pollers (unless ``hand`` is false), or queue
        them in order ahead of the rest."""
        with self._lock:
            waiting = self._waiting if hand else []
            i = 0
            while waiting and i < len(items):
                slot = waiting.pop()
                slot.item = items[i]
                slot.lock.release()
                i += 1
            if i < len(items):
                self._items.extendleft(reversed(items[i:]))

    def pop_front_while(self, accept: Callable[[Any], bool]) -> list[Any]:
        """Take queued items from the front for as long as ``accept(item)`` says so."""
        taken = []
        with self._lock:
            items = self._items
            while items and accept(items[0]):
                taken.append(items.popleft())
        return taken

    def pending(self) -> int:
        """How many items wait for a poller."""
        return len(self._items)

    def get_nowait(self) -> Any:
        """The next item, or ``_EMPTY``."""
        with self._lock:
            return self._items.popleft() if self._items else _EMPTY

    def get(self, timeout: float | None) -> Any:
        """The next item, waiting up to ``timeout`` seconds; ``_EMPTY`` on timeout."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            slot = _Slot()
            self._waiting.append(slot)
        try:
            if slot.lock.acquire(timeout=-1 if timeout is None else timeout):
                return slot.item
        except BaseException:
            # Interrupted: an item handed to us meanwhile goes back in front.
            with self._lock:
                if slot.item is _EMPTY:
                    self._waiting.remove(slot)
                else:
                    self._items.appendleft(slot.item)
            raise
        with self._lock:
            if slot.item is _EMPTY:
                self._waiting.remove(slot)
        # Either still _EMPTY, or an item handed over just as the wait timed out.
        return slot.item


class _Settled:
    """Which delivery tags of a listener's channel are settled (acked or rejected).

    The requests of one read are acked with one ``multiple`` ack of the
    highest tag; that is only right when every lower tag is settled already
    (otherwise it would also ack a request another thread is still taking,
    whose own ack would then fail the channel). Tags run 1, 2, 3, ... per
    channel in delivery order. Use under a lock, and send what ``settle``
    returns under the same lock, so that frames leave in the order decided.
    """

    __slots__ = ("upto", "early")

    def __init__(self) -> None:
        self.upto = 0  # every tag <= upto is settled
        self.early: set[int] = set()  # settled tags above upto

    def settle(self, tags: list[int], ack: list[int]) -> list[tuple[int, bool]]:
        """Mark ``tags`` (ascending) settled, of which ``ack`` still need an
        ack (the others were rejected); return the acks to send as
        ``(delivery_tag, multiple)``."""
        first = tags[0]
        last = tags[-1]
        if first == self.upto + 1 and last - first == len(tags) - 1:
            self.upto = last
            frames = [(ack[-1], len(ack) > 1)] if ack else []
            if not self.early:  # the usual case
                return frames
        else:
            frames = [(tag, False) for tag in ack]
            self.early.update(tags)
        early = self.early
        if early:
            upto = self.upto
            while upto + 1 in early:
                upto += 1
                early.discard(upto)
            self.upto = upto
        return frames


class AmqpIncomingMessage(IncomingMessage):
    """A request taken from a queue; the listener acks it (when a worker takes
    it, or after it ran with inline dispatch), as oslo's executors do."""

    def __init__(self, driver: AmqpDriver, ctxt: dict, message: dict, msg_id: str | None,
                 reply_q: str | None, binary: bool, client_timeout: float | None = None) -> None:
        # IncomingMessage's fields set here, not by super().__init__: one
        # Python call less per request.
        self.ctxt = ctxt
        self.message = message
        self.msg_id = msg_id
        self._driver = driver
        self.reply_q = reply_q
        self.binary = binary
        # The caller's call-monitor timeout: the dispatcher sends heartbeats
        # more often than this while the call runs.
        self.client_timeout = client_timeout

    def acknowledge(self) -> None:
        # The listener acks (see _take and _run_read): nothing to do here.
        pass

    def requeue(self) -> None:
        pass

    def reply(self, reply: Any = None, failure: BaseException | None = None) -> None:
        if self.msg_id is None or self.reply_q is None:
            return
        data = serialize_remote_exception(failure) if failure is not None else None
        self._driver._send_reply(self.reply_q, self.msg_id, reply, data, True, self.binary)

    def heartbeat(self) -> None:
        if self.msg_id is None or self.reply_q is None:
            return
        try:
            self._driver._send_reply(self.reply_q, self.msg_id, None, None, False, self.binary)
        except amqp_exc.AMQPError as exc:
            raise MessageDeliveryFailure(f"heartbeat send failed: {exc}") from exc


class _Read(NamedTuple):
    """The deliveries of one read of a listener's channel, taken together."""

    gen: int  # the listener's connection generation they came on
    channel: Any
    settled: _Settled  # that channel's
    deliveries: list[spec.Delivery]


class AmqpListener(Listener):
    """Consumes the three queues of one RPC target on its own connection.

    When the connection dies the listener reconnects in the background (with
    jittered exponential backoff) and declares and consumes the same queues
    again; deliveries from the dead channel are dropped unacked, the broker
    has already requeued them.
    """

    def __init__(self, driver: AmqpDriver, target: Any) -> None:
        self._driver = driver
        self._incoming = _Handoff()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._seen_lock = threading.Lock()
        # Set by dispatch_inline(): requests run in the reader thread.
        self._inline: Any = None
        self._inline_lock = threading.Lock()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.bad_messages = 0
        self.duplicates = 0
        self.reconnects = 0
        topo = driver.topology
        self._target = target
        self._exchange = topo.exchange_name(target.exchange, driver.default_exchange)
        self.fanout_queue, self.queues = self._queue_names(topo, target)
        self._gen = 0
        self._ack_lock = threading.Lock()  # guards each channel's _Settled
        self._conn: Connection | None = None
        self._channel: Any = None
        self._tags: list[str] = []
        self._connect()

    def _queue_names(self, topo: Topology, target: Any) -> tuple[str | None, list[str]]:
        """This listener's own fanout queue (deleted at cleanup), and every queue it consumes."""
        fanout = topo.fanout_queue(target.topic).name
        return fanout, [topo.routing_key(target.topic), topo.routing_key(target.topic, target.server), fanout]

    def _declare(self, ch: Any) -> None:
        """Declare and bind the exchanges and queues consumed (on every connect)."""
        topo = self._driver.topology
        target = self._target
        _declare_exchange(ch, topo.topic_exchange(self._exchange))
        for server in (None, target.server):
            q = topo.topic_queue(target.topic, server)
            _declare_queue(ch, q)
            ch.queue_bind(q.name, self._exchange, q.name)
        fanout_ex = topo.fanout_exchange(target.topic)
        _declare_exchange(ch, fanout_ex)
        fq = topo.fanout_queue(target.topic)
        assert self.fanout_queue is not None
        _declare_queue(ch, QueueSpec(self.fanout_queue, fq.durable, fq.auto_delete, fq.arguments))
        ch.queue_bind(self.fanout_queue, fanout_ex.name, target.topic)

    def _connect(self) -> None:
        topo = self._driver.topology
        conn = open_connection(self._driver.params, self._conn)
        try:
            ch = conn.channel()
            if topo.prefetch_count > 0:
                ch.basic_qos(prefetch_count=topo.prefetch_count)
            self._declare(ch)
            gen = self._gen + 1
            # Acks of this channel's tags go to this channel, with its own
            # bookkeeping, even when taken after a reconnect replaced both.
            settled = _Settled()
            put = self._incoming.put
            # The deliveries of one read, taken together after it: one ack
            # frame for all of them instead of one each.
            arrived: list[spec.Delivery] = []
            after_read = conn.after_dispatch

            def on_message(delivery: spec.Delivery) -> None:
                arrived.append(delivery)
                if len(arrived) == 1:
                    after_read(on_read_dispatched)  # at once when the read brought only this
                elif len(arrived) >= ACK_BATCH:
                    on_read_dispatched()  # the registered call takes the rest

            def on_read_dispatched() -> None:
                nonlocal arrived
                if not arrived:
                    return
                # tuple.__new__: the NamedTuple's own __new__ is a Python call.
                item = tuple.__new__(_Read, (gen, ch, settled, arrived))
                arrived = []
                handler = self._inline
                if handler is None:
                    # Decide under the lock: dispatch_inline() must not look at
                    # the backlog between our check and our put.
                    with self._inline_lock:
                        handler = self._inline
                        if handler is None:
                            put(item)
                            return
                self._run_inline(handler, item)

            with self._lock:
                # Checked where cleanup() reads _conn: either it closes this
                # connection, or this sees the stop and closes it here.
                stopped = self._stopped.is_set()
                if not stopped:
                    self._gen = gen
                    self._conn, self._channel = conn, ch
                    if gen > 1:
                        self.reconnects += 1
            if stopped:
                conn.close()  # stopped while connecting: nothing to consume for
                return
            def on_cancel(tag: str) -> None:
                self._restart(ch, f"the broker cancelled its consumer {tag!r} (queue deleted or its node lost)")

            self._tags = [ch.basic_consume(name, on_message, on_cancel=on_cancel) for name in self.queues]
            conn.on_close.append(self._on_connection_closed)
            ch.on_close.append(self._on_channel_closed)
        except BaseException:
            conn.close()
            raise

    def _on_connection_closed(self, conn: Connection, exc: BaseException) -> None:
        if self._stopped.is_set() or conn is not self._conn:
            return
        LOG.warning("Listener for topic %s lost its connection: %s; reconnecting", self._target.topic, exc)
        threading.Thread(target=self._reconnect, name="fastrpc-listener-reconnect", daemon=True).start()

    def _on_channel_closed(self, ch: Any, exc: BaseException) -> None:
        # The broker closed the channel alone (a refused ack, say): the
        # consumers are gone with it.
        self._restart(ch, f"its channel was closed: {exc}")

    def _restart(self, ch: Any, why: str) -> None:
        """A consumer of ``ch`` is gone while the connection stays: close the
        connection, which reconnects, declares the queues and consumes again.
        From another thread, as this runs in the reader."""
        conn = self._conn
        if self._stopped.is_set() or ch is not self._channel or conn is None or not conn.is_open:
            return
        LOG.warning("Listener for topic %s: %s; reconnecting", self._target.topic, why)
        threading.Thread(target=conn.close, name="fastrpc-listener-close", daemon=True).start()

    def _reconnect(self) -> None:
        backoff = Backoff(self._driver.conf)
        while not self._stopped.is_set():
            try:
                self._connect()
            except (amqp_exc.AMQPError, OSError) as exc:
                delay = backoff.next()
                LOG.warning("Listener reconnect failed: %s; next attempt in %.1fs", exc, delay)
                self._stopped.wait(delay)
                continue
            if not self._stopped.is_set():
                LOG.info("Listener for topic %s reconnected", self._target.topic)
            return

    # -- inline dispatch -----------------------------------------------------

    def dispatch_inline(self, handler: Any) -> None:
        """Run ``handler(incoming)`` for each request in the connection's reader thread.

        For a server that handles one message at a time anyway (the blocking
        executor): no thread handoff per message. ``handler`` must not wait
        for anything this listener's connection would deliver. Requests that
        arrived before this call are handled first, in order, by a short-lived
        thread (the reader waits for it), so this returns at once.
        """
        lock = self._inline_lock
        lock.acquire()
        self._inline = handler
        if not self._incoming.pending():
            lock.release()
            return

        def drain() -> None:
            # Holds the lock taken above (a Lock may be released by any
            # thread): new deliveries wait until the backlog is done.
            try:
                while not self._stopped.is_set():
                    item = self._incoming.get_nowait()
                    if item is _EMPTY or item is _STOP:
                        break
                    self._run_read(handler, item)
            finally:
                lock.release()

        threading.Thread(target=drain, name=f"fastrpc-server-{self._target.topic}", daemon=True).start()

    def wait_inline_idle(self) -> None:
        """Return once no inline handler runs, and none will start after stop()."""
        with self._inline_lock:
            pass

    def _run_inline(self, handler: Any, item: _Read) -> None:
        with self._inline_lock:
            # Checked under the lock: once stop() and wait_inline_idle()
            # returned, nothing more runs. Unacked, the message goes back to
            # the queue when the channel closes.
            if self._stopped.is_set():
                return
            self._run_read(handler, item)

    # -- polling -------------------------------------------------------------

    def poll(self, timeout: float | None = None, batch_size: int = 1) -> list[IncomingMessage]:
        result: list[IncomingMessage] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        incoming = self._incoming
        while not result:
            if self._stopped.is_set():
                return self._taken_leftovers(batch_size)
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = incoming.get(wait)
            if item is _EMPTY:
                return []
            while True:
                if item is _STOP:
                    # Leave the marker for any other poller, then stop.
                    incoming.put(_STOP)
                    break
                if type(item) is _Read:
                    if incoming.pending():
                        item = self._with_queued_reads(item)
                    result += self._take(item)
                else:
                    result.append(item)  # taken (acked) by another poller
                if len(result) >= batch_size:
                    break
                item = incoming.get_nowait()
                if item is _EMPTY:
                    break
            if len(result) > batch_size:
                # Acked with the others of their read: idle pollers run them,
                # or the next poll returns them (even after stop()).
                incoming.put_front(result[batch_size:])
                del result[batch_size:]
            if item is _STOP or (deadline is not None and time.monotonic() >= deadline):
                break
        return result

    def _with_queued_reads(self, item: _Read) -> _Read:
        """Join the reads queued right behind ``item`` to it (up to ACK_BATCH
        deliveries), so that one frame acks them all: pollers fall behind
        under load, and each read then often holds only one request."""
        gen, ch, settled, deliveries = item
        room = ACK_BATCH - len(deliveries)
        next_tag = deliveries[-1].delivery_tag + 1

        def accept(queued: Any) -> bool:
            # Only the read right after ours: another poller may have taken
            # the one in between, and it must not be acked for it.
            nonlocal room, next_tag
            if type(queued) is not _Read or queued.gen != gen:
                return False
            more = queued.deliveries
            if len(more) > room or more[0].delivery_tag != next_tag:
                return False
            room -= len(more)
            next_tag = more[-1].delivery_tag + 1
            return True

        if room <= 0:
            return item
        queued = self._incoming.pop_front_while(accept)
        if not queued:
            return item
        joined = list(deliveries)
        for read in queued:
            joined += read.deliveries
        return _Read(gen, ch, settled, joined)

    def _taken_leftovers(self, batch_size: int) -> list[IncomingMessage]:
        """After stop(): the requests already acked (they must still run), not the others."""
        result: list[IncomingMessage] = []
        incoming = self._incoming
        skipped = []
        while len(result) < batch_size:
            item = incoming.get_nowait()
            if item is _EMPTY:
                break
            if type(item) is _Read or item is _STOP:
                skipped.append(item)  # not taken: the broker requeues it (and the marker stays)
            else:
                result.append(item)
        if skipped:
            # Queued, not handed to a poller still waiting: nobody takes them now.
            incoming.put_front(skipped, hand=False)
        return result

    def _take(self, item: _Read) -> list[IncomingMessage]:
        """Decode the requests of one read and ack them (one frame when possible),
        before they run: for pollers (the threading executor).

        Malformed ones are rejected (and answered with an error where the
        caller is known), duplicates dropped.
        """
        requests, settle = self._decode(item)
        if settle is None or not self._ack(*settle):
            return []
        return self._accepted(requests)

    def _run_read(self, handler: Any, item: _Read) -> None:
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
        if len(item.deliveries) > 1:
            for msg in self._take(item):
                handler(msg)
            return
        requests, settle = self._decode(item)
        if settle is None:
            return
        for msg in self._accepted(requests):
            handler(msg)
        self._ack(*settle, ran=True)

    def _decode(self, item: _Read) -> tuple[list[Any], tuple[Any, _Settled, list[int], list[int]] | None]:
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
                self._reject(ch, delivery, exc)
                continue
            requests.append(req)
            ack.append(delivery.delivery_tag)
        tags = ack if len(ack) == len(deliveries) else [d.delivery_tag for d in deliveries]
        return requests, (ch, settled, tags, ack)

    def _accepted(self, requests: list[Any]) -> list[IncomingMessage]:
        taken: list[IncomingMessage] = []
        for req in requests:
            msg = self._accept(req)
            if msg is not None:
                taken.append(msg)
        return taken

    def _ack(self, ch: Any, settled: _Settled, tags: list[int], ack: list[int], ran: bool = False) -> bool:
        """Settle the ``tags`` of one read, sending acks for ``ack``; False if
        that failed. ``ran``: the requests ran already (inline dispatch)."""
        try:
            with self._ack_lock:
                if len(tags) == 1 and ack and not settled.early and tags[0] == settled.upto + 1:
                    # What settle() does for the usual read of one request,
                    # without its call and lists: 2.5k instructions a request.
                    settled.upto = tags[0]
                    ch.basic_ack(tags[0])
                else:
                    for tag, multiple in settled.settle(tags, ack):
                        ch.basic_ack(tag, multiple)
        except amqp_exc.AMQPError as err:
            if ran:
                LOG.warning("Could not acknowledge %d request(s) that ran: %s (the broker will deliver them "
                            "again; this listener drops them as duplicates)", len(ack), err)
            else:
                # Not acked means the broker will deliver them again: do not run them twice.
                LOG.warning("Discarding %d request(s) after a failed acknowledge: %s", len(ack), err)
            return False
        return True

    def _seen_before(self, uid: str, remember: bool = True) -> bool:
        """Whether ``uid`` was remembered already (counted as a duplicate);
        else remember it if asked. One step under the lock: several workers
        take messages at once."""
        seen = self._seen
        with self._seen_lock:
            if uid in seen:
                self.duplicates += 1
                return True
            if remember:
                seen[uid] = None
                if len(seen) > DEDUP_WINDOW:
                    seen.popitem(last=False)
        return False

    def _accept(self, req: Any) -> AmqpIncomingMessage | None:
        """The incoming message for an acked request; None for a duplicate."""
        uid = req.unique_id
        if uid is not None and self._seen_before(uid):
            LOG.warning("Dropped duplicate request %s", uid)
            return None
        ctxt = req.ctxt
        # oslo's servers hand endpoints the context with this key added; do
        # the same so an endpoint sees one context whichever server runs it.
        ctxt["client_timeout"] = req.timeout
        return AmqpIncomingMessage(self._driver, ctxt, req.message, req.msg_id, req.reply_q, req.binary,
                                   req.timeout)

    def _reject(self, ch: Any, delivery: spec.Delivery, exc: EnvelopeError) -> None:
        with self._seen_lock:  # pollers reject at once
            self.bad_messages += 1
        LOG.warning("Rejected malformed request for topic %s (exchange %r, routing key %r): %s",
                    self._target.topic, delivery.exchange, delivery.routing_key, exc.reason)
        try:
            ch.basic_reject(delivery.delivery_tag, requeue=False)
        except amqp_exc.AMQPError as err:
            LOG.debug("basic.reject failed: %s", err)
        if exc.msg_id and exc.reply_q:
            try:
                self._driver._send_error_reply(exc)
            except Exception:
                # The rest of the read must still be settled and run.
                LOG.exception("Error reply for a malformed request failed")

    # -- shutdown ------------------------------------------------------------

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._incoming.put(_STOP)
        if self._inline is not None and not self._conn_in_reader():
            # The reader thread may be busy running a request, and only it
            # can read basic.cancel-ok: do not make stop() wait for that.
            threading.Thread(target=self._cancel_consumers, name="fastrpc-listener-cancel", daemon=True).start()
        else:
            self._cancel_consumers()

    def _conn_in_reader(self) -> bool:
        conn = self._conn
        return conn is not None and conn.in_reader_thread()

    def _cancel_consumers(self) -> None:
        conn, ch = self._conn, self._channel
        if conn is not None and conn.is_open:
            for tag in self._tags:
                try:
                    ch.basic_cancel(tag)
                except amqp_exc.AMQPError as exc:
                    LOG.debug("basic.cancel failed: %s", exc)

    def cleanup(self) -> None:
        self.stop()
        with self._lock:  # after stop(): a reconnect either published its connection or will close it
            conn, ch = self._conn, self._channel
        if self.fanout_queue is not None and conn is not None and conn.is_open:
            try:
                # Our uniquely named fanout queue has no other user: do not
                # leave it collecting broadcasts until x-expires.
                ch.queue_delete(self.fanout_queue)
            except amqp_exc.AMQPError as exc:
                LOG.debug("fanout queue delete failed: %s", exc)
        if conn is not None:
            conn.close()
        self._driver._forget_listener(self)


class AmqpDriver(BaseDriver):
    """The ``rabbit://``, ``fastrpc://`` and ``amqp://`` transport."""

    def __init__(self, conf: Any, url: Any, default_exchange: str | None = None,
                 allowed_remote_exmods: list[str] | None = None) -> None:
        exchange = default_exchange or str(getattr(conf, "control_exchange", None) or "openstack")
        super().__init__(conf, url, exchange, list(allowed_remote_exmods or []))
        self.topology = Topology(conf)
        self.params = connection_params(conf, url)
        serialization = str(getattr(conf, "serialization", "json") or "json").lower()
        if serialization not in ("json", "msgpack"):
            raise ValueError(f"unknown serialization {serialization!r}")
        self.binary = serialization == "msgpack"
        self.max_body = int(getattr(conf, "max_message_size", DEFAULT_MAX_BODY) or DEFAULT_MAX_BODY)
        self._lock = threading.RLock()  # connection, channels, declarations
        self._conn: Connection | None = None
        self._pub_ch: Any = None
        self._decl_ch: Any = None
        self._reply_ch: Any = None
        self._confirm_ch: Any = None  # publisher confirms on: at-least-once sends
        self._declared: set[str] = set()  # exchanges
        self._notify_queues: set[tuple[str, str]] = set()  # (exchange, routing key)
        self._reply_q: str | None = None
        self._reply_consuming = False
        self._closed = threading.Event()  # set by cleanup(); also ends waits for the broker
        # msg_id -> the call's mailbox: replies are put by whichever thread
        # reads the connection (often the caller itself, see Connection.wait_for).
        self._waiters: dict[str, queue.SimpleQueue[Reply]] = {}
        self._listeners: list[AmqpListener] = []
        # (exchange, topic, server, fanout) -> (ExchangeSpec, routing key)
        self._routes: dict[tuple[Any, ...], tuple[ExchangeSpec, str]] = {}
        self._ctype = envelope.content_type(self.binary)
        self._cast_props = publish_properties(self._ctype)
        self._call_props: dict[float | None, dict[str, Any]] = {}
        self._reply_props = {b: publish_properties(envelope.content_type(b)) for b in (False, True)}
        # Turns a reply's failure into the exception a call raises: oslo's
        # own function when this driver serves oslo.messaging's API.
        self.rebuild_failure: Callable[[str, list[str]], BaseException] = deserialize_remote_exception
        self.late_replies = 0  # replies that arrived after their caller gave up
        self.bad_replies = 0

    # -- connection ----------------------------------------------------------

    def _connection(self) -> Connection:
        with self._lock:
            conn = self._conn
            if conn is not None and conn.is_open:
                return conn
            if self._closed.is_set():
                raise MessageDeliveryFailure("the transport was cleaned up")
            # A previous connection died: its channels and consumer are gone,
            # but the reply queue outlives it (x-expires), so keep its name.
            self._declared.clear()
            self._notify_queues.clear()
            self._pub_ch = self._decl_ch = self._reply_ch = self._confirm_ch = None
            self._reply_consuming = False
            conn = self._conn = open_connection(self.params, conn)
            conn.on_close.append(self._on_connection_closed)
            return conn

    def _on_connection_closed(self, conn: Connection, exc: BaseException) -> None:
        if self._closed.is_set() or conn is not self._conn or not self._waiters:
            return
        # Calls are waiting: get their reply queue consumed again soon.
        threading.Thread(target=self._recover, name="fastrpc-sender-reconnect", daemon=True).start()

    def _on_reply_cancelled(self, tag: str) -> None:
        # The broker ended the reply consumer: the reply queue was deleted, or
        # the node holding it went away. Declare and consume it again (same
        # name, which the calls in flight gave their servers): at once if calls
        # wait, else at the next call.
        self._reply_consuming = False
        if self._closed.is_set():
            return
        LOG.warning("Reply queue %s lost its consumer (queue deleted or its node lost); declaring it again",
                    self._reply_q)
        if self._waiters:
            threading.Thread(target=self._recover, name="fastrpc-reply-recover", daemon=True).start()

    def _recover(self) -> None:
        backoff = Backoff(self.conf)
        while self._waiters and not self._closed.is_set():
            try:
                self._ensure_reply_queue()
                LOG.info("Reconnected; reply queue %s consumed again", self._reply_q)
                return
            except (amqp_exc.AMQPError, OSError) as exc:
                delay = backoff.next()
                LOG.warning("Reconnect failed: %s; next attempt in %.1fs", exc, delay)
                time.sleep(delay)

    def _channels(self) -> tuple[Any, Any]:
        with self._lock:
            conn = self._connection()
            if self._pub_ch is None or not self._pub_ch.is_open:
                self._pub_ch = conn.channel()
                self._pub_ch.on_return = self._on_returned
            if self._decl_ch is None or not self._decl_ch.is_open:
                self._decl_ch = conn.channel()
            return self._pub_ch, self._decl_ch

    def _ensure_exchange(self, ex: ExchangeSpec) -> Any:
        pub, decl = self._channels()
        if ex.name in self._declared:
            return pub
        with self._lock:
            if ex.name not in self._declared:
                try:
                    _declare_exchange(decl, ex)
                except amqp_exc.ChannelClosed:
                    self._decl_ch = None
                    raise
                self._declared.add(ex.name)
        return pub

    def _ensure_reply_queue(self) -> str:
        ch = self._reply_ch
        if self._reply_q is not None and ch is not None and ch.is_open and self._reply_consuming:
            return self._reply_q
        with self._lock:
            conn = self._connection()
            ch = self._reply_ch
            if self._reply_q is not None and ch is not None and ch.is_open and self._reply_consuming:
                return self._reply_q
            # Its own channel: a refused declare elsewhere must not take the
            # reply consumer down with it. Kept when only the consumer was
            # lost (the broker cancelled it).
            if ch is None or not ch.is_open:
                ch = self._reply_ch = conn.channel()
            q = self.topology.reply_queue()
            if self._reply_q is not None:
                q = QueueSpec(self._reply_q, q.durable, q.auto_delete, q.arguments)
            _declare_queue(ch, q)
            ch.basic_consume(q.name, self._on_reply, no_ack=True, on_cancel=self._on_reply_cancelled)
            self._reply_q = q.name
            self._reply_consuming = True
            return q.name

    # -- sending -------------------------------------------------------------

    def _route(self, target: Any) -> tuple[ExchangeSpec, str]:
        key = (target.exchange, target.topic, target.server, target.fanout)
        route = self._routes.get(key)
        if route is None:
            topo = self.topology
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
        for the target (oslo's ``TransportOptions(at_least_once=True)``)."""
        ex, routing_key = self._route(target)
        unique_id = new_id()
        if not wait_for_reply:
            body = envelope.encode_request(message, ctxt, unique_id, binary=self.binary)
            self._check_size(body, message)
            if at_least_once:
                self._publish_confirmed(ex, routing_key, body, self._cast_props, retry, None, message)
            else:
                self._publish(ex, routing_key, body, self._cast_props, retry, None)
            return None

        deadline = None if timeout is None else time.monotonic() + timeout
        reply_q = self._reply_q
        ch = self._reply_ch
        if reply_q is None or ch is None or not ch.is_open or not self._reply_consuming:
            reply_q = self._with_retry(self._ensure_reply_queue, retry, deadline)
        msg_id = new_id()
        body = envelope.encode_request(message, ctxt, unique_id, msg_id, reply_q, call_monitor_timeout,
                                       self.binary)
        self._check_size(body, message)
        props = self._call_props.get(timeout)
        if props is None:
            props = publish_properties(self._ctype, timeout)
            if len(self._call_props) < 64:  # timeouts are few; do not grow without bound
                self._call_props[timeout] = props
        replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self._waiters[msg_id] = replies
        try:
            if at_least_once:
                self._publish_confirmed(ex, routing_key, body, props, retry, deadline, message)
            else:
                self._publish(ex, routing_key, body, props, retry, deadline)
            # The same deadline: a publish that had to reconnect took some of the timeout.
            return self._wait(replies, msg_id, deadline, call_monitor_timeout)
        finally:
            self._waiters.pop(msg_id, None)
            conn = self._conn
            if conn is not None:
                conn.done_waiting(replies)

    def send_notification(self, target: Any, ctxt: dict, message: dict, version: float,
                          retry: int | None = None) -> None:
        """Publish a notification as oslo's rabbit driver does.

        To the topic exchange, with the target's topic (``<topic>.<priority>``)
        as routing key. A queue of that name is declared and bound first, so
        notifications wait there until their consumer comes. Version 2.0 is
        enveloped like a request, 1.0 is the bare message; always JSON, since
        any service may consume them.
        """
        topo = self.topology
        ex = topo.topic_exchange(topo.exchange_name(target.exchange, self.default_exchange))
        routing_key = target.topic
        unique_id = new_id()
        if version == 2.0:
            body = envelope.encode_request(message, ctxt, unique_id)
        else:
            body = encode_bare(message, ctxt, unique_id)
        self._check_size(body, message)
        props = self._reply_props[False]  # JSON, no expiration

        def attempt() -> None:
            pub = self._ensure_exchange(ex)
            if (ex.name, routing_key) not in self._notify_queues:
                with self._lock:
                    _pub, decl = self._channels()
                    queue_spec = topo.topic_queue(routing_key)
                    _declare_queue(decl, queue_spec)
                    decl.queue_bind(queue_spec.name, ex.name, routing_key)
                    self._notify_queues.add((ex.name, routing_key))
            pub.basic_publish(ex.name, routing_key, body, props)

        self._with_retry(attempt, retry, None)

    def _check_size(self, body: bytes, message: dict) -> None:
        """Refuse a request its receiver would reject as too large (no timeout later)."""
        if len(body) > self.max_body:
            raise MessageDeliveryFailure(
                f"request for method {message.get('method')!r} is {len(body)} bytes, more than "
                f"max_message_size ({self.max_body} bytes); not sent")

    def _publish(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: dict[str, Any],
                 retry: int | None, deadline: float | None) -> None:
        # Usual case: the channel is open and the exchange declared, so no
        # lock and no retry machinery; any failure takes the full path below.
        pub = self._pub_ch
        if pub is not None and ex.name in self._declared:
            try:
                pub.basic_publish(ex.name, routing_key, body, props, False, False, deadline)
                return
            except _RETRIABLE:
                pass
            except amqp_exc.PublishBlocked as exc:
                raise _blocked_error(exc, deadline) from exc
        # partial, not a closure: a closure's cells would be made on every call.
        self._with_retry(functools.partial(self._publish_once, ex, routing_key, body, props, deadline),
                         retry, deadline)

    def _publish_once(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: dict[str, Any],
                      deadline: float | None) -> None:
        self._ensure_exchange(ex).basic_publish(ex.name, routing_key, body, props, False, False, deadline)

    def _publish_confirmed(self, ex: ExchangeSpec, routing_key: str, body: bytes, props: dict[str, Any],
                           retry: int | None, deadline: float | None, message: dict) -> None:
        """Publish mandatory on the confirm channel and wait for the broker's
        answer: MessageUndeliverable when it returned the message (no queue
        bound), MessageDeliveryFailure when it refused it, MessagingTimeout
        when no answer came before ``deadline`` (casts: ``rpc_response_timeout``).
        A connection lost before the confirm publishes again, as ``retry`` allows
        (a server drops the duplicate by its ``_unique_id``)."""
        confirm_timeout = float(getattr(self.conf, "rpc_response_timeout", 60) or 60)

        def attempt() -> None:
            self._ensure_exchange(ex)
            with self._lock:
                ch = self._confirm_ch
                if ch is None or not ch.is_open:
                    ch = self._connection().channel()
                    ch.confirm_select()
                    self._confirm_ch = ch
            confirmed = ch.basic_publish(ex.name, routing_key, body, props, True, False, deadline)
            wait = confirm_timeout if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                confirmed.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                raise MessagingTimeout(f"no publisher confirm for a message to {ex.name!r} / {routing_key!r} "
                                       f"within {wait:g}s") from None

        try:
            self._with_retry(attempt, retry, deadline)
        except amqp_exc.MessageReturned as exc:
            raise MessageUndeliverable(exc, ex.name, routing_key, message) from exc
        except amqp_exc.AMQPError as exc:
            raise MessageDeliveryFailure(f"the broker did not take the message: {exc}") from exc

    def _with_retry(self, func: Any, retry: int | None, deadline: float | None) -> Any:
        """Run ``func``, reconnecting after connection errors.

        ``retry`` None or negative retries until ``deadline`` (forever for
        casts, as oslo does), 0 never retries, N retries N times. A broker
        that kept publishing blocked is no connection error: see
        ``_blocked_error``.
        """
        if retry is not None and retry < 0:
            retry = None
        backoff = Backoff(self.conf)
        attempts = 0
        while True:
            try:
                return func()
            except amqp_exc.PublishBlocked as exc:
                raise _blocked_error(exc, deadline) from exc
            except _RETRIABLE as exc:
                if isinstance(exc, amqp_exc.ChannelClosed) and exc.reply_code not in (
                        spec.CONNECTION_FORCED, spec.INTERNAL_ERROR):
                    raise  # a refused declare or publish: retrying cannot help
                attempts += 1
                if retry is not None and attempts > retry:
                    raise MessageDeliveryFailure(f"cannot reach the broker: {exc}") from exc
                delay = backoff.next()
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise MessagingTimeout(f"broker unreachable until the call timed out: {exc}") from exc
                LOG.warning("Broker connection problem (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)

    def _wait(self, replies: queue.SimpleQueue[Reply], msg_id: str, deadline: float | None,
              call_monitor_timeout: float | None) -> Any:
        now = time.monotonic()
        monitor = None if not call_monitor_timeout else now + call_monitor_timeout
        wait = None if deadline is None else max(0.0, deadline - now)
        if call_monitor_timeout:
            wait = call_monitor_timeout if wait is None else min(wait, call_monitor_timeout)
        while True:
            # The current connection (it changes after a reconnect): this
            # thread reads the reply itself while nobody else reads.
            conn = self._conn
            try:
                reply = conn.wait_for(replies, wait) if conn is not None else replies.get(timeout=wait)
            except queue.Empty:
                raise MessagingTimeout(f"Timed out waiting for a reply to message ID {msg_id}") from None
            if reply.ending:
                if reply.failure is not None:
                    raise self.rebuild_failure(reply.failure, self.allowed_remote_exmods)
                return reply.result
            # A call-monitor keepalive: the call is still running.
            now = time.monotonic()
            if call_monitor_timeout:
                monitor = now + call_monitor_timeout
            limits = [d for d in (deadline, monitor) if d is not None]
            wait = None if not limits else max(0.0, min(limits) - now)

    def _on_reply(self, delivery: spec.Delivery) -> None:
        # Runs in the thread reading the connection: decode, hand over, return.
        try:
            reply = envelope.decode_reply(delivery.body, delivery.properties.get("content_type"),
                                          self.max_body)
        except EnvelopeError as exc:
            self.bad_replies += 1
            LOG.warning("Dropped malformed reply on %s: %s", delivery.routing_key, exc.reason)
            return
        replies = self._waiters.get(reply.msg_id)
        if replies is None:
            self.late_replies += 1
            LOG.debug("Dropped reply to %s: its caller is no longer waiting", reply.msg_id)
            return
        replies.put(reply)

    def _on_returned(self, event: spec.Returned) -> None:
        # A mandatory reply whose queue is gone: the caller stopped waiting.
        LOG.warning("Reply to %s was returned by the broker: %s %s", event.routing_key, event.reply_code,
                    event.reply_text)

    def _send_reply(self, reply_q: str, msg_id: str, result: Any, failure: str | None, ending: bool,
                    binary: bool) -> None:
        body = envelope.encode_reply(msg_id, new_id(), result, failure, ending, binary)
        if len(body) > self.max_body:
            # The caller would reject it and wait until its timeout: tell it why instead.
            LOG.error("Reply to %s is %d bytes, more than max_message_size (%d); sending an error instead",
                      msg_id, len(body), self.max_body)
            error = ValueError(f"the reply is {len(body)} bytes, more than max_message_size "
                               f"({self.max_body} bytes) allows")
            body = envelope.encode_reply(msg_id, new_id(), None, serialize_remote_exception(error), True, binary)
        props = self._reply_props[bool(binary)]
        mandatory = self.topology.mandatory_replies
        pub = self._pub_ch
        if pub is not None:
            try:
                pub.basic_publish("", reply_q, body, props, mandatory)
                return
            except _RETRIABLE:
                pass
            except amqp_exc.PublishBlocked as exc:
                raise _blocked_error(exc, None) from exc
        # A few attempts ride out a reconnect; the caller's reply queue
        # survives it, so the answer is still worth sending.
        self._with_retry(functools.partial(self._reply_once, reply_q, body, props, mandatory), REPLY_RETRIES, None)

    def _reply_once(self, reply_q: str, body: bytes, props: dict[str, Any], mandatory: bool) -> None:
        pub, _decl = self._channels()
        pub.basic_publish("", reply_q, body, props, mandatory)

    def _send_error_reply(self, exc: EnvelopeError) -> None:
        assert exc.msg_id is not None and exc.reply_q is not None
        data = serialize_remote_exception(EnvelopeError(f"malformed request rejected: {exc.reason}"))
        try:
            self._send_reply(exc.reply_q, exc.msg_id, None, data, True, exc.binary)
        except (amqp_exc.AMQPError, MessageDeliveryFailure) as err:
            LOG.warning("Could not send the error reply for %s: %s", exc.msg_id, err)

    # -- listening -----------------------------------------------------------

    def listen(self, target: Any, batch_size: int = 1, batch_timeout: float | None = None) -> AmqpListener:
        """A listener consuming ``target``'s queues; waits while the broker
        cannot be reached (see :meth:`_until_connected`)."""
        return self._until_connected(lambda: AmqpListener(self, target))

    def listen_for_notifications(self, targets_and_priorities: Iterable[tuple[Any, str]], pool: str | None,
                                 batch_size: int = 1, batch_timeout: float | None = None) -> AmqpListener:
        """Consume notifications (see ``fastrpc.drivers.notifications``); waits
        for the broker as :meth:`listen` does."""
        from fastrpc.drivers.notifications import AmqpNotificationListener

        return self._until_connected(lambda: AmqpNotificationListener(self, targets_and_priorities, pool))

    def _until_connected(self, make: Callable[[], AmqpListener]) -> AmqpListener:
        """``make()``, retried with the reconnect backoff while the broker
        cannot be reached, as oslo's servers wait at start (a service may boot
        before its broker); MessageDeliveryFailure once the transport is
        cleaned up. A refusal (a declare with other arguments) is raised at once."""
        backoff = Backoff(self.conf)
        while True:
            try:
                listener = make()
            except (amqp_exc.AMQPError, OSError) as exc:
                if isinstance(exc, amqp_exc.ChannelClosed):
                    raise
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

    @property
    def closed(self) -> bool:
        """Whether cleanup() was called."""
        return self._closed.is_set()

    def _forget_listener(self, listener: AmqpListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def cleanup(self) -> None:
        with self._lock:
            self._closed.set()
            listeners = list(self._listeners)
        for listener in listeners:
            listener.cleanup()
        with self._lock:
            conn, self._conn = self._conn, None
            self._pub_ch = self._decl_ch = self._reply_ch = self._confirm_ch = None
            self._reply_q = None
            self._declared.clear()
            self._notify_queues.clear()
        if conn is not None:
            conn.close()
