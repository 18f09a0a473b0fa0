"""memory:// driver: an in-process broker for unit tests.

It mimics the rabbit topology: a topic exchange per ``target.exchange`` (or
the control exchange) with shared queues ``<topic>`` and ``<topic>.<server>``,
a fanout exchange ``<topic>_fanout`` with one queue per listener, and one
reply queue per driver; notifications go to ``<topic>.<priority>`` queues (or
one per listener pool) of the topic exchange. Transports with the same hosts
and virtual host share one broker, so a client and a server may use separate
transports. Messages are encoded on send and decoded on receive, as on a real
wire, so nothing is shared by reference and unencodable arguments fail at the
caller.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgpack

from fastrpc.drivers.base import BaseDriver, IncomingMessage, Listener
from fastrpc.envelope_common import encode_failed
from fastrpc.exceptions import (
    InvalidTarget,
    MessageDeliveryFailure,
    MessageUndeliverable,
    MessagingTimeout,
)
from fastrpc.failures import deserialize_remote_exception, serialize_remote_exception
from fastrpc.options import Options
from fastrpc.target import Target
from fastrpc.transport_url import TransportURL

__all__ = ["MemoryDriver", "MemoryIncomingMessage", "MemoryListener"]

LOG = logging.getLogger(__name__)


class _Queue:
    def __init__(self, name: str, auto_delete: bool = False) -> None:
        self.name = name
        self.auto_delete = auto_delete
        self.messages: deque[bytes] = deque()


class _Broker:
    """Exchanges, bindings and queues of one virtual host. One lock for all."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.cond = threading.Condition()
        self.queues: dict[str, _Queue] = {}
        # exchange -> routing key -> queue names
        self.bindings: dict[str, dict[str, set[str]]] = {}
        self.reply_handlers: dict[str, Any] = {}
        self.users = 0

    def declare(self, name: str, exchange: str, routing_key: str, auto_delete: bool = False) -> None:
        with self.cond:
            self.queues.setdefault(name, _Queue(name, auto_delete))
            self.bindings.setdefault(exchange, {}).setdefault(routing_key, set()).add(name)

    def delete(self, name: str) -> None:
        with self.cond:
            self.queues.pop(name, None)
            for keys in self.bindings.values():
                for names in keys.values():
                    names.discard(name)

    def publish(self, exchange: str, routing_key: str, body: bytes, fanout: bool = False) -> int:
        """Route a message; return the number of queues it reached."""
        with self.cond:
            keys = self.bindings.get(exchange, {})
            names: Iterable[str]
            if fanout:
                names = {n for group in keys.values() for n in group}
            else:
                names = keys.get(routing_key, ())
            delivered = 0
            for name in names:
                queue = self.queues.get(name)
                if queue is not None:
                    queue.messages.append(body)
                    delivered += 1
            if delivered:
                self.cond.notify_all()
            return delivered

    def requeue(self, name: str, body: bytes) -> None:
        with self.cond:
            queue = self.queues.get(name)
            if queue is not None:
                queue.messages.appendleft(body)
                self.cond.notify_all()

    def reply(self, reply_queue: str, body: bytes) -> bool:
        with self.cond:
            handler = self.reply_handlers.get(reply_queue)
        if handler is None:
            return False
        handler(body)
        return True


_BROKERS: dict[tuple[Any, ...], _Broker] = {}
_BROKERS_LOCK = threading.Lock()


def _attach(url: TransportURL) -> _Broker:
    key = (tuple((h.hostname, h.port) for h in url.hosts), url.virtual_host or "/")
    with _BROKERS_LOCK:
        broker = _BROKERS.get(key)
        if broker is None:
            broker = _BROKERS[key] = _Broker(key)
        broker.users += 1
        return broker


def _detach(broker: _Broker) -> None:
    with _BROKERS_LOCK:
        broker.users -= 1
        if broker.users <= 0 and _BROKERS.get(broker.key) is broker:
            del _BROKERS[broker.key]


class _Codec:
    def __init__(self, serialization: str) -> None:
        self.msgpack = serialization == "msgpack"

    def encode(self, obj: Any) -> bytes:
        if self.msgpack:
            return msgpack.packb(obj, use_bin_type=True)
        return json.dumps(obj).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        if self.msgpack:
            return msgpack.unpackb(data, raw=False)
        return json.loads(data)


