"""AMQP channels: synchronous methods, publishing with confirms, consumers.

A Channel is safe to share between threads. Synchronous methods are
serialised per channel (AMQP allows one outstanding request per channel) and
wait for their reply with a timeout. Everything the broker sends to the channel
is handled in the connection's reader thread: consumer callbacks
(``on_message``), confirm future callbacks and ``on_return`` run there and
must stay short.

A channel's state, its frame writes, publishing and acknowledgements, a
request's wait for its reply and the handling of what the broker sends it are
its base class :class:`fastrpc.amqp.channel_core.ChannelCore`; this module
adds opening and closing, the synchronous methods and consumers.

A channel knows its connection only through
:class:`fastrpc.amqp.interfaces.ChannelHost`; the connection hands it what it
reads through the ``handle_*`` methods. Import this module as
``fastrpc.amqp.channel``: it runs as it is, or compiled unchanged into
``fastrpc._ext.channel`` (see fastrpc._impl).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from fastrpc.amqp import spec
from fastrpc.amqp.channel_core import ChannelCore, OnCancel, OnMessage, OnReturn, PublishItem
from fastrpc.amqp.exceptions import (
    ChannelClosed,
    ConnectionClosed,
    ConnectionLost,
    OperationTimeout,
)

__all__ = ["Channel", "ChannelCloseCallback", "OnCancel", "OnMessage", "OnReturn", "PublishItem"]

LOG = logging.getLogger("fastrpc.amqp")

ChannelCloseCallback = Callable[["Channel", BaseException], None]



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
