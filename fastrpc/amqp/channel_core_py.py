"""The state of a channel, how its frames go out, and what the broker sends it.

:class:`ChannelCore` is the base class of :class:`fastrpc.amqp.channel.Channel`,
which adds opening and closing, the synchronous AMQP methods and consumers;
it is not used alone. It holds every attribute of a channel (so its compiled
build lays them all out in one struct), the one place its frames are written
(:meth:`ChannelCore._write`, :meth:`ChannelCore._send`), publishing and
acknowledgements (which run per message: compiled here, the connection's
writer and send are called directly), a synchronous request's wait for its
reply, and the ``handle_*`` methods the connection's reader calls for every
frame of this channel: deliveries, replies, confirms, returns, close, cancel
and flow. Both classes together run as one class did: no call per message is
added.

Import this module as ``fastrpc.amqp.channel_core``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.channel_core`` (see fastrpc._impl); its
C layout is fastrpc/_ext/channel_core.pxd.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from fastrpc.amqp import spec
from fastrpc.amqp.connection_core import ChannelEvents
from fastrpc.amqp.exceptions import (
    AMQPError,
    ChannelClosed,
    MessageReturned,
    OperationTimeout,
    PublishBlocked,
    PublishNacked,
    fresh_error,
)
from fastrpc.amqp.interfaces import ChannelHost

if TYPE_CHECKING:
    from fastrpc.amqp.codec import PackedProperties

__all__ = ["ChannelCore", "OnCancel", "OnMessage", "OnReturn", "PublishItem"]

LOG = logging.getLogger("fastrpc.amqp")

OnMessage = Callable[[spec.Delivery], None]
OnCancel = Callable[[str], None]
OnReturn = Callable[[spec.Returned], None]
PublishItem = Sequence[Any] | dict[str, Any]
# (mandatory, exchange, routing_key) of one publish awaiting its confirm
_Address = tuple[bool, str, str]
# What _pending.pop returns for a tag settled already (a Future never used).
_SETTLED: Future[Any] = Future()


def _settle(future: Future[Any] | None, result: Any = None, exc: BaseException | None = None) -> None:
    if future is None:
        return  # a tracked publish (see ChannelCore._send_tracked): nobody waits on it
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


class ChannelCore(ChannelEvents):
    """A channel's state, frame writing and event handling (base class of ``Channel``)."""

    def __init__(self, connection: ChannelHost, channel_id: int) -> None:
        if connection is None:  # compiled, _conn is typed and used unchecked
            raise TypeError("a channel needs its connection")
        self._conn = connection
        self.channel_id = channel_id
        self.on_return: OnReturn | None = None
        # Called in the reader thread with (channel, delivery tag) when the
        # broker nacks a tracked publish (basic_publish_tracked): it refused
        # responsibility for it, so nothing else will tell its publisher.
        self.on_nack: Callable[[Any, int], None] | None = None
        self.on_close: list[Callable[[Any, BaseException], None]] = []
        self._closed: BaseException | None = None
        # set (under the send lock) once close() sent channel.close: from then
        # on nothing else may be sent on this channel
        self._closing: BaseException | None = None
        self._rpc_lock = threading.Lock()
        self._waiter: _Waiter | None = None
        self._consumers: dict[str, OnMessage] = {}
        self._cancel_callbacks: dict[str, OnCancel] = {}
        self._flow = threading.Event()  # set while the broker lets publishers go (channel.flow)
        self._flow.set()
        # The same, read by every publish without Event.is_set()'s Python call.
        self._flow_paused = False
        # publisher confirms: tag -> future (None for a tracked publish); tags
        # below _low_tag are settled
        self._confirm = False
        self._next_tag = 1
        self._low_tag = 1
        self._pending: dict[int, Future[Any] | None] = {}
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
        conn = self._conn
        w = conn.writer()
        w.method(self.channel_id, name, **fields)  # a writer that raised is dropped, half a frame with it
        return conn.take(w)

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

    def _send_tracked(self, data: bytes) -> tuple[int, int]:
        """Send one publish on a confirm channel; return its delivery tag,
        tracked without a future (:meth:`confirmed` tells), and the stream
        position it starts at or after (``Connection.never_received`` tells):
        the call path, where both only matter if the connection dies before
        the reply."""
        conn = self._conn
        err: BaseException | None
        tag = position = 0
        lock = conn.send_lock
        lock.acquire()  # not `with`: see _send
        try:
            stopped = self._closed if self._closed is not None else self._closing
            if stopped is not None:
                err = fresh_error(stopped)
            else:
                tag = self._next_tag
                self._pending[tag] = None
                self._next_tag = tag + 1
                position = conn.stream_position()
                err = conn.send_locked(data)
                if err is not None:
                    self._pending.pop(tag, None)
        finally:
            lock.release()
        if err is not None:
            conn.send_failed(err)
            raise err
        return tag, position

    def confirmed(self, tag: int) -> bool:
        """Whether the broker confirmed publish ``tag`` and every one before
        it (an ack out of order counts once the earlier ones are in)."""
        return tag < self._low_tag

    def _send(self, data: bytes) -> None:
        """Send frames of this channel; refused once the channel is closing or closed.

        The common case of :meth:`_write`, written out because every publish
        and ack goes through it.
        """
        conn = self._conn
        # acquire/release rather than `with`: compiled, `with` makes and drops
        # two bound methods (__enter__, __exit__) per send, about 1k
        # instructions on every publish and ack.
        lock = conn.send_lock
        lock.acquire()
        try:
            stopped = self._closed if self._closed is not None else self._closing
            err = conn.send_locked(data) if stopped is None else fresh_error(stopped)
        finally:
            lock.release()
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

    def _shutdown(self, exc: BaseException) -> None:
        """Fail everything that waits on this channel (``_closed`` already set)."""
        self._flow_paused = False
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
            self._flow_paused = False
            self._flow.set()
        else:
            self._flow_paused = True
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
            future = pending.pop(t, _SETTLED)
            if future is None:  # tracked
                if error is not None:
                    self._tracked_nacked(t)
                continue
            if future is _SETTLED:
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

    def _tracked_nacked(self, tag: int) -> None:
        callback = self.on_nack
        if callback is not None:
            try:
                callback(self, tag)
            except Exception:
                LOG.exception("on_nack callback failed")

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
        properties: dict[str, Any] | PackedProperties | None = None,
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
        properties: dict[str, Any] | PackedProperties | None = None,
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
