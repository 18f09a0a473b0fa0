"""Free loopback ports and a probe that a port speaks AMQP 0-9-1."""

from __future__ import annotations

import socket
import struct

LOOPBACK = "127.0.0.1"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

# A method frame on channel 0 carrying connection.start (class 10, method 10)
# with version-major 0 and version-minor 9: what any 0-9-1 broker answers first.
_START_PREFIX = struct.Struct(">BHI")
_CONNECTION_START = b"\x00\x0a\x00\x0a\x00\x09"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return `count` distinct ports that were free on `host` a moment ago.

    All sockets are held open until every port is chosen so the kernel cannot hand
    out the same port twice within one call.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_connection_start(data: bytes) -> bool:
    """True when `data` begins with a complete-looking connection.start frame."""
    if len(data) < _START_PREFIX.size + len(_CONNECTION_START):
        return False
    frame_type, channel, _size = _START_PREFIX.unpack_from(data)
    body = data[_START_PREFIX.size : _START_PREFIX.size + len(_CONNECTION_START)]
    return frame_type == 1 and channel == 0 and body == _CONNECTION_START


def amqp_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send the AMQP 0-9-1 protocol header and report whether connection.start came back."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(PROTOCOL_HEADER)
            data = b""
            # connection.start is a few hundred bytes; a handful of reads is plenty.
            for _ in range(16):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
                if len(data) >= _START_PREFIX.size + len(_CONNECTION_START):
                    break
            return is_connection_start(data)
    except OSError:
        return False


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
