"""A socket write that never waits: pure-Python build of ``fastrpc.amqp.sockio``.

The compiled build (ext/sockio.pyx) makes the same system call without
letting go of the GIL: a write that cannot block has nothing to wait for,
and letting go would hand the GIL to another thread and back.
"""

from __future__ import annotations

import socket

__all__ = ["send_nowait"]

_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def send_nowait(sock: socket.socket, data: bytes | bytearray | memoryview) -> int:
    """Hand what of ``data`` fits in ``sock``'s send buffer to the kernel now;
    the bytes taken, 0 when the buffer is full. Other failures raise OSError
    (BrokenPipeError, ConnectionResetError, ...); a closed socket ValueError
    or OSError."""
    try:
        return sock.send(data, _FLAGS)
    except BlockingIOError:
        return 0
