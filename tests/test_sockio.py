"""send_nowait and recv_into, both builds: what fits goes now, a full buffer
takes nothing, a failed write raises instead of waiting or losing bytes
silently; a read given the socket or its descriptor gets the same bytes, end
of stream and receive timeout; a transport that shut down uses no descriptor
number again."""

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


@pytest.mark.parametrize("by_descriptor", [False, True])
def test_recv_into_reads_what_came_then_the_end_of_stream(sockio: ModuleType, by_descriptor: bool) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        fd = ours.fileno() if by_descriptor else -1
        buf = bytearray(64)
        theirs.sendall(b"frame bytes")
        n = sockio.recv_into(ours, memoryview(buf), fd)
        assert buf[:n] == b"frame bytes"
        theirs.shutdown(socket.SHUT_WR)
        assert sockio.recv_into(ours, memoryview(buf), fd) == 0


@pytest.mark.parametrize("by_descriptor", [False, True])
def test_recv_into_raises_blocking_io_error_when_the_receive_timeout_passes(
        sockio: ModuleType, by_descriptor: bool) -> None:
    from fastrpc.amqp.transport import PlainTransport

    ours, theirs = socket.socketpair()
    with ours, theirs:
        PlainTransport(ours).set_recv_timeout(0.05)  # SO_RCVTIMEO on the socket itself
        with pytest.raises(BlockingIOError):
            sockio.recv_into(ours, memoryview(bytearray(8)), ours.fileno() if by_descriptor else -1)


def test_a_shut_down_transport_never_writes_to_a_reused_descriptor() -> None:
    from fastrpc.amqp.transport import PlainTransport

    ours, theirs = socket.socketpair()
    transport = PlainTransport(ours)
    transport.make_blocking()
    number = ours.fileno()
    transport.shutdown()
    # The next socket the process opens takes the lowest free number: the one
    # the transport's socket had.
    reused, peer = socket.socketpair()
    with reused, peer, theirs:
        assert number in (reused.fileno(), peer.fileno())
        with pytest.raises((OSError, ValueError)):
            transport.send_now(b"stale")
        with pytest.raises((OSError, ValueError)):
            transport.recv()
        reused.setblocking(False)
        peer.setblocking(False)
        for sock in (reused, peer):
            with pytest.raises(BlockingIOError):
                sock.recv(16)  # nothing was written to the socket that took the number
