"""Socket calls of the connection's hot path: pure-Python build of
``fastrpc.amqp.sockio``.

``send_nowait`` writes what fits without waiting; ``recv_into`` blocks for
the next bytes. Both take the socket's file descriptor too, as the transport
keeps it: the compiled build (ext/sockio.pyx) makes the system calls on it
directly, without asking the socket object; this build uses the socket.
"""

from __future__ import annotations

import socket

__all__ = ["recv_into", "send_nowait"]

_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def send_nowait(sock: socket.socket, data: bytes | bytearray | memoryview, fd: int = -1) -> int:
    """Hand what of ``data`` fits in ``sock``'s send buffer to the kernel now;
    the bytes taken, 0 when the buffer is full. Other failures raise OSError
    (BrokenPipeError, ConnectionResetError, ...); a closed socket ValueError
    or OSError. ``fd``: ``sock``'s descriptor, or -1 (ask the socket)."""
    try:
        return sock.send(data, _FLAGS)
    except BlockingIOError:
        return 0


def recv_into(sock: socket.socket, buf: bytearray | memoryview, fd: int = -1) -> int:
    """Wait for bytes from ``sock`` (a blocking socket) and read what came
    into ``buf``; the count, 0 at end of stream. BlockingIOError when the
    socket's receive timeout (SO_RCVTIMEO) passed first; OSError as recv(2)
    fails. ``fd``: ``sock``'s descriptor, or -1 (ask the socket)."""
    return sock.recv_into(buf)