class MemoryIncomingMessage(IncomingMessage):
    """A request taken from an in-memory queue."""

    def __init__(self, listener: MemoryListener, queue: str, body: bytes, payload: dict) -> None:
        super().__init__(payload.get("ctxt") or {}, payload.get("message") or {}, payload.get("msg_id"))
        self.client_timeout = payload.get("timeout")
        self._listener = listener
        self._queue = queue
        self._body = body
        self._reply_q: str | None = payload.get("reply_q")
        self._settled = False
        self._replied = False

    def acknowledge(self) -> None:
        self._settled = True

    def requeue(self) -> None:
        if not self._settled:
            self._settled = True
            self._listener.broker.requeue(self._queue, self._body)

    def _send_reply(self, reply: Any, failure: BaseException | None, ending: bool) -> None:
        if self.msg_id is None or self._reply_q is None:
            return
        data = {"msg_id": self.msg_id, "result": reply, "ending": ending,
                "failure": serialize_remote_exception(failure) if failure is not None else None}
        if not self._listener.broker.reply(self._reply_q, self._listener.codec.encode(data)):
            # The caller is gone (timed out or cleaned up), as with a mandatory
            # publish to a deleted reply queue.
            raise MessageUndeliverable(None, "", self._reply_q, None)

    def reply(self, reply: Any = None, failure: BaseException | None = None) -> None:
        if self._replied:
            return
        self._replied = True
        self._send_reply(reply, failure, ending=True)

    def heartbeat(self) -> None:
        if not self._replied:
            self._send_reply(None, None, ending=False)


class MemoryListener(Listener):
    """Consumes the queues of one server target."""

    def __init__(self, driver: MemoryDriver, queues: list[str], owned: list[str]) -> None:
        self.driver = driver
        self.broker = driver.broker
        self.codec = driver.codec
        self._queues = queues
        self._owned = owned
        self._stopped = False
        self._next = 0

    def _take(self, batch_size: int) -> list[tuple[str, bytes]]:
        taken: list[tuple[str, bytes]] = []
        count = len(self._queues)
        # Start at a rotating queue so a busy queue cannot starve the others.
        for i in range(count):
            name = self._queues[(self._next + i) % count]
            queue = self.broker.queues.get(name)
            while queue is not None and queue.messages and len(taken) < batch_size:
                taken.append((name, queue.messages.popleft()))
            if len(taken) >= batch_size:
                break
        self._next = (self._next + 1) % max(count, 1)
        return taken

    def poll(self, timeout: float | None = None, batch_size: int = 1) -> list[IncomingMessage]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.broker.cond:
            while True:
                if self._stopped:
                    return []
                taken = self._take(max(1, batch_size))
                if taken:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self.broker.cond.wait(remaining)
        result: list[IncomingMessage] = []
        for name, body in taken:
            try:
                payload = self.codec.decode(body)
            except ValueError:
                LOG.error("Dropping undecodable message from queue %s", name)
                continue
            result.append(MemoryIncomingMessage(self, name, body, payload))
        return result

    def stop(self) -> None:
        with self.broker.cond:
            self._stopped = True
            self.broker.cond.notify_all()

    def cleanup(self) -> None:
        self.stop()
        for name in self._owned:
            self.broker.delete(name)
        self._owned = []
        self.driver._forget(self)


class _Waiter:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.replies: deque[dict] = deque()


