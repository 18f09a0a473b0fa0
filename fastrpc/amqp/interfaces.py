"""What a channel, and the heartbeat timer, need of their connection, declared on its own.

A Channel is written against :class:`ChannelHost`, not against Connection:
the channel module then imports nothing of the connection module (which
creates channels and so imports it), and the connection's internals stay its
own. ``fastrpc.amqp.connection.Connection`` is the one implementation. (The
compiled build of the channel modules declares the connection's type as
``ConnectionCore``, Connection's base, which holds the per-send methods
``writer``, ``take`` and ``send_locked``: a channel calls them directly in C.)
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from fastrpc.amqp.url import ConnectionParams

__all__ = ["ChannelHost", "HeartbeatHost"]


class ChannelHost(Protocol):
    """The connection as its channels see it.

    Frames of a channel go out in one step with the checks that allow them:
    under :attr:`send_lock`, the channel looks at its own state and hands the
    bytes to :meth:`send_locked`, so nothing follows a channel.close and no
    frame reaches a channel id after it was given back.
    """

    @property
    def params(self) -> ConnectionParams: ...

    @property
    def blocked(self) -> bool:
        """Whether the broker blocks publishing (connection.blocked)."""

    @property
    def blocked_reason(self) -> str: ...

    # Held while a channel checks its state and queues frames (send_locked).
    send_lock: threading.Lock

    def writer(self) -> Any:
        """A FrameWriter for the calling thread alone until :meth:`take` gives it back."""

    def take(self, writer: Any) -> bytes:
        """The frames ``writer`` holds; the writer goes back to the connection."""

    def send_locked(self, data: bytes) -> BaseException | None:
        """Send ``data`` (``send_lock`` held); the error is returned, not raised.

        The lock may be let go and taken again inside: nothing checked under
        it may be relied on after the call.
        """

    def send_failed(self, err: BaseException) -> None:
        """Tell the connection a send of a channel failed with ``err``."""

    def stream_position(self) -> int:
        """Bytes sent so far (``send_lock`` held): where frames queued now start, at the earliest."""

    def check_open(self) -> None:
        """Raise why the connection cannot be used, if it cannot."""

    def in_reader_thread(self) -> bool:
        """Whether the calling thread runs this connection's callbacks."""

    def need_reader(self) -> None:
        """Make sure somebody reads soon (a reply or confirm is awaited)."""

    def wait_unblocked(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until the broker lifts connection.blocked."""

    def release_channel(self, channel: Any) -> None:
        """Give ``channel``'s id back (the broker confirmed its close)."""


class HeartbeatHost(Protocol):
    """The connection as its heartbeat timer (``fastrpc.amqp.heartbeat``) sees it."""

    @property
    def params(self) -> ConnectionParams: ...

    @property
    def heartbeat(self) -> int:
        """The negotiated interval in seconds."""

    @property
    def frame_max(self) -> int: ...

    send_lock: threading.Lock  # held by whoever queues frames; the timer only ever tries it

    @property
    def ended(self) -> threading.Event:
        """Set once the connection is dead (closed or failed)."""

    @property
    def recv_since(self) -> float | None:
        """Monotonic time since when the reading thread waits in recv (None: nobody does)."""

    @property
    def writing(self) -> bool:
        """Whether a thread is writing queued frames now."""

    @property
    def blocked(self) -> bool:
        """Whether the broker blocks this connection's publishers now."""

    def busy(self) -> bool:
        """Whether anything waits on the broker (a reply, a confirm, a consumer)."""

    def probe_frames(self) -> bytes:
        """The frames of one liveness probe, to be written as they are."""

    def fail(self, exc: BaseException) -> None:
        """End the connection with ``exc`` (once; later calls do nothing)."""
