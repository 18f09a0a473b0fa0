"""What reaches a listener, on the per-message path: the deliveries of one
read gathered and handed on, and a request's fields and answers.

:class:`ReadCollector` is a listener channel's consumer callback: it gathers
the deliveries one read brings and, once the read is dispatched, hands them
on together (one ack frame for all of them), to the inline handler in the
reader thread or to the listener's pollers. :class:`IncomingCore` holds a
request's fields and answers it through the driver;
:class:`fastrpc.drivers.amqp.rpc_listener.AmqpIncomingMessage` adds the
:class:`fastrpc.drivers.base.IncomingMessage` interface on top. Both run for
every message: compiled, they run no Python frame.

Import this module as ``fastrpc.drivers.amqp.incoming``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.incoming`` (see fastrpc._impl); its C
layout is fastrpc/_ext/incoming.pxd.
"""

from __future__ import annotations

from typing import Any

from fastrpc.drivers.amqp.acks import Read
from fastrpc.exceptions import BrokerError, MessageDeliveryFailure
from fastrpc.failures import serialize_remote_exception

__all__ = ["IncomingCore", "ReadCollector"]


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
        # tuple.__new__: the NamedTuple's own __new__ is a Python call.
        item = tuple.__new__(Read, (self._gen, self._ch, self._settled, arrived))
        self._arrived = []
        listener = self._listener
        handler = listener._inline
        lock = self._inline_lock
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
