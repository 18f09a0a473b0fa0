"""AMQP channels: synchronous methods, publishing with confirms, consumers.

A Channel is safe to share between threads. Synchronous methods are
serialised per channel (AMQP allows one outstanding request per channel) and
wait for their reply with a timeout. Everything the broker sends to the channel
is handled in the connection's reader thread: consumer callbacks
(``on_message``), confirm future callbacks and ``on_return`` run there and
must stay short.

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
from concurrent.futures import Future, InvalidStateError
from typing import Any

from fastrpc.amqp import spec
from fastrpc.amqp.exceptions import (
    AMQPError,
    ChannelClosed,
    ConnectionClosed,
    ConnectionLost,
    MessageReturned,
    OperationTimeout,
    PublishBlocked,
    PublishNacked,
    fresh_error,
)
from fastrpc.amqp.interfaces import ChannelHost

__all__ = ["Channel", "ChannelCloseCallback", "OnCancel", "OnMessage", "OnReturn", "PublishItem"]

LOG = logging.getLogger("fastrpc.amqp")

OnMessage = Callable[[spec.Delivery], None]
OnCancel = Callable[[str], None]
OnReturn = Callable[[spec.Returned], None]
ChannelCloseCallback = Callable[["Channel", BaseException], None]

PublishItem = Sequence[Any] | dict[str, Any]
# (mandatory, exchange, routing_key) of one publish awaiting its confirm
_Address = tuple[bool, str, str]


def _settle(future: Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    try:
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
    except InvalidStateError:
        pass  # cancelled by its owner meanwhile


class _Waiter:
    """One synchronous request waiting for its reply."""

    __slots__ = ("expect", "event", "result", "error")

    def __init__(self, expect: tuple[str, ...]) -> None:
        self.expect = expect
        self.event = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if not self.event.is_set():
            self.error = exc
            self.event.set()


class Channel:
    """One AMQP channel. Obtain with ``Connection.channel()``."""

    def __init__(self, connection: ChannelHost, channel_id: int) -> None:
        self._conn = connection
        self.channel_id = channel_id
        self.on_return: OnReturn | None = None
        self.on_close: list[ChannelCloseCallback] = []
        self._closed: BaseException | None = None
        # set (under the send lock) once close() sent channel.close: from then
        # on nothing else may be sent on this channel
        self._closing: BaseException | None = None
        self._rpc_lock = threading.Lock()
        self._waiter: _Waiter | None = None
        self._consumers: dict[str, OnMessage] = {}
        self._cancel_callbacks: dict[str, OnCancel] = {}
        self._flow = threading.Event()
        self._flow.set()
        # publisher confirms: tag -> future; tags below _low_tag are settled
        self._confirm = False
        self._next_tag = 1
        self._low_tag = 1
        self._pending: dict[int, Future[Any]] = {}
        self._mandatory: dict[int, tuple[str, str]] = {}
        self._returned: dict[int, MessageReturned] = {}

    # ---- state -----------------------------------------------------------

    @property
    def connection(self) -> ChannelHost:
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._closed is None and self._closing is None

    @property
    def closed_reason(self) -> BaseException | None:
        return self._closed

    @property
    def confirm_mode(self) -> bool:
        return self._confirm

    @property
    def pending_confirms(self) -> int:
        return len(self._pending)

    def __repr__(self) -> str:
        state = "closed" if self._closed is not None else "closing" if self._closing is not None else "open"
        return f"<Channel {self.channel_id} {state} on {self._conn.params.address}>"

    def _check_open(self) -> None:
        if self._closed is not None:
            raise fresh_error(self._closed)

    # ---- sending ---------------------------------------------------------

    def _encode(self, name: str, fields: dict[str, Any]) -> bytes:
        w = self._conn.writer()
        try:
            w.method(self.channel_id, name, **fields)
        except BaseException:
            w.take()  # never leave half a frame for the next caller
            raise
        return w.take()

    def _write(
        self,
        data: bytes | None,
        *,
        end: BaseException | None = None,
        answer: bool = False,
        closing: bool = False,
        register: Callable[[], Callable[[], None]] | None = None,
    ) -> bool:
        """The one place frames of this channel are written (under the send lock).

        The open/closed decision is made under the same lock as the write, so
        no frame can follow channel.close or reach a channel id after it was
        given back (and maybe reused).

        - default: refused (the closing/closed reason is raised) once close
          began; a failed send fails the connection and is raised;
        - ``closing``: these frames are our channel.close; later writes are refused;
        - ``register``: run under the lock just before the send (confirm tags);
          it returns an undo run if the send fails;
        - ``end``: these frames end the channel, which is marked closed with
          ``end`` in the same step. Returns False (nothing sent) if it already
          was closed; after our own channel.close nothing more is sent. Send
          errors only fail the connection: the channel is over anyway;
        - ``answer`` (with ``end``): send even on a closed channel (close-ok
          owed to the broker); returns whether this call closed the channel.
        """
        conn = self._conn
        err: BaseException | None = None
        with conn.send_lock:
            if end is not None:
                first = self._closed is None
                if not first and not answer:
                    return False
                if first:
                    self._closed = end
                if data is not None and (answer or self._closing is None):
                    err = conn.send_locked(data)
            else:
                stopped = self._closed if self._closed is not None else self._closing
                if stopped is not None:
                    err = fresh_error(stopped)
                else:
                    if closing:
                        self._closing = ChannelClosed(spec.REPLY_SUCCESS, f"channel {self.channel_id} is closing")
                    undo = register() if register is not None else None
                    err = conn.send_locked(data) if data is not None else None
                    if err is not None and undo is not None:
                        undo()
        if err is None:
            return True
        conn.send_failed(err)
        if end is not None:
            return first
        raise err

    def _send(self, data: bytes) -> None:
        """Send frames of this channel; refused once the channel is closing or closed.

        The common case of :meth:`_write`, written out because every publish
        and ack goes through it.
        """
        conn = self._conn
        with conn.send_lock:
            stopped = self._closed if self._closed is not None else self._closing
            err = conn.send_locked(data) if stopped is None else fresh_error(stopped)
        if err is not None:
            conn.send_failed(err)
            raise err

    def _call(self, name: str, expect: tuple[str, ...], timeout: float | None, **fields: Any) -> Any:
        conn = self._conn
        if conn.in_reader_thread():
            raise RuntimeError(f"{name} cannot wait for its reply inside the reader thread (callbacks must hand off)")
        data = self._encode(name, fields)
        if timeout is None:
            timeout = conn.params.operation_timeout
        with self._rpc_lock:
            self._check_open()
            waiter = _Waiter(expect)
            self._waiter = waiter
            try:
                # Re-check after publishing the waiter: a close racing with us
                # either sees the waiter or is seen here.
                self._check_open()
                if name == "channel.close":
                    self._write(data, closing=True)
                else:
                    self._send(data)
                conn.need_reader()
                if not waiter.event.wait(timeout):
                    exc = OperationTimeout(
                        f"{name} on channel {self.channel_id} of {conn.params.address} got no reply in {timeout:g}s"
                    )
                    self._waiter = None
                    self._abandon(name, exc)
                    raise exc
            finally:
                self._waiter = None
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _abandon(self, name: str, exc: OperationTimeout) -> None:
        """After a timeout the reply stream is out of step: close the channel.

        The id is given back only when the broker's close-ok arrives.
        """
        reason = ChannelClosed(0, f"channel abandoned: {exc}")
        data = None if name == "channel.close" else self._encode(
            "channel.close", {"reply_code": spec.REPLY_SUCCESS, "reply_text": "timeout"}
        )
        if self._write(data, end=reason):
            self._shutdown(reason)

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

    def _shutdown(self, exc: BaseException) -> None:
        """Fail everything that waits on this channel (``_closed`` already set)."""
        self._flow.set()  # wake publishers held by channel.flow
        waiter = self._waiter
        if waiter is not None:
            waiter.fail(fresh_error(exc))
        pending = self._pending
        while pending:
            try:
                _, future = pending.popitem()
            except KeyError:
                break
            _settle(future, exc=fresh_error(exc))
        self._mandatory.clear()
        self._returned.clear()
        self._consumers = {}
        self._cancel_callbacks = {}
        for callback in list(self.on_close):
            try:
                callback(self, exc)
            except Exception:
                LOG.exception("channel on_close callback failed")

    def connection_failed(self, exc: BaseException) -> None:
        """The connection ended with ``exc``: so does this channel."""
        if self._closed is None:
            self._closed = exc
        self._shutdown(exc)

    # ---- events from the reader thread -------------------------------------

    def handle_delivery(self, delivery: spec.Delivery) -> None:
        """A delivery to one of this channel's consumers."""
        callback = self._consumers.get(delivery.consumer_tag)
        if callback is None:
            # Normal for deliveries in flight when a consumer was cancelled;
            # unacked ones return to the queue when the channel closes.
            LOG.debug("delivery for unknown consumer %r on channel %d", delivery.consumer_tag, self.channel_id)
            return
        try:
            callback(delivery)
        except Exception:
            LOG.exception("on_message callback of consumer %r failed", delivery.consumer_tag)

    def handle_method(self, event: spec.Method) -> None:
        """A method frame for this channel (replies, confirms, close, cancel, flow)."""
        name = event.name
        if name == "basic.ack":
            self._on_confirm(event.args, None)
            return
        if name == "basic.nack":
            self._on_confirm(event.args, PublishNacked)
            return
        waiter = self._waiter
        if name == "channel.close":
            self._on_broker_close(event.args, waiter)
        elif name == "channel.close-ok" and self._closed is not None:
            # Reply to a close that crossed the broker's, or of an abandoned
            # channel: only now may the id be reused.
            self._conn.release_channel(self)
            if waiter is not None:
                waiter.event.set()
        elif waiter is not None and name in waiter.expect:
            waiter.result = event.args
            waiter.event.set()
        elif name == "basic.cancel":
            self._on_broker_cancel(event.args)
        elif name == "channel.flow":
            self._on_flow(bool(event.args.get("active")))
        else:
            LOG.warning("unexpected %s on channel %d ignored", name, self.channel_id)

    def handle_content(self, event: Any) -> None:
        """A content-bearing method other than a delivery (basic.return, basic.get-ok)."""
        if type(event) is spec.Returned:
            self._on_return(event)
            return
        waiter = self._waiter
        if waiter is not None and event.name in waiter.expect:
            waiter.result = event
            waiter.event.set()
        else:
            LOG.warning("unexpected %s on channel %d ignored", event.name, self.channel_id)

    def _on_broker_close(self, args: dict[str, Any], waiter: _Waiter | None) -> None:
        exc = ChannelClosed(
            args.get("reply_code", 0), args.get("reply_text", ""), args.get("class_id", 0), args.get("method_id", 0)
        )
        conn = self._conn
        already = not self._write(self._encode("channel.close-ok", {}), end=exc, answer=True)
        crossing = waiter is not None and "channel.close-ok" in waiter.expect
        if crossing:
            # Our close crossed the broker's: closed either way, but the
            # broker still answers our close; the id waits for that close-ok.
            assert waiter is not None
            waiter.event.set()
        elif exc.reply_code != spec.REPLY_SUCCESS:
            LOG.warning("channel %d of %s closed by broker: %s", self.channel_id, conn.params.address, exc)
        if not already:
            self._shutdown(exc)
        if not crossing and not already:
            conn.release_channel(self)

    def _on_broker_cancel(self, args: dict[str, Any]) -> None:
        tag = args.get("consumer_tag", "")
        self._consumers.pop(tag, None)
        on_cancel = self._cancel_callbacks.pop(tag, None)
        LOG.info("broker cancelled consumer %r on channel %d", tag, self.channel_id)
        if not args.get("nowait"):
            try:
                self._send(self._encode("basic.cancel-ok", {"consumer_tag": tag}))
            except AMQPError:
                pass
        if on_cancel is not None:
            try:
                on_cancel(tag)
            except Exception:
                LOG.exception("on_cancel callback of consumer %r failed", tag)

    def _on_flow(self, active: bool) -> None:
        if active:
            self._flow.set()
        else:
            self._flow.clear()
        try:
            self._send(self._encode("channel.flow-ok", {"active": active}))
        except AMQPError:
            pass

    def _on_confirm(self, args: dict[str, Any], error: type[PublishNacked] | None) -> None:
        tag = args["delivery_tag"]
        pending = self._pending
        low = self._low_tag
        tags: Iterable[int] = range(low, tag + 1) if args.get("multiple") else (tag,)
        special = self._mandatory or self._returned
        for t in tags:
            future = pending.pop(t, None)
            if future is None:
                continue
            if special:
                self._mandatory.pop(t, None)
                returned = self._returned.pop(t, None)
                if returned is not None:
                    _settle(future, exc=returned)
                    continue
            if error is None:
                _settle(future, True)
            else:
                _settle(future, exc=error(f"broker nacked publish {t} on channel {self.channel_id}"))
        # Tags below _low_tag are settled: move it past every settled tag so a
        # multiple ack walks only unsettled ones (single acks usually arrive in
        # order, so this also keeps up without multiple acks). Publishers add
        # to _pending before raising _next_tag.
        limit = self._next_tag
        while low < limit and low not in pending:
            low += 1
        self._low_tag = low

    def _on_return(self, event: spec.Returned) -> None:
        exc = MessageReturned(
            event.reply_code, event.reply_text, event.exchange, event.routing_key, event.properties, event.body
        )
        if self._confirm and self._mandatory:
            # The broker sends basic.return before the ack of the same message;
            # the oldest unconfirmed mandatory publish to that address is it.
            for tag, address in list(self._mandatory.items()):
                if address == (event.exchange, event.routing_key):
                    self._mandatory.pop(tag, None)
                    self._returned[tag] = exc
                    break
        callback = self.on_return
        if callback is not None:
            try:
                callback(event)
            except Exception:
                LOG.exception("on_return callback failed")
        elif not self._confirm:
            LOG.warning("%s (no on_return handler on channel %d)", exc, self.channel_id)

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
        if conn.blocked or not self._flow.is_set():
            self._wait_publish_allowed(blocked_until)
        w = conn.writer()
        try:
            w.publish(self.channel_id, exchange, routing_key, body, properties, mandatory, immediate)
        except BaseException:
            w.take()
            raise
        data = w.take()
        if not self._confirm:
            self._send(data)
            return None
        return self._send_confirmed(data, ((mandatory, exchange, routing_key),))[0]

    def publish_many(self, items: Iterable[PublishItem]) -> list[Future[Any] | None]:
        """Publish several messages with one send.

        Each item is ``(exchange, routing_key, body[, properties[, mandatory]])``
        or a dict with those keys. Returns one future per item (None entries
        without confirms).
        """
        conn = self._conn
        if self._closed is not None:
            raise fresh_error(self._closed)
        if conn.blocked or not self._flow.is_set():
            self._wait_publish_allowed()
        w = conn.writer()
        addresses: list[_Address] = []
        try:
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
        except BaseException:
            w.take()
            raise
        data = w.take()
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
        w = self._conn.writer()
        w.ack(self.channel_id, delivery_tag, multiple)
        self._send(w.take())

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        w = self._conn.writer()
        w.nack(self.channel_id, delivery_tag, multiple, requeue)
        self._send(w.take())

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        w = self._conn.writer()
        w.reject(self.channel_id, delivery_tag, requeue)
        self._send(w.take())

    def ack_many(self, delivery_tags: Iterable[int]) -> None:
        """Acknowledge several deliveries with one send (one ack frame each)."""
        w = self._conn.writer()
        for tag in delivery_tags:
            w.ack(self.channel_id, tag, False)
        data = w.take()
        if data:
            self._send(data)
