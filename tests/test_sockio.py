"""send_nowait, both builds: what fits goes now, a full buffer takes nothing,
and a failed write raises instead of waiting or losing bytes silently."""

from __future__ import annotations

import importlib
import socket
from types import ModuleType

import pytest

from fastrpc import _impl

pytestmark = pytest.mark.twins

BUILDS = ["fastrpc.amqp.sockio_py"] + ([] if _impl.NO_EXTENSIONS else ["fastrpc._ext.sockio"])


@pytest.fixture(params=BUILDS)
def sockio(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def _drain(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock`` (bounded by its timeout)."""
    sock.settimeout(5.0)
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "the peer closed early"
        out += chunk
    return bytes(out)


def test_a_small_write_goes_whole_from_any_buffer_type(sockio: ModuleType) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert sockio.send_nowait(ours, b"hello") == 5
        assert sockio.send_nowait(ours, bytearray(b" big")) == 4
        assert sockio.send_nowait(ours, memoryview(b"xx world")[2:]) == 6
        assert _drain(theirs, 15) == b"hello big world"


def test_a_full_buffer_takes_nothing_and_the_bytes_taken_arrive_in_order(sockio: ModuleType) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        block = bytes(range(256)) * 256  # 64 KiB, more than the buffer holds
        sent = 0
        for _ in range(1000):  # bounded: the buffer fills long before
            n = sockio.send_nowait(ours, memoryview(block)[sent % len(block):])
            if n == 0:
                break
            assert 0 < n <= len(block) - sent % len(block)
            sent += n
        else:
            pytest.fail("the send buffer never filled")
        assert sent > 0
        got = _drain(theirs, sent)
        expected = (block * (sent // len(block) + 1))[:sent]
        assert got == expected


def test_a_write_to_a_closed_peer_raises(sockio: ModuleType) -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    with ours, pytest.raises(BrokenPipeError):
        sockio.send_nowait(ours, b"x")


def test_a_closed_socket_raises(sockio: ModuleType) -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    ours.close()
    with pytest.raises((OSError, ValueError)):
        sockio.send_nowait(ours, b"x")