class MemoryDriver(BaseDriver):
    """In-process transport selected by ``memory://``."""

    def __init__(self, conf: Options, url: TransportURL, default_exchange: str = "openstack",
                 allowed_remote_exmods: list[str] | None = None) -> None:
        super().__init__(Options.coerce(conf), url, default_exchange, allowed_remote_exmods or [])
        self.codec = _Codec(self.conf.serialization)
        self.broker = _attach(url)
        self._lock = threading.Lock()
        self._closed = False
        self._listeners: list[MemoryListener] = []
        self._waiters: dict[str, _Waiter] = {}
        self._reply_q = f"reply_{uuid.uuid4().hex}"
        with self.broker.cond:
            self.broker.reply_handlers[self._reply_q] = self._on_reply

    def _exchange(self, target: Target) -> str:
        return target.exchange or self.default_exchange

    def _on_reply(self, body: bytes) -> None:
        try:
            data = self.codec.decode(body)
        except ValueError:
            LOG.error("Dropping undecodable reply")
            return
        with self._lock:
            waiter = self._waiters.get(data.get("msg_id"))
        if waiter is None:
            LOG.debug("Dropping reply for a call nobody waits for")
            return
        with waiter.cond:
            waiter.replies.append(data)
            waiter.cond.notify_all()

    def send(self, target: Target, ctxt: dict, message: dict, wait_for_reply: bool = False,
             timeout: float | None = None, call_monitor_timeout: float | None = None,
             retry: int | None = None, at_least_once: bool = False) -> Any:
        if self._closed:
            raise MessageDeliveryFailure("transport was cleaned up")
        if not target.topic:
            raise InvalidTarget("A topic is required to send", target)
        if target.fanout and wait_for_reply:
            raise InvalidTarget("A call cannot be used with fanout", target)
        payload: dict[str, Any] = {"ctxt": dict(ctxt or {}), "message": message}
        waiter = None
        msg_id = None
        if wait_for_reply:
            msg_id = uuid.uuid4().hex
            payload.update(msg_id=msg_id, reply_q=self._reply_q, timeout=call_monitor_timeout)
            waiter = _Waiter()
            with self._lock:
                self._waiters[msg_id] = waiter
        try:
            body = self.codec.encode(payload)
            if target.fanout:
                exchange, routing_key = f"{target.topic}_fanout", ""
            else:
                exchange = self._exchange(target)
                routing_key = f"{target.topic}.{target.server}" if target.server else target.topic
            if not self.broker.publish(exchange, routing_key, body, fanout=bool(target.fanout)) and at_least_once:
                raise MessageUndeliverable(None, exchange, routing_key, message)
            if waiter is None:
                return None
            assert msg_id is not None
            return self._wait(waiter, timeout, call_monitor_timeout)
        finally:
            if msg_id is not None:
                with self._lock:
                    self._waiters.pop(msg_id, None)

    def _wait(self, waiter: _Waiter, timeout: float | None, call_monitor_timeout: float | None) -> Any:
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        # Without keepalives for call_monitor_timeout seconds the server is presumed dead.
        silence_deadline = None if not call_monitor_timeout else now + call_monitor_timeout
        with waiter.cond:
            while True:
                while waiter.replies:
                    data = waiter.replies.popleft()
                    if data.get("ending"):
                        failure = data.get("failure")
                        if failure:
                            raise deserialize_remote_exception(failure, self.allowed_remote_exmods)
                        return data.get("result")
                    if call_monitor_timeout:
                        silence_deadline = time.monotonic() + call_monitor_timeout
                if self._closed:
                    raise MessageDeliveryFailure("transport was cleaned up while waiting for a reply")
                limits = [d for d in (deadline, silence_deadline) if d is not None]
                remaining = None if not limits else min(limits) - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise MessagingTimeout(f"Timed out waiting for a reply after {timeout}s")
                    raise MessagingTimeout(f"No heartbeat from the server for {call_monitor_timeout}s "
                                           "(call_monitor_timeout): presumed dead")
                waiter.cond.wait(remaining)

    def listen(self, target: Target, batch_size: int = 1, batch_timeout: float | None = None) -> Listener:
        if not (target.topic and target.server):
            raise InvalidTarget("A server's target must have topic and server names specified", target)
        exchange = self._exchange(target)
        topic, server = target.topic, f"{target.topic}.{target.server}"
        fanout_q = f"{target.topic}_fanout_{uuid.uuid4().hex}"
        self.broker.declare(topic, exchange, topic)
        self.broker.declare(server, exchange, server)
        self.broker.declare(fanout_q, f"{target.topic}_fanout", fanout_q, auto_delete=True)
        listener = MemoryListener(self, [topic, server, fanout_q], owned=[fanout_q])
        with self._lock:
            self._listeners.append(listener)
        return listener

    def send_notification(self, target: Target, ctxt: dict, message: dict, version: float,
                          retry: int | None = None) -> None:
        """Into the queue ``target.topic`` (``<topic>.<priority>``), declared
        first as the AMQP driver does, so it waits there for its listener."""
        if self._closed:
            raise MessageDeliveryFailure("transport was cleaned up")
        try:
            body = self.codec.encode({"ctxt": dict(ctxt or {}), "message": message})
        except (TypeError, ValueError, OverflowError) as exc:
            raise encode_failed(exc) from None
        exchange, routing_key = self._exchange(target), str(target.topic)
        self.broker.declare(routing_key, exchange, routing_key)
        self.broker.publish(exchange, routing_key, body)

    def listen_for_notifications(self, targets_and_priorities: Iterable[tuple[Target, str]], pool: str | None,
                                 batch_size: int = 1, batch_timeout: float | None = None) -> Listener:
        """The queues ``<topic>.<priority>``, or the one named ``pool`` bound for them all."""
        queues: list[str] = []
        for target, priority in targets_and_priorities:
            routing_key = f"{target.topic}.{priority}"
            name = pool or routing_key
            self.broker.declare(name, self._exchange(target), routing_key)
            if name not in queues:
                queues.append(name)
        listener = MemoryListener(self, queues, owned=[])
        with self._lock:
            self._listeners.append(listener)
        return listener

    def _forget(self, listener: MemoryListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def cleanup(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listeners = list(self._listeners)
            waiters = list(self._waiters.values())
        for listener in listeners:
            listener.cleanup()
        with self.broker.cond:
            self.broker.reply_handlers.pop(self._reply_q, None)
        for waiter in waiters:
            with waiter.cond:
                waiter.cond.notify_all()
        _detach(self.broker)
