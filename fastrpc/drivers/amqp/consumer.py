"""What every listener of the AMQP driver shares: its own connection that
consumes some queues, reconnecting when lost; deliveries handed to pollers
(or run in the reader thread: inline dispatch); stop and cleanup.

A listener kind (RPC requests, notifications) is a subclass that fills in
the extension points of :class:`Consumer`: what it declares, what a poller
gets from one read, and how a read runs inline.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from fastrpc import metrics
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.sync import Lock
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.amqp import incoming
from fastrpc.drivers.amqp.acks import Read, Settled
from fastrpc.drivers.amqp.connecting import Backoff, HostOrder, open_connection
from fastrpc.drivers.amqp.handoff import EMPTY, STOP, Handoff
from fastrpc.drivers.amqp.incoming import ReadCollector
from fastrpc.drivers.amqp.link import Link
from fastrpc.drivers.amqp.settling import RECHECK_TIMEOUT, Rechecks
from fastrpc.drivers.base import IncomingMessage, Listener
from fastrpc.drivers.topology import Topology
from fastrpc.envelope import EnvelopeError

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastrpc.drivers.amqp.incoming import RequestIntake

LOG = logging.getLogger(__name__)

# Deliveries acked with one frame at most. Acked ones still run after stop(),
# so this also bounds what a stopping server finishes: up to this many per
# worker of the threading executor beyond those running.
ACK_BATCH = 16


class ListenerDriver(Protocol):
    """What a listener needs of the driver that made it."""

    conf: Any
    params: list[ConnectionParams]
    topology: Topology
    default_exchange: str
    max_body: int

    def forget_listener(self, listener: Consumer) -> None:
        """``listener`` was cleaned up."""


class Consumer(Listener):
    """Consumes ``queues`` on its own connection.

    When the connection dies the listener reconnects in the background (with
    jittered exponential backoff) and declares and consumes the same queues
    again; deliveries from the dead channel are dropped unacked, the broker
    has already requeued them.

    Extension points, for subclasses:

    * :meth:`declare` (required): declare and bind what is consumed, on every connect;
    * :meth:`take` (required): what a poller gets from one read, settling
      (acking, rejecting) as the kind of message requires;
    * :meth:`run_read`: run the messages of one read in the reader thread
      (inline dispatch); by default ``handler`` of each message ``take`` gives;
    * :meth:`owned_queues`: queues only this listener uses, deleted at cleanup.

    And helpers for them: :meth:`is_current` (whether a read's channel is still
    the live one), :meth:`seen_before` (the ``_unique_id`` window) and
    :meth:`reject` (a malformed delivery).
    """

    message_kind = "request"  # what it consumes, in log lines
    # The metrics slot of a delivery this kind of listener rejects as malformed.
    MALFORMED_SLOT = metrics.MALFORMED_REQUESTS

    def __init__(self, driver: ListenerDriver, queues: list[str], label: str) -> None:
        """``label`` names the listener in logs (a topic); connects at once."""
        self._driver = driver
        self.queues = queues
        self._label = label
        self._incoming = Handoff()
        self._seen: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._marks = itertools.count()  # seen_before's values
        self._seen_lock = threading.Lock()  # the counts
        # Set by dispatch_inline(): requests run in the reader thread.
        self._inline: Any = None
        self._inline_lock = Lock()  # taken per read: see fastrpc.amqp.sync
        # Set by the first poll: then dispatch_inline() is refused (one or the other).
        self._polled = False
        self._stopped = threading.Event()
        # stop() sets it before _stopped: what the per-message paths read,
        # without Event.is_set()'s Python call.
        self._stopping = False
        self._lock = threading.Lock()
        self.bad_messages = 0
        self.duplicates = 0
        self.reconnects = 0
        self._gen = 0
        self._conn: Connection | None = None
        self._channel: Any = None
        self._tags: list[str] = []
        self._hosts = HostOrder(driver.params, driver.conf.kombu_failover_strategy)
        self.link = Link(f"listener for {label}", "listener")
        self._restart_reason: str | None = None  # why _restart() closes the connection
        self._rechecks = Rechecks("fastrpc-listener-recheck", self._stopped)
        self.intake = self.request_intake()
        if self.intake is not None:
            # The usual poll of one request compiled (like the driver's send):
            # no Python frame between a worker's poll and the handoff.
            self.poll = self.intake.poll  # type: ignore[method-assign]
        self._connect()
        metrics.track_listener(self)

    @property
    def connection(self) -> Connection | None:
        """The connection it consumes on now (None while it reconnects after a loss, or once stopped)."""
        conn = self._conn
        return conn if conn is not None and conn.is_open else None

    # -- extension points ------------------------------------------------------

    def declare(self, ch: Any) -> None:
        """Declare and bind the exchanges and queues consumed (on every connect)."""
        raise NotImplementedError

    def take(self, item: Read) -> list[IncomingMessage]:
        """The messages a poller gets from one read (settled as their kind requires)."""
        raise NotImplementedError

    def run_read(self, handler: Callable[[IncomingMessage], Any], item: Read) -> None:
        """Run ``handler`` for each message of one read, in this thread (inline
        dispatch). Called with the inline lock held: one read at a time."""
        for msg in self.take(item):
            handler(msg)

    def request_intake(self) -> RequestIntake | None:
        """The compiled path of one delivered request, for a listener of RPC
        requests (a read of one request then skips :meth:`run_read`); None
        for other kinds."""
        return None

    def owned_queues(self) -> list[str]:
        """Queues only this listener uses: deleted at cleanup, not left until they expire."""
        return []

    # -- helpers for subclasses --------------------------------------------------

    def is_current(self, gen: int) -> bool:
        """Whether ``gen`` (a read's) is the live connection's: a read of a
        lost one must not be settled, the broker requeued it."""
        return gen == self._gen

    def seen_before(self, uid: str, remember: bool = True) -> bool:
        """Whether ``uid`` was remembered already (counted as a duplicate);
        else remember it if asked. Several workers take messages at once:
        remembering is one ``setdefault`` (atomic, as is ``next`` of the
        counter) with a value no other call uses, so no lock per message."""
        seen = self._seen
        if remember:
            mark = next(self._marks)
            if seen.setdefault(uid, mark) == mark:
                if len(seen) > incoming.DEDUP_WINDOW:  # read where RequestIntake reads it
                    self.forget_oldest()
                return False
        elif uid not in seen:
            return False
        self.count_duplicate()
        return True

    def forget_oldest(self) -> None:
        """Drop the oldest remembered ``_unique_id`` (the window is full)."""
        try:
            self._seen.popitem(last=False)
        except KeyError:  # emptied meanwhile (cannot be at this size)
            pass

    def count_duplicate(self) -> None:
        """Count a delivery dropped as one seen before."""
        with self._seen_lock:
            self.duplicates += 1
        if metrics.on:
            metrics.counts[metrics.DUPLICATES] += 1

    def reject(self, ch: Any, delivery: spec.Delivery, exc: EnvelopeError) -> None:
        """Count, log and reject (without requeue) a delivery that could not be decoded."""
        with self._seen_lock:  # pollers reject at once
            self.bad_messages += 1
        if metrics.on:
            metrics.counts[self.MALFORMED_SLOT] += 1
        LOG.warning("Rejected malformed %s for topic %s (exchange %r, routing key %r): %s",
                    self.message_kind, self._label, delivery.exchange, delivery.routing_key, exc.reason)
        try:
            ch.basic_reject(delivery.delivery_tag, requeue=False)
        except amqp_exc.AMQPError as err:
            LOG.debug("basic.reject failed: %s", err)

    # -- connecting ------------------------------------------------------------

    def _connect(self) -> None:
        driver = self._driver
        conn = open_connection(self._hosts, self._conn)
        try:
            ch = conn.channel()
            prefetch = driver.topology.prefetch_count
            if prefetch > 0:
                ch.basic_qos(prefetch_count=prefetch)
            if self._gen == 0 or not self._queues_exist(conn):
                self.declare(ch)
            gen = self._gen + 1
            # Acks of this channel's tags go to this channel, with its own
            # bookkeeping, even when taken after a reconnect replaced both.
            # The deliveries of one read are taken together after it: one ack
            # frame for all of them instead of one each.
            on_message = ReadCollector(self, gen, ch, Settled(), conn.after_dispatch, ACK_BATCH).on_message

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
                self._restart(ch, f"the broker cancelled its consumer {tag!r} (queue deleted or its node lost)",
                              "consumer_cancelled")

            self._tags = [ch.basic_consume(name, on_message, on_cancel=on_cancel) for name in self.queues]
            conn.on_close.append(self._on_connection_closed)
            ch.on_close.append(self._on_channel_closed)
        except BaseException:
            conn.close()
            raise
        self.link.connected(conn.params.address)
        if gen > 1:
            self.link.restored(f"consumers of {', '.join(self.queues)}")
            self._rechecks.schedule(functools.partial(self._recheck, gen, ch))

    def _recheck(self, gen: int, ch: Any) -> bool:
        """After a reconnect: declare and bind again (the cluster's cleanup of
        a lost node may have deleted the bindings, or the queue record, under
        the same names), and consume again when a queue has no consumer left
        (ours was on a queue record since deleted). False once ``gen`` is
        no longer the live connection."""
        if self._stopped.is_set() or gen != self._gen or not ch.is_open:
            return False
        try:
            self.declare(ch)
            for name in self.queues:
                if ch.queue_declare(name, passive=True, timeout=RECHECK_TIMEOUT)[2] == 0:
                    self._restart(ch, f"queue {name} has no consumer (the cluster deleted the queue we consumed)",
                                  "consumer_lost")
                    return False
        except amqp_exc.AMQPError as exc:
            # A closed channel restarts the listener by itself (_on_channel_closed).
            LOG.debug("%s: check after reconnect failed: %s", self.link.name, exc)
            return False
        return True

    def _queues_exist(self, conn: Connection) -> bool:
        """After a loss: whether every queue consumed is still there (a
        passive declare each, on a channel of its own that a NOT_FOUND may
        close). Then what :meth:`declare` made before is there too, bindings
        included: a queue keeps its bindings while it lives. Declaring again
        is not free when a node is hung: RabbitMQ 3.x runs each binding as a
        cluster-wide transaction, which waits until the cluster drops the
        hung node (net_ticktime, a minute by default), while a passive
        declare of a queue that lives elsewhere is answered at once. The
        checks after the restore bind again anyway."""
        # The connection's usual operation timeout: a classic queue whose
        # node is hung is answered (NOT_FOUND) the moment the cluster drops
        # that node, so waiting beats a retry that sleeps through that moment.
        ch = conn.channel()
        try:
            for name in self.queues:
                ch.queue_declare(name, passive=True)
        except amqp_exc.ChannelClosed as exc:
            LOG.debug("%s: %s; declaring everything again", self.link.name, exc.reply_text)
            return False
        ch.close()
        return True

    def _on_connection_closed(self, conn: Connection, exc: BaseException) -> None:
        if self._stopped.is_set() or conn is not self._conn:
            return
        reason, self._restart_reason = self._restart_reason, None
        self.link.lost(conn.params.address, exc, reason)
        threading.Thread(target=self._reconnect, name="fastrpc-listener-reconnect", daemon=True).start()

    def _on_channel_closed(self, ch: Any, exc: BaseException) -> None:
        # The broker closed the channel alone (a refused ack, say): the
        # consumers are gone with it.
        self._restart(ch, f"its channel was closed: {exc}", "channel_closed")

    def _restart(self, ch: Any, why: str, reason: str) -> None:
        """A consumer of ``ch`` is gone while the connection stays: close the
        connection, which reconnects, declares the queues and consumes again.
        From another thread, as this runs in the reader. ``reason``: a
        short name of ``why`` (the reconnect's label in the metrics)."""
        conn = self._conn
        if self._stopped.is_set() or ch is not self._channel or conn is None or not conn.is_open:
            return
        LOG.warning("%s: %s; consuming again", self.link.name, why)
        self._restart_reason = reason
        threading.Thread(target=self._close_for_restart, args=(conn,), name="fastrpc-listener-close",
                         daemon=True).start()

    def _close_for_restart(self, conn: Connection) -> None:
        # kombu_reconnect_splay: a random pause first, so that the consumers a
        # broker cancelled together (their queues' node went away) do not all
        # come back in the same instant.
        splay = float(self._driver.conf.kombu_reconnect_splay or 0)
        if splay > 0 and self._stopped.wait(random.uniform(0, splay)):
            return
        conn.close()

    def _reconnect(self) -> None:
        """Connect again until it works or the listener stops: the next host
        at once, then full-jitter backoff (queues whose node is down are
        refused, NOT_FOUND, until the broker moves or forgets them: the
        same loop retries them)."""
        backoff = Backoff(self._driver.conf)
        backoff.next()  # the immediate attempt is this first one
        while not self._stopped.is_set():
            try:
                self._connect()
            except (amqp_exc.AMQPError, OSError) as exc:
                delay = backoff.next()
                self.link.attempt_failed(exc, self._hosts.after(self._conn)[0].address, delay)
                self._stopped.wait(delay)
                continue
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
        if self._polled:
            raise RuntimeError("dispatch_inline() on a listener that is polled")
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
                    if item is EMPTY or item is STOP:
                        break
                    self.run_read(handler, item)
            finally:
                lock.release()

        threading.Thread(target=drain, name=f"fastrpc-server-{self._label}", daemon=True).start()

    def wait_inline_idle(self) -> None:
        """Return once no inline handler runs, and none will start after stop()."""
        with self._inline_lock:
            pass

    # -- polling -------------------------------------------------------------

    def poll(self, timeout: float | None = None, batch_size: int = 1) -> list[IncomingMessage]:
        # An RPC listener's instance binds poll to its intake's (compiled),
        # which comes here through poll_until for all but the usual poll.
        self._polled = True
        deadline = None if timeout is None else time.monotonic() + timeout
        return self.poll_until(deadline, batch_size, EMPTY, timeout)

    def poll_until(self, deadline: float | None, batch_size: int, item: Any,
                   wait: float | None) -> list[IncomingMessage]:
        """:meth:`poll`'s loop: up to ``batch_size`` messages, waiting until
        ``deadline`` (None: no limit) for them; ``item``: one gotten from the
        handoff already (else EMPTY: the next get waits up to ``wait``, or,
        when None, for the time left until ``deadline``)."""
        incoming = self._incoming
        result: list[IncomingMessage] = []
        while True:
            if item is EMPTY:
                if wait is None and deadline is not None:
                    # After dropped messages: wait on for what is left.
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        return result
                if self._stopping:
                    return self._taken_leftovers(batch_size)
                item = incoming.get(wait)
                if item is EMPTY:
                    return []
            kind = type(item)
            if kind is Read and batch_size == 1 and len(item.deliveries) == 1 and not incoming.queued:
                # The usual poll: one read of one request, nothing queued behind it.
                result = self.take(item)
                if result:
                    return result
            elif kind is not Read and batch_size == 1 and item is not STOP:
                # Taken (acked) with the rest of its read by another poll: the
                # usual poll under a flood.
                return [item]
            else:
                result = self._take_batch(item, batch_size)
                if result or item is STOP:
                    return result
            # All dropped (duplicates, malformed): wait on for what is left.
            item, wait = EMPTY, None

    def _take_batch(self, item: Any, batch_size: int) -> list[IncomingMessage]:
        """Up to ``batch_size`` messages, from ``item`` (gotten from the
        handoff) and what is queued behind it."""
        incoming = self._incoming
        result: list[IncomingMessage] = []
        while True:
            if item is STOP:
                # Leave the marker for any other poller, then stop.
                incoming.put(STOP)
                break
            if type(item) is Read:
                if incoming.queued:
                    item = self._with_queued_reads(item)
                result += self.take(item)
            else:
                result.append(item)  # taken (acked) by another poller
            if len(result) >= batch_size:
                break
            item = incoming.get_nowait()
            if item is EMPTY:
                break
        if len(result) > batch_size:
            # Acked with the others of their read: idle pollers run them,
            # or the next poll returns them (even after stop()).
            incoming.put_front(result[batch_size:])
            del result[batch_size:]
        return result

    def _with_queued_reads(self, item: Read) -> Read:
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
            if type(queued) is not Read or queued.gen != gen:
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
        return Read(gen, ch, settled, joined)

    def _taken_leftovers(self, batch_size: int) -> list[IncomingMessage]:
        """After stop(): the requests already acked (they must still run), not the others."""
        result: list[IncomingMessage] = []
        incoming = self._incoming
        skipped = []
        while len(result) < batch_size:
            item = incoming.get_nowait()
            if item is EMPTY:
                break
            if type(item) is Read or item is STOP:
                skipped.append(item)  # not taken: the broker requeues it (and the marker stays)
            else:
                result.append(item)
        if skipped:
            # Queued, not handed to a poller still waiting: nobody takes them now.
            incoming.put_front(skipped, hand=False)
        return result

    # -- shutdown ------------------------------------------------------------

    def queued_messages(self) -> int:
        """Messages received and not yet taken by a poller (the executor's backlog)."""
        return sum(len(item.deliveries) if type(item) is Read else item is not STOP
                   for item in self._incoming.items())

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopping = True
        self._stopped.set()
        self._incoming.put(STOP)
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
        if conn is not None and conn.is_open:
            for name in self.owned_queues():
                try:
                    ch.queue_delete(name)
                except amqp_exc.AMQPError as exc:
                    LOG.debug("queue delete of %s failed: %s", name, exc)
        if conn is not None:
            conn.close()
        self._driver.forget_listener(self)
