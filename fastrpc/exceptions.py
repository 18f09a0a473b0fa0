"""Exception hierarchy, with oslo.messaging's names and constructor signatures."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from fastrpc.redact import mask_url

__all__ = [
    "MessagingException", "MessagingTimeout", "MessageDeliveryFailure", "InvalidTarget",
    "MessageUndeliverable", "ConfigurationError", "RemoteError", "RPCVersionCapError",
    "ClientSendError", "MessagingServerError", "ExecutorLoadFailure", "ServerListenError",
    "TaskTimeout", "RPCDispatcherError", "NoSuchMethod", "UnsupportedVersion",
    "ExpectedException", "InvalidTransportURL", "DriverLoadFailure", "TransportDriverError",
    "BrokerError", "AuthenticationError", "VirtualHostRefused", "BrokerRefused", "DeclarationRefused",
    "CallInterrupted", "MetricsExporterError", "NotificationPayloadError",
]


class MessagingException(Exception):
    """Base class for fastrpc's exceptions."""


class MessagingTimeout(MessagingException):
    """A call got no reply in time."""


class MessageDeliveryFailure(MessagingException):
    """The transport could not deliver a message within the allowed retries."""


class CallInterrupted(MessageDeliveryFailure):
    """The connection a call was sent on died before its reply came: the
    request may or may not have run (pass ``at_least_once`` to have it
    published again instead, for handlers that tolerate a second run)."""


class TransportDriverError(MessagingException):
    """A driver failed to send or listen."""


class InvalidTarget(MessagingException, ValueError):
    """A target does not meet the preconditions of the operation."""

    def __init__(self, msg: str, target: Any) -> None:
        super().__init__(msg + ":" + str(target))
        self.target = target


class MessageUndeliverable(Exception):
    """A mandatory message could not be routed to any queue."""

    def __init__(self, exception: BaseException | None, exchange: str, routing_key: str,
                 message: Any) -> None:
        super().__init__()
        self.exception = exception
        self.exchange = exchange
        self.routing_key = routing_key
        self.message = message


class ConfigurationError(Exception):
    """Messaging is not configured correctly."""


class RemoteError(MessagingException):
    """A remote endpoint raised an exception that could not be rebuilt locally.

    ``exc_type`` is the remote class name, ``value`` its message and
    ``traceback`` the remote traceback text.
    """

    def __init__(self, exc_type: str | None = None, value: str | None = None,
                 traceback: Any = None) -> None:
        self.exc_type = exc_type
        self.value = value
        self.traceback = traceback
        super().__init__(f"Remote error: {exc_type} {value}\n{traceback}.")


class RPCVersionCapError(MessagingException):
    """The requested message version exceeds the client's version cap."""

    def __init__(self, version: str | None, version_cap: str | None) -> None:
        self.version = version
        self.version_cap = version_cap
        super().__init__(
            f"Requested message version, {version} is incompatible.  It needs to be equal in "
            f"major version and less than or equal in minor version as the specified version "
            f"cap {version_cap}.")


class ClientSendError(MessagingException):
    """The client failed to send a message to a target."""

    def __init__(self, target: Any, ex: BaseException) -> None:
        super().__init__(f'Failed to send to target "{target}": {ex}')
        self.target = target
        self.ex = ex


class MessagingServerError(MessagingException):
    """Base class for server errors."""


class ExecutorLoadFailure(MessagingServerError):
    """The requested executor does not exist."""

    def __init__(self, executor: str, ex: Any) -> None:
        super().__init__(f'Failed to load executor "{executor}": {ex}')
        self.executor = executor
        self.ex = ex


class ServerListenError(MessagingServerError):
    """The server could not start listening on its target."""

    def __init__(self, target: Any, ex: BaseException) -> None:
        super().__init__(f'Failed to listen on target "{target}": {ex}')
        self.target = target
        self.ex = ex


