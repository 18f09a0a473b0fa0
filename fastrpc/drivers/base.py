"""Driver interface: what the RPC layer needs from a message transport.

A driver moves requests and replies; it knows nothing of endpoints, versions or
serializers. The RPC client calls ``send``; the RPC server pulls
``IncomingMessage`` objects from a ``Listener`` and answers through them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fastrpc.options import Options
    from fastrpc.target import Target
    from fastrpc.transport_url import TransportURL


class IncomingMessage(ABC):
    """One received request.

    ``ctxt`` is the request context already rebuilt from the ``_context_*`` keys;
    ``message`` is ``{'method': str, 'args': dict, 'namespace'?: str, 'version'?: str}``;
    ``msg_id`` is set when the sender waits for a reply (a call), else None.
    ``client_timeout`` is the caller's call-monitor timeout (the ``_timeout``
    key of a call), or None: the server sends ``heartbeat()`` every half of it
    while the call runs.
    """

    ctxt: dict
    message: dict
    msg_id: str | None
    client_timeout: float | None = None
    # True where acknowledge() is a no-op because the listener settles the
    # message itself (when a poller takes it, or after an inline run): the
    # server then skips the call.
    settled_by_listener = False

    def __init__(self, ctxt: dict, message: dict, msg_id: str | None = None) -> None:
        self.ctxt = ctxt
        self.message = message
        self.msg_id = msg_id

    @abstractmethod
    def acknowledge(self) -> None:
        """Tell the transport the message was taken (it will not be redelivered)."""

    @abstractmethod
    def requeue(self) -> None:
        """Give the message back to the transport for another consumer."""

    @abstractmethod
    def reply(self, reply: Any = None, failure: BaseException | None = None) -> None:
        """Send the final answer of a call; a no-op for casts.

        ``failure`` is serialized with :mod:`fastrpc.failures`.
        """

    @abstractmethod
    def heartbeat(self) -> None:
        """Tell a waiting caller the call is still running; a no-op for casts."""


class Listener(ABC):
    """A stream of requests for one target."""

    @abstractmethod
    def poll(self, timeout: float | None = None, batch_size: int = 1) -> list[IncomingMessage]:
        """Return up to ``batch_size`` messages; ``[]`` on timeout or once stopped."""

    @abstractmethod
    def stop(self) -> None:
        """Stop taking new messages; a blocked ``poll`` returns ``[]`` soon after."""

    @abstractmethod
    def cleanup(self) -> None:
        """Release the listener's resources (consumers, queues it owns)."""


class BaseDriver(ABC):
    """A transport implementation selected by the URL scheme."""

    def __init__(self, conf: Options, url: TransportURL, default_exchange: str,
                 allowed_remote_exmods: list[str]) -> None:
        self.conf = conf
        self.url = url
        self.default_exchange = default_exchange
        self.allowed_remote_exmods = list(allowed_remote_exmods)

    @abstractmethod
    def send(self, target: Target, ctxt: dict, message: dict, wait_for_reply: bool = False,
             timeout: float | None = None, call_monitor_timeout: float | None = None,
             retry: int | None = None, at_least_once: bool = False) -> Any:
        """Cast (or fanout when ``target.fanout``) unless ``wait_for_reply``.

        For calls, return the result or raise ``MessagingTimeout`` or the rebuilt
        remote exception. ``at_least_once``: raise ``MessageUndeliverable``
        when no queue takes the message, instead of losing it.
        """

    @abstractmethod
    def listen(self, target: Target, batch_size: int = 1,
               batch_timeout: float | None = None) -> Listener:
        """Start consuming requests for ``target`` (topic, topic.server, fanout)."""

    def send_notification(self, target: Target, ctxt: dict, message: dict, version: float,
                          retry: int | None = None) -> None:
        """Publish a notification to ``target.topic`` (``<topic>.<priority>``):
        version 2.0 enveloped, 1.0 bare. An EnvelopeError when it cannot be
        encoded or is too large (nothing sent)."""
        raise NotImplementedError(f"the {self.url.transport} transport does not carry notifications")

    def listen_for_notifications(self, targets_and_priorities: Iterable[tuple[Target, str]], pool: str | None,
                                 batch_size: int = 1, batch_timeout: float | None = None) -> Listener:
        """Consume the notification queues of ``(target, priority)`` pairs
        (one queue named ``pool`` for them all when given); its messages are
        settled by the caller once processed."""
        raise NotImplementedError(f"the {self.url.transport} transport does not carry notifications")

    @abstractmethod
    def cleanup(self) -> None:
        """Close every connection and thread the driver owns."""

    def health(self) -> list[dict[str, Any]]:
        """Per connection: its name, ``state`` (``new``, ``connected`` or
        ``reconnecting``), host, since when, attempt and last error. Drivers
        without connections report none."""
        return []
