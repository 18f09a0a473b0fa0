"""AMQP channels: synchronous methods, publishing with confirms, consumers.

A Channel is safe to share between threads. Synchronous methods are
serialised per channel (AMQP allows one outstanding request per channel) and
wait for their reply with a timeout. Everything the broker sends to the channel
is handled in the connection's reader thread: consumer callbacks
(``on_message``), confirm future callbacks and ``on_return`` run there and
must stay short.

A channel's state, its frame writes, a request's wait for its reply and the
handling of what the broker sends it are its base class
:class:`fastrpc.amqp.channel_core.ChannelCore`; this module adds opening and
closing, the synchronous methods, publishing and acknowledgements.

A channel knows its connection only through
:class:`fastrpc.amqp.interfaces.ChannelHost`; the connection hands it what it
reads through the ``handle_*`` methods. Import this module as
``fastrpc.amqp.channel``: it runs as it is, or compiled unchanged into
``fastrpc._ext.channel`` (see fastrpc._impl).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from fastrpc.amqp import spec
from fastrpc.amqp.channel_core import ChannelCore, OnCancel, OnMessage, OnReturn
from fastrpc.amqp.exceptions import (
    ChannelClosed,
    ConnectionClosed,
    ConnectionLost,
    OperationTimeout,
    PublishBlocked,
    fresh_error,
)

__all__ = ["Channel", "ChannelCloseCallback", "OnCancel", "OnMessage", "OnReturn", "PublishItem"]

LOG = logging.getLogger("fastrpc.amqp")

ChannelCloseCallback = Callable[["Channel", BaseException], None]

PublishItem = Sequence[Any] | dict[str, Any]
# (mandatory, exchange, routing_key) of one publish awaiting its confirm
_Address = tuple[bool, str, str]


class Channel(ChannelCore):
    """One AMQP channel. Obtain with ``Connection.channel()``."""

    # ---- lifecycle -------------------------------------------------------

    def open(self, timeout: float | None = None) -> None:
        """Send channel.open and wait for its reply (Connection.channel() does this)."""
        try:
            self._call("channel.open", ("channel.open-ok",), timeout)
        except OperationTimeout:
            raise
        except BaseException:
            self._closed = self._closed or ChannelClosed(0, "channel open failed")
            self._conn.release_channel(self)
            raise

    def close(self, timeout: float | None = None) -> None:
        """Close the channel (idempotent). Later calls on it raise ChannelClosed."""
        if self._closed is not None:
            return
        if self._conn.in_reader_thread():
            # A callback cannot wait for close-ok (only this thread reads it):
            # close now, give the id back when close-ok arrives.
            self._close_without_wait()
            return
        try:
            self._call(
                "channel.close", ("channel.close-ok",), timeout, reply_code=spec.REPLY_SUCCESS, reply_text="Normal close"
            )
        except OperationTimeout:
            return  # abandoned; the id comes back if close-ok ever arrives
        except (ChannelClosed, ConnectionClosed, ConnectionLost):
            return  # already closed under us
        reason = ChannelClosed(spec.REPLY_SUCCESS, "channel closed by client")
        if self._write(None, end=reason):
            self._shutdown(reason)
            self._conn.release_channel(self)

    def _close_without_wait(self) -> None:
        reason = ChannelClosed(spec.REPLY_SUCCESS, "channel closed by client")
        data = self._encode("channel.close", {"reply_code": spec.REPLY_SUCCESS, "reply_text": "Normal close"})
        if self._write(data, end=reason):
            self._shutdown(reason)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- synchronous methods ---------------------------------------------

    def exchange_declare(
        self,
        exchange: str,
        type: str = "direct",
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._call(
            "exchange.declare", ("exchange.declare-ok",), timeout, exchange=exchange, type=type, passive=passive,
            durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments or {},
        )

    def exchange_delete(self, exchange: str, if_unused: bool = False, timeout: float | None = None) -> None:
        self._call("exchange.delete", ("exchange.delete-ok",), timeout, exchange=exchange, if_unused=if_unused)

    def exchange_bind(
        self, destination: str, source: str, routing_key: str = "", arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._call("exchange.bind", ("exchange.bind-ok",), timeout, destination=destination, source=source,
                   routing_key=routing_key, arguments=arguments or {})

    def exchange_unbind(
        self, destination: str, source: str, routing_key: str = "", arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._call("exchange.unbind", ("exchange.unbind-ok",), timeout, destination=destination, source=source,
                   routing_key=routing_key, arguments=arguments or {})

    def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[str, int, int]:
        """Declare a queue; returns (name, message count, consumer count)."""
        ok = self._call(
            "queue.declare", ("queue.declare-ok",), timeout, queue=queue, passive=passive, durable=durable,
            exclusive=exclusive, auto_delete=auto_delete, arguments=arguments or {},
        )
        return ok["queue"], ok["message_count"], ok["consumer_count"]

    def queue_bind(
        self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._call("queue.bind", ("queue.bind-ok",), timeout, queue=queue, exchange=exchange,
                   routing_key=routing_key, arguments=arguments or {})

    def queue_unbind(
        self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._call("queue.unbind", ("queue.unbind-ok",), timeout, queue=queue, exchange=exchange,
                   routing_key=routing_key, arguments=arguments or {})

    def queue_purge(self, queue: str, timeout: float | None = None) -> int:
        return int(self._call("queue.purge", ("queue.purge-ok",), timeout, queue=queue)["message_count"])

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, timeout: float | None = None
    ) -> int:
        ok = self._call("queue.delete", ("queue.delete-ok",), timeout, queue=queue, if_unused=if_unused,
                        if_empty=if_empty)
        return int(ok["message_count"])

    def basic_qos(
        self, prefetch_count: int = 0, prefetch_size: int = 0, global_: bool = False, timeout: float | None = None
    ) -> None:
        self._call("basic.qos", ("basic.qos-ok",), timeout, prefetch_size=prefetch_size,
                   prefetch_count=prefetch_count, global_=global_)

    def basic_consume(
        self,
        queue: str,
        on_message: OnMessage,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str = "",
        on_cancel: OnCancel | None = None,
        timeout: float | None = None,
    ) -> str:
        """Start a consumer; returns its tag.

        ``on_message(delivery)`` runs in the thread reading the connection
        (the reader thread, or a thread in :meth:`Connection.wait_for`). ``on_cancel(tag)``
        is called when the broker cancels the consumer (e.g. queue deleted).
        """
        self._check_open()
        # The tag is chosen here so the consumer is registered before the
        # broker can deliver anything to it.
        tag = consumer_tag or f"fastrpc.{self.channel_id}.{uuid.uuid4().hex}"
        if tag in self._consumers:
            raise ValueError(f"consumer tag {tag!r} already in use on channel {self.channel_id}")
        self._consumers[tag] = on_message
        if on_cancel is not None:
            self._cancel_callbacks[tag] = on_cancel
        try:
            self._call("basic.consume", ("basic.consume-ok",), timeout, queue=queue, consumer_tag=tag,
                       no_ack=no_ack, exclusive=exclusive, arguments=arguments or {})
        except BaseException:
            self._consumers.pop(tag, None)
            self._cancel_callbacks.pop(tag, None)
            raise
        return tag

    def basic_cancel(self, consumer_tag: str, timeout: float | None = None) -> None:
        """Stop a consumer; deliveries already sent still reach its callback.

        From the reader thread (inside a callback) the cancel is sent without
        waiting for the broker's reply, and the consumer is removed at once.
        """
        if self._conn.in_reader_thread():
            self._consumers.pop(consumer_tag, None)
            self._cancel_callbacks.pop(consumer_tag, None)
            self._send(self._encode("basic.cancel", {"consumer_tag": consumer_tag, "nowait": True}))
            return
        try:
            self._call("basic.cancel", ("basic.cancel-ok",), timeout, consumer_tag=consumer_tag)
        finally:
            self._consumers.pop(consumer_tag, None)
            self._cancel_callbacks.pop(consumer_tag, None)

    def basic_get(self, queue: str, no_ack: bool = False, timeout: float | None = None) -> spec.ContentMethod | None:
        """Fetch one message (basic.get-ok as a ContentMethod) or None if the queue is empty."""
        result = self._call("basic.get", ("basic.get-ok", "basic.get-empty"), timeout, queue=queue, no_ack=no_ack)
        return result if isinstance(result, spec.ContentMethod) else None

    def confirm_select(self, timeout: float | None = None) -> None:
        """Turn on publisher confirms: basic_publish then returns futures."""
        if self._confirm:
            return
        self._call("confirm.select", ("confirm.select-ok",), timeout)
        self._confirm = True

    # ---- publishing --------------------------------------------------------

    def _wait_publish_allowed(self, until: float | None = None) -> None:
        """Wait while the broker blocks publishing: until ``until`` (a
        ``time.monotonic()``, a call's deadline) when given, else up to the
        connection's ``blocked_timeout``; then raise PublishBlocked."""
        conn = self._conn
        started = time.monotonic()
        deadline = until if until is not None else started + conn.params.blocked_timeout
        while conn.blocked or not self._flow.is_set():
            self._check_open()
            conn.check_open()
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0 or conn.in_reader_thread():
                # The reader thread cannot wait: only it could see the unblock.
                why = f"connection blocked by broker ({conn.blocked_reason})" if conn.blocked else "channel flow off"
                raise PublishBlocked(f"publishing to {conn.params.address} not allowed for "
                                     f"{now - started:.3g}s: {why}")
            remaining = min(remaining, threading.TIMEOUT_MAX)
            if conn.blocked:
                conn.wait_unblocked(remaining)
            else:
                self._flow.wait(remaining)

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: dict[str, Any] | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        blocked_until: float | None = None,
    ) -> Future[Any] | None:
        """Publish one message.

        With confirms on, returns a Future resolved True on ack, failed with
        PublishNacked / MessageReturned / ChannelClosed / ConnectionLost;
        otherwise None. Future callbacks run in the reader thread. While the
        broker blocks publishing (connection.blocked, channel.flow), waits
        until ``blocked_until`` (a ``time.monotonic()``) when given, else up
        to the connection's ``blocked_timeout``, then raises PublishBlocked.
        """
        conn = self._conn
        if self._closed is not None:
            raise fresh_error(self._closed)
        if conn.blocked or self._flow_paused:
            self._wait_publish_allowed(blocked_until)
        w = conn.writer()
        w.publish(self.channel_id, exchange, routing_key, body, properties, mandatory, immediate)
        data = conn.take(w)  # a writer that raised is dropped, half a frame with it
        if not self._confirm:
            self._send(data)
            return None
        return self._send_confirmed(data, ((mandatory, exchange, routing_key),))[0]

    def basic_publish_tracked(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: dict[str, Any] | None = None,
        blocked_until: float | None = None,
        mandatory: bool = False,
    ) -> tuple[int, int]:
        """Publish one message on a confirm channel without a future: returns
        its delivery tag, with which :meth:`confirmed` says later whether the
        broker has taken it (a ``mandatory`` one it could not route goes to
        ``on_return`` first), and the stream position it starts at or after,
        with which ``Connection.never_received`` says, should the broker end
        the connection, whether it certainly never got it. Waits while the
        broker blocks publishing as :meth:`basic_publish` does."""
        conn = self._conn
        if self._closed is not None:
            raise fresh_error(self._closed)
        if not self._confirm:
            raise RuntimeError("basic_publish_tracked needs confirm_select() first")
        if conn.blocked or self._flow_paused:
            self._wait_publish_allowed(blocked_until)
        w = conn.writer()
        w.publish(self.channel_id, exchange, routing_key, body, properties, mandatory, False)
        return self._send_tracked(conn.take(w))

    def publish_many(self, items: Iterable[PublishItem]) -> list[Future[Any] | None]:
        """Publish several messages with one send.

        Each item is ``(exchange, routing_key, body[, properties[, mandatory]])``
        or a dict with those keys. Returns one future per item (None entries
        without confirms).
        """
        conn = self._conn
        if self._closed is not None:
            raise fresh_error(self._closed)
        if conn.blocked or self._flow_paused:
            self._wait_publish_allowed()
        w = conn.writer()
        addresses: list[_Address] = []
        # Should an item fail, the writer is dropped with the items before it.
        for item in items:
            if isinstance(item, dict):
                exchange = item["exchange"]
                routing_key = item["routing_key"]
                mandatory = bool(item.get("mandatory", False))
                w.publish(self.channel_id, exchange, routing_key, item["body"], item.get("properties"), mandatory)
            else:
                exchange, routing_key = item[0], item[1]
                mandatory = bool(item[4]) if len(item) > 4 else False
                w.publish(self.channel_id, exchange, routing_key, item[2], item[3] if len(item) > 3 else None,
                          mandatory)
            addresses.append((mandatory, exchange, routing_key))
        data = conn.take(w)
        if not addresses:
            return []
        if not self._confirm:
            self._send(data)
            return [None] * len(addresses)
        return list(self._send_confirmed(data, addresses))

    def _send_confirmed(self, data: bytes, addresses: Sequence[_Address]) -> list[Future[Any]]:
        """Send encoded publishes with one confirm future each, in tag order.

        Tags are taken under the send lock, so their order is the order the
        broker sees the publishes; they are given back if the send fails.
        """
        futures: list[Future[Any]] = []

        def register() -> Callable[[], None]:
            pending = self._pending
            mandatory_tags = self._mandatory
            first = tag = self._next_tag
            for mandatory, exchange, routing_key in addresses:
                future: Future[Any] = Future()
                pending[tag] = future
                if mandatory:
                    mandatory_tags[tag] = (exchange, routing_key)
                futures.append(future)
                tag += 1
            self._next_tag = tag

            def undo() -> None:
                for t in range(first, tag):
                    pending.pop(t, None)
                    mandatory_tags.pop(t, None)

            return undo

        self._write(data, register=register)
        self._conn.need_reader()  # the confirms must be read
        return futures

    # ---- acknowledgements --------------------------------------------------

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        conn = self._conn
        w = conn.writer()
        w.ack(self.channel_id, delivery_tag, multiple)
        self._send(conn.take(w))

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        conn = self._conn
        w = conn.writer()
        w.nack(self.channel_id, delivery_tag, multiple, requeue)
        self._send(conn.take(w))

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        conn = self._conn
        w = conn.writer()
        w.reject(self.channel_id, delivery_tag, requeue)
        self._send(conn.take(w))

    def ack_many(self, delivery_tags: Iterable[int]) -> None:
        """Acknowledge several deliveries with one send (one ack frame each)."""
        conn = self._conn
        w = conn.writer()
        for tag in delivery_tags:
            w.ack(self.channel_id, tag, False)
        data = conn.take(w)
        if data:
            self._send(data)
