"""Errors of the AMQP connection layer.

Messages name the broker by host:port only; credentials never appear.
Every exception pickles (``__reduce__``) so it can cross process boundaries,
and so :func:`fresh_error` can copy it.
"""

from __future__ import annotations

import errno
from typing import Any


class AMQPError(Exception):
    """Base class of every error raised by fastrpc.amqp."""


class ConnectionRefused(AMQPError):
    """The broker's host:port could not be reached (TCP connect failed)."""


class TLSError(AMQPError):
    """TLS negotiation failed (certificate verification, hostname, protocol)."""


class HandshakeTimeout(AMQPError, TimeoutError):
    """The broker accepted TCP but did not complete the AMQP handshake in time."""


class LoginRefused(AMQPError):
    """The broker said no while the connection opened; ``reply_code`` and
    ``reply_text`` are its connection.close (0 and "" when it just hung up)."""

    def __init__(self, message: str, reply_code: int = 0, reply_text: str = "") -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.reply_text = reply_text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.reply_code, self.reply_text))


class AuthenticationFailed(LoginRefused):
    """The broker refused the credentials (ACCESS_REFUSED during login)."""


class VirtualHostError(LoginRefused):
    """The virtual host does not exist or the user may not use it."""


class _Closed(AMQPError):
    """Shared shape of broker close reasons."""

    what = "closed"

    def __init__(self, reply_code: int = 0, reply_text: str = "", class_id: int = 0, method_id: int = 0) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id
        super().__init__(reply_code, reply_text)

    def __str__(self) -> str:
        text = f"{self.what}: {self.reply_code} {self.reply_text}".rstrip()
        if self.class_id or self.method_id:
            text += f" (method {self.class_id}.{self.method_id})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reply_code, self.reply_text, self.class_id, self.method_id))


class ConnectionClosed(_Closed):
    """The connection was closed with connection.close (by broker or client)."""

    what = "connection closed"


class ConnectionLost(AMQPError):
    """The socket died or the stream became unreadable (no close handshake)."""


# errno of a send or receive that means the peer's TCP reset the connection.
PEER_ENDED_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})


def peer_ended(exc: ConnectionLost) -> ConnectionLost:
    """Mark ``exc`` as a loss the broker's side reported (it reset or closed
    the connection), as opposed to one fastrpc decided (a silent peer): only
    then does what its TCP acknowledged tell what it received."""
    exc.peer_ended = True  # type: ignore[attr-defined]
    return exc


def peer_ended_if_reset(exc: ConnectionLost, cause: BaseException) -> ConnectionLost:
    """``exc``, marked :func:`peer_ended` when ``cause`` (the failed send or
    receive) is an OSError whose errno means the peer reset the connection."""
    if isinstance(cause, OSError) and cause.errno in PEER_ENDED_ERRNOS:
        peer_ended(exc)
    return exc


class HeartbeatTimeout(ConnectionLost):
    """The broker was silent for the negotiated heartbeat timeout (two of its
    heartbeats missed), or a send made no progress for as long."""


class ProbeTimeout(HeartbeatTimeout):
    """The broker did not answer a liveness probe in time while something waited on it."""


class ChannelClosed(_Closed):
    """The channel was closed (channel.close from the broker, or by the client)."""

    what = "channel closed"


class ChannelsExhausted(AMQPError):
    """Every channel id up to the negotiated channel_max is in use."""


class OperationTimeout(AMQPError, TimeoutError):
    """A synchronous method got no reply within its timeout."""


class PublishNacked(AMQPError):
    """The broker answered a confirmed publish with basic.nack."""


class MessageReturned(AMQPError):
    """A mandatory publish could not be routed and came back (basic.return)."""

    def __init__(
        self,
        reply_code: int = 0,
        reply_text: str = "",
        exchange: str = "",
        routing_key: str = "",
        properties: dict[str, Any] | None = None,
        body: bytes = b"",
    ) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties if properties is not None else {}
        self.body = body
        super().__init__(reply_code, reply_text, exchange, routing_key)

    def __str__(self) -> str:
        return (
            f"message returned: {self.reply_code} {self.reply_text} "
            f"(exchange={self.exchange!r}, routing_key={self.routing_key!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.reply_code, self.reply_text, self.exchange, self.routing_key, self.properties, self.body),
        )


class PublishBlocked(AMQPError):
    """The broker blocked publishing (connection.blocked) for longer than allowed."""


class ConsumerCancelled(AMQPError):
    """The broker cancelled a consumer (for example, its queue was deleted)."""


def fresh_error(exc: BaseException) -> BaseException:
    """A new instance equal to ``exc``, so one failure can be raised in many
    threads without them sharing (and rewriting) one traceback."""
    try:
        reduced: Any = exc.__reduce__()
        new = reduced[0](*reduced[1])
    except Exception:
        return exc
    if isinstance(new, BaseException):
        new.__cause__ = exc.__cause__
        return new
    return exc