class TaskTimeout(MessagingServerError):
    """A server operation waited longer than allowed."""


class RPCDispatcherError(MessagingServerError):
    """Base class for dispatcher errors."""


class NoSuchMethod(RPCDispatcherError, AttributeError):
    """No compatible endpoint exposes the requested method."""

    def __init__(self, method: str) -> None:
        super().__init__(f"Endpoint does not support RPC method {method}")
        self.method = method


class UnsupportedVersion(RPCDispatcherError):
    """No endpoint implements the requested namespace and version."""

    def __init__(self, version: str | None, method: str | None = None) -> None:
        msg = f"Endpoint does not support RPC version {version}"
        if method:
            msg = f"{msg}. Attempted method: {method}"
        super().__init__(msg)
        self.version = version
        self.method = method


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ExpectedException(Exception):
    """Wraps an exception an endpoint declared as expected.

    Created inside an ``except`` block, it records the exception being handled;
    the server replies with that exception and does not log it as an error.
    """

    def __init__(self) -> None:
        super().__init__()
        self.exc_info = sys.exc_info()


class InvalidTransportURL(MessagingException):
    """A transport URL could not be parsed."""

    def __init__(self, url: Any, msg: str) -> None:
        super().__init__(msg)
        # The URL may carry a password: keep only a masked form.
        self.url = mask_url(url) if isinstance(url, str) else None


class DriverLoadFailure(MessagingException):
    """No driver could be loaded for a transport scheme."""

    def __init__(self, driver: str, ex: BaseException) -> None:
        super().__init__(f'Failed to load transport driver "{driver}": {ex}')
        self.driver = driver
        self.ex = ex


class BrokerError(TransportDriverError):
    """The broker refused an operation or the login, or failed otherwise in
    a way no retry can cure (a broker that cannot be reached is a
    MessageDeliveryFailure, or a MessagingTimeout for a call).

    ``reply_code`` and ``reply_text`` are the broker's own (AMQP reply codes:
    403 access refused, 404 not found, 406 precondition failed, ...), 0 and
    ``""`` when it gave none. Raised by the driver for what the connection
    layer reports, so callers branch on a class, not on text.
    """

    def __init__(self, msg: str, reply_code: int = 0, reply_text: str = "") -> None:
        super().__init__(msg)
        self.reply_code = reply_code
        self.reply_text = reply_text


class AuthenticationError(BrokerError):
    """The broker refused the user name or password (or the login mechanism)."""


class VirtualHostRefused(BrokerError):
    """The virtual host does not exist, or the user may not use it."""


class BrokerRefused(BrokerError):
    """The broker refused an operation on a channel (the reply code says why)."""


class DeclarationRefused(BrokerRefused):
    """The broker refused to declare or bind a queue or an exchange, most
    often (406 PRECONDITION_FAILED) because it exists with other arguments
    than those declared: the reply text names the argument that differs.

    ``kind`` is ``"queue"`` or ``"exchange"`` and ``name`` its name, when the
    broker's text says so (else ``None``).
    """

    def __init__(self, msg: str, reply_code: int = 0, reply_text: str = "", kind: str | None = None,
                 name: str | None = None) -> None:
        super().__init__(msg, reply_code, reply_text)
        self.kind = kind
        self.name = name


class NotificationPayloadError(MessagingException, ValueError):
    """A notification was not sent: its payload or context cannot be
    encoded as JSON, or makes it larger than ``max_message_size``. Raised by
    the Notifier's priority methods before anything is published, as no retry
    could send it. ``event_type`` is the notification's, ``reason`` says why."""

    def __init__(self, event_type: str | None, reason: str) -> None:
        super().__init__(f"notification {event_type!r} not sent: {reason}")
        self.event_type = event_type
        self.reason = reason


class MetricsExporterError(ConfigurationError):
    """The metrics exporter cannot listen on ``host``:``port`` (``reason``:
    most often, another process has the port)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot serve metrics on {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason
