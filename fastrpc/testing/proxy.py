"""A fault-injecting TCP proxy on loopback, for tests of what clients do when the network misbehaves.

One thread runs a selector loop over the listening socket and every proxied
connection; other threads only post commands to it. Per connection, or for all
of them: :meth:`~ProxyConnection.blackhole` (nothing forwarded either way, the
sockets stay open: a silent peer), :meth:`~ProxyConnection.delay` (each chunk
held back that many seconds), :meth:`~ProxyConnection.reset` (both sides get a
TCP RST) and :meth:`~ProxyConnection.resume`. Memory is bounded: a direction
stops reading while it holds ``max_buffer`` bytes not yet forwarded.
"""

from __future__ import annotations

import collections
import errno
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .ports import LOOPBACK

_T = TypeVar("_T")
_CHUNK = 65536
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ProxyError(RuntimeError):
    """The proxy is closed or did not answer a command in time."""


class _Pipe:
    """One direction of a connection: bytes read from ``src``, waiting for ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.size = 0
        self.eof = False

    def due(self, now: float) -> bool:
        return bool(self.pending) and self.pending[0][0] <= now


class ProxyConnection:
    """One client connection through the proxy and its fault settings."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket, peer: tuple[Any, ...]) -> None:
        self._proxy = proxy
        self.client_address: tuple[Any, ...] = peer
        self._client = client
        self._upstream = upstream
        self._up = _Pipe(client, upstream)
        self._down = _Pipe(upstream, client)
        self.connected = False  # upstream connect completed
        self.blackholed = False
        self.delay_seconds = 0.0
        self.closed = False
        self.bytes_up = 0
        self.bytes_down = 0

    def blackhole(self) -> None:
        """Stop forwarding in both directions; keep both sockets open."""
        self._proxy._call(lambda: setattr(self, "blackholed", True))

    def delay(self, seconds: float) -> None:
        """Hold every chunk read from now on for ``seconds`` before forwarding it."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._proxy._call(lambda: setattr(self, "delay_seconds", float(seconds)))

    def resume(self) -> None:
        """Forward normally again (no blackhole, no delay)."""

        def undo() -> None:
            self.blackholed = False
            self.delay_seconds = 0.0

        self._proxy._call(undo)

    def reset(self) -> None:
        """Close both sides with a TCP RST (SO_LINGER 0)."""
        self._proxy._call(lambda: self._proxy._close_conn(self, reset=True))

    def __repr__(self) -> str:
        state = "closed" if self.closed else "blackholed" if self.blackholed else "open"
        return f"ProxyConnection({self.client_address}, {state}, delay={self.delay_seconds})"


class TcpProxy:
    """Forward connections from a free loopback port to ``target_host:target_port``.

    ``port`` is where clients connect (``address`` as a tuple). Faults applied to
    the whole proxy (:meth:`blackhole`, :meth:`delay`) also apply to connections
    accepted later; :meth:`reset` resets the current connections only.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 64,
        max_buffer: int = 4 * 1024 * 1024,
        command_timeout: float = 10.0,
    ) -> None:
        if target_host not in _LOOPBACK_HOSTS and not target_host.startswith("127."):
            raise ValueError(f"TcpProxy forwards to loopback only, not {target_host!r}")
        self.target: tuple[str, int] = (target_host, target_port)
        self.max_connections = max_connections
        self.max_buffer = max_buffer
        self.command_timeout = command_timeout
        self._blackholed = False
        self._delay = 0.0
        self._conns: list[ProxyConnection] = []
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._listener = socket.create_server((LOOPBACK, 0), backlog=max_connections)
        self._listener.setblocking(False)
        self.host: str = LOOPBACK
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"TcpProxy:{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def connections(self) -> list[ProxyConnection]:
        """The connections currently open through the proxy."""
        return self._call(lambda: [c for c in self._conns if not c.closed])

    def wait_connections(self, count: int, timeout: float = 10.0) -> list[ProxyConnection]:
        """Wait until at least ``count`` connections are open; return them."""
        deadline = time.monotonic() + timeout
        while True:
            conns = self.connections
            if len(conns) >= count:
                return conns
            if time.monotonic() >= deadline:
                raise ProxyError(f"{len(conns)} of {count} connections through port {self.port} after {timeout} s")
            time.sleep(0.02)

    # -- faults for every connection -------------------------------------

    def blackhole(self) -> None:
        """Silence every connection, current and future (see ProxyConnection.blackhole)."""

        def apply() -> None:
            self._blackholed = True
            for c in self._conns:
                c.blackholed = True

        self._call(apply)

    def delay(self, seconds: float) -> None:
        """Delay every connection, current and future, by ``seconds``."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")

        def apply() -> None:
            self._delay = float(seconds)
            for c in self._conns:
                c.delay_seconds = float(seconds)

        self._call(apply)

    def resume(self) -> None:
        """Forward normally on every connection, current and future."""

        def apply() -> None:
            self._blackholed = False
            self._delay = 0.0
            for c in self._conns:
                c.blackholed = False
                c.delay_seconds = 0.0

        self._call(apply)

    def reset(self) -> None:
        """Reset (RST) every current connection; new connections are still accepted."""

        def apply() -> None:
            for c in list(self._conns):
                self._close_conn(c, reset=True)

        self._call(apply)

    def close(self) -> None:
        """Close the listener and every connection (with RST), and end the loop thread."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown)
        except ProxyError:
            pass
        self._thread.join(self.command_timeout)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TcpProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]})"

    # -- loop thread -----------------------------------------------------

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in the loop thread and return its result."""
        if threading.current_thread() is self._thread:
            return fn()
        if not self._thread.is_alive():
            raise ProxyError("the proxy is closed")
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._commands.put((fn, reply))
        try:
            self._wake_w.send(b"x")
        except OSError as exc:
            raise ProxyError("the proxy is closed") from exc
        try:
            ok, value = reply.get(timeout=self.command_timeout)
        except queue.Empty:
            raise ProxyError(f"the proxy loop did not answer within {self.command_timeout} s") from None
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _shutdown(self) -> None:
        for c in list(self._conns):
            self._close_conn(c, reset=True)
        self._closing = True

    def _run(self) -> None:
        try:
            while not self._closing:
                self._update_interest()
                for key, mask in self._selector.select(self._next_timeout()):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_commands()
                    else:
                        self._on_event(key.fileobj, key.data, mask)  # type: ignore[arg-type]
                self._flush_due()
        finally:
            for c in list(self._conns):
                self._close_conn(c, reset=True)
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            self._selector.close()
            self._drain_commands(closed=True)

    def _drain_commands(self, closed: bool = False) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        while True:
            try:
                fn, reply = self._commands.get_nowait()
            except queue.Empty:
                return
            if closed:
                reply.put((False, ProxyError("the proxy is closed")))
                continue
            try:
                reply.put((True, fn()))
            except Exception as exc:  # handed to the caller
                reply.put((False, exc))

    def _accept(self) -> None:
        try:
            client, peer = self._listener.accept()
        except OSError:
            return
        if len([c for c in self._conns if not c.closed]) >= self.max_connections:
            client.close()
            return
        client.setblocking(False)
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        conn = ProxyConnection(self, client, upstream, peer)
        conn.blackholed = self._blackholed
        conn.delay_seconds = self._delay
        self._conns.append(conn)
        code = upstream.connect_ex(self.target)
        if code not in (0, errno.EINPROGRESS):
            self._close_conn(conn, reset=True)
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The loop registers both sockets (upstream for the connect to finish).

    def _update_interest(self) -> None:
        now = time.monotonic()
        for conn in self._conns:
            if conn.closed:
                continue
            for sock in (conn._client, conn._upstream):
                events = 0
                if not conn.connected:
                    events = selectors.EVENT_WRITE if sock is conn._upstream else 0
                else:
                    pipe_in = conn._up if sock is conn._client else conn._down
                    pipe_out = conn._down if sock is conn._client else conn._up
                    if not conn.blackholed and not pipe_in.eof and pipe_in.size < self.max_buffer:
                        events |= selectors.EVENT_READ
                    if not conn.blackholed and pipe_out.due(now):
                        events |= selectors.EVENT_WRITE
                self._set_events(sock, events, conn)

    def _set_events(self, sock: socket.socket, events: int, conn: ProxyConnection) -> None:
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, conn)
            return
        if events == 0:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, conn)

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        soonest: float | None = None
        for conn in self._conns:
            if conn.closed or conn.blackholed:
                continue
            for pipe in (conn._up, conn._down):
                if pipe.pending:
                    at = pipe.pending[0][0]
                    soonest = at if soonest is None else min(soonest, at)
        # A periodic wake-up keeps a lost wake byte from stalling the loop.
        return 1.0 if soonest is None else max(0.0, min(soonest - now, 1.0))

    def _on_event(self, sock: socket.socket, conn: ProxyConnection, mask: int) -> None:
        if conn.closed:
            return
        if not conn.connected:
            if sock is conn._upstream and mask & selectors.EVENT_WRITE:
                if conn._upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self._close_conn(conn, reset=True)  # the client sees the refusal as a reset
                else:
                    conn.connected = True
            return
        if mask & selectors.EVENT_READ:
            pipe = conn._up if sock is conn._client else conn._down
            try:
                data = sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close_conn(conn, reset=True)
                return
            if data == b"":
                pipe.eof = True
            elif data:
                pipe.pending.append((time.monotonic() + conn.delay_seconds, data))
                pipe.size += len(data)
        if mask & selectors.EVENT_WRITE:
            self._flush(conn, conn._down if sock is conn._client else conn._up)

    def _flush_due(self) -> None:
        for conn in list(self._conns):
            if conn.closed:
                continue
            if not conn.blackholed and conn.connected:
                for pipe in (conn._up, conn._down):
                    self._flush(conn, pipe)
            if conn.closed:
                continue
            # One side ended and everything it sent was delivered: end the other.
            if any(p.eof and not p.pending for p in (conn._up, conn._down)) and not conn.blackholed:
                self._close_conn(conn, reset=False)
        self._conns = [c for c in self._conns if not c.closed]

    def _flush(self, conn: ProxyConnection, pipe: _Pipe) -> None:
        now = time.monotonic()
        while not conn.closed and pipe.due(now):
            due, data = pipe.pending[0]
            try:
                sent = pipe.dst.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close_conn(conn, reset=True)
                return
            pipe.size -= sent
            if pipe is conn._up:
                conn.bytes_up += sent
            else:
                conn.bytes_down += sent
            if sent < len(data):
                pipe.pending[0] = (due, data[sent:])
                return
            pipe.pending.popleft()

    def _close_conn(self, conn: ProxyConnection, *, reset: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in (conn._client, conn._upstream):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            if reset:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            sock.close()
