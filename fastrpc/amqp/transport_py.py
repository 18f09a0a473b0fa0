"""Byte transports under a Connection: plain TCP and TLS.

A transport is used by exactly two kinds of callers at once: one reading
thread at a time (``recv``; the connection's read baton decides which) and
one writing thread at a time (``sendall`` / ``try_send``; the connection
decides which). TLS is driven through ``ssl.MemoryBIO`` rather than an
``SSLSocket`` because one SSL object must never be used by two threads at the
same time; here every touch of it happens under ``_tls_lock`` while the raw
socket does the blocking I/O with the GIL released.

Import it as ``fastrpc.amqp.transport``: this file runs as it is, or compiled
unchanged into ``fastrpc._ext.transport`` (see fastrpc._impl).
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
from time import monotonic  # a module global: no attribute lookup per call

from fastrpc.amqp.exceptions import ConnectionLost, ConnectionRefused, TLSError
from fastrpc.amqp.sockio import recv_into, send_nowait
from fastrpc.amqp.url import ConnectionParams

__all__ = ["SEND_CHUNK", "PlainTransport", "TlsTransport", "make_ssl_context", "open_socket", "open_transport",
           "set_dead_peer_bounds"]

# The receive buffer grows on demand and shrinks back: a connection carrying
# small messages keeps RECV_MIN; a read that fills the buffer means more was
# waiting (a large message arriving), so it grows fourfold up to RECV_MAX and
# large messages come in few reads. It goes back to RECV_MIN after
# SHRINK_AFTER reads in a row that RECV_MIN would have held, or at the first
# such read after QUIET_AFTER seconds without reads (an idle connection: its
# next read is a heartbeat).
RECV_MIN = 16 * 1024
RECV_MAX = 256 * 1024
SHRINK_AFTER = 64
QUIET_AFTER = 1.0
# Room a TLS read's plaintext needs beyond its ciphertext: a record begun in
# the previous read (records carry at most 16 KiB).
TLS_SLACK = 32 * 1024
# Large sends go out in pieces of this size so that ``send_since`` (the time
# of the last progress) moves while a big message trickles out.
SEND_CHUNK = 64 * 1024
# struct tcp_info (linux/tcp.h): the u64 tcpi_bytes_acked sits at offset 120,
# after 8 one-byte fields, 24 u32 and the two u64 pacing rates.
TCPI_BYTES_ACKED = 120
TCP_INFO_SIZE = TCPI_BYTES_ACKED + 8


def open_socket(params: ConnectionParams, timeout: float) -> socket.socket:
    """TCP connect with a timeout; errors name host:port only."""
    try:
        sock = socket.create_connection((params.host, params.port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"timed out after {timeout:g}s"
        raise ConnectionRefused(f"cannot connect to {params.address}: {reason}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    set_dead_peer_bounds(sock, params.tcp_user_timeout)
    return sock


def set_dead_peer_bounds(sock: socket.socket, seconds: float) -> None:
    """Let the kernel drop a peer that leaves our data unacknowledged for
    ``seconds`` (TCP_USER_TIMEOUT: a blackholed or powered-off host), and
    keepalive probes on an idle connection within about the same time
    instead of after two hours. 0 leaves the kernel's defaults."""
    if seconds <= 0:
        return
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None:
        sock.setsockopt(socket.IPPROTO_TCP, user_timeout, max(1, int(seconds * 1000)))
    idle = max(1, int(seconds / 2))
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", max(1, idle // 3)), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def make_ssl_context(params: ConnectionParams) -> ssl.SSLContext:
    """Client context: TLS >= 1.2, peer and hostname verified unless verify=False."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=params.cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not params.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if params.certfile:
        ctx.load_cert_chain(params.certfile, params.keyfile)
    return ctx


def _timeval(seconds: float) -> bytes:
    """``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO; a positive time never rounds to 0 (for ever)."""
    usec_total = max(int(seconds * 1_000_000), 1 if seconds > 0 else 0)
    return struct.pack("ll", usec_total // 1_000_000, usec_total % 1_000_000)


class PlainTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # One receive buffer reused for every recv (the FrameReader copies
        # what it keeps, so nothing is allocated per read), resized by
        # _fit_buffer between reads.
        self._rbuf = bytearray(RECV_MIN)
        self._rview = memoryview(self._rbuf)
        self._small_reads = 0  # reads in a row RECV_MIN would have held
        self._read_at = 0.0  # monotonic time of the last read, kept while the buffer is large
        # Monotonic time of the last progress of the send in flight, None when
        # no send is in flight; read by the heartbeat timer to spot a send
        # stuck behind a broker that stopped reading.
        self.send_since: float | None = None
        # Bytes handed to the kernel so far (TLS: records), counted from the
        # connection's first byte like TCP_INFO's acknowledged bytes.
        self.sent = 0
        # The socket's descriptor once it blocks (see make_blocking), until
        # shutdown; -1 otherwise. Reads and small writes use it directly
        # instead of asking the socket object each time.
        self._fd = -1

    def make_blocking(self) -> None:
        """The handshake is over: from now on the socket blocks (its waits
        are bounded by SO_RCVTIMEO / SO_SNDTIMEO, see set_recv_timeout and
        set_send_timeout, not by a Python-level timeout)."""
        self.sock.settimeout(None)
        self._fd = self.sock.fileno()

    def recv(self) -> bytes | memoryview | None:
        """Block for the next bytes; None on orderly EOF.

        Raises BlockingIOError when the receive timeout (see
        :meth:`set_recv_timeout`) passes with nothing read. The returned view
        is valid only until the next call (one reading thread at a time).
        """
        view = self._rview
        n = recv_into(self.sock, view, self._fd)
        if not n:
            return None
        size = len(view)
        if n == size or size > RECV_MIN:
            self._fit_buffer(n)
        return view[:n]

    def _fit_buffer(self, n: int) -> None:
        """Resize the receive buffer for the next read after one of ``n`` bytes.

        A new buffer, not a resized one: the view returned for this read
        stays valid until the next call.
        """
        size = len(self._rbuf)
        now = monotonic()
        if n == size:
            self._small_reads = 0
            if size < RECV_MAX:
                self._resize(min(size * 4, RECV_MAX))
        elif n > RECV_MIN:
            self._small_reads = 0
        else:
            self._small_reads += 1
            if self._small_reads >= SHRINK_AFTER or now - self._read_at >= QUIET_AFTER:
                self._small_reads = 0
                self._resize(RECV_MIN)
        self._read_at = now

    def _resize(self, size: int) -> None:
        self._rbuf = bytearray(size)
        self._rview = memoryview(self._rbuf)

    def set_recv_timeout(self, seconds: float) -> None:
        """Make a recv that reads nothing for ``seconds`` raise BlockingIOError (SO_RCVTIMEO).

        0 waits for ever. Sends are not affected, unlike ``socket.settimeout``.
        """
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))

    def set_recv_lowat(self, nbytes: int) -> None:
        """Make recv wait until ``nbytes`` came or the receive timeout passed (SO_RCVLOWAT).

        After the timeout, recv returns what came, however little.
        """
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)

    def set_send_timeout(self, seconds: float) -> None:
        """Make a send that moves no byte for ``seconds`` fail (SO_SNDTIMEO).

        0 disables the limit. Receives are not affected. A timed-out send
        raises BlockingIOError from ``sendall``.
        """
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """sendall on the raw socket, recording progress (the one writing thread)."""
        sock = self.sock
        self.send_since = monotonic()
        try:
            if len(data) <= SEND_CHUNK:
                sock.sendall(data)
                self.sent += len(data)
                return
            view = memoryview(data)
            for start in range(0, len(view), SEND_CHUNK):
                chunk = view[start:start + SEND_CHUNK]
                sock.sendall(chunk)
                self.sent += len(chunk)
                self.send_since = monotonic()
        finally:
            self.send_since = None

    # What TlsTransport sends its records with (its sendall encrypts first).
    _send_raw = sendall

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Hand what of ``data`` fits in the socket buffer to the kernel without
        waiting (the one writing thread); the bytes taken, 0 when it is full.

        The usual small write of a publish or an ack fits whole: then there
        is nothing to wait for and no send in flight for the heartbeat timer
        to watch. Raises OSError as sendall does.
        """
        n = send_nowait(self.sock, data, self._fd)
        self.sent += n
        return n

    def try_send(self, data: bytes) -> bool:
        """Send only if the socket buffer has room now (the one writing thread).

        Used by the heartbeat timer, which must never get stuck behind a full
        socket buffer: a full buffer means bytes are already on their way.
        """
        _, writable, _ = select.select([], [self.sock], [], 0)
        if not writable:
            return False
        self.sendall(data)
        return True

    def acked(self) -> int | None:
        """How many bytes of the stream the peer's TCP acknowledged (comparable
        with :attr:`sent`); None when the socket cannot say (not TCP)."""
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        except (OSError, AttributeError):
            return None
        if len(info) < TCP_INFO_SIZE:
            return None
        # tcpi_bytes_acked counts the SYN as well: one more than the data.
        return int(struct.unpack_from("=Q", info, TCPI_BYTES_ACKED)[0]) - 1

    def shutdown(self) -> None:
        """Wake any thread blocked in recv/send and release the socket."""
        self._fd = -1  # no later call may use the number (it can be reused once closed)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class TlsTransport(PlainTransport):
    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_hostname: str | None) -> None:
        super().__init__(sock)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname)
        self._tls_lock = threading.Lock()
        # Taking records out of the outgoing BIO and writing them is one step,
        # so that records reach the socket in the order they were made: the
        # writing thread's and the reader's (post-handshake replies).
        self._write_lock = threading.Lock()
        # room for a full read plus a record left over from the previous one
        self._plain = bytearray(RECV_MIN + TLS_SLACK)
        self._plain_view = memoryview(self._plain)

    def set_recv_lowat(self, nbytes: int) -> None:
        # The mark would count ciphertext: a record's own overhead (22 bytes
        # or more) lifts a lone confirm above it, so it would save nothing.
        pass

    def _resize(self, size: int) -> None:
        super()._resize(size)
        self._plain = bytearray(size + TLS_SLACK)
        self._plain_view = memoryview(self._plain)

    def handshake(self, address: str) -> None:
        """TLS handshake on the calling thread (socket timeout already set)."""
        try:
            while True:
                try:
                    self._obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush_raw()
                    data = self.sock.recv(RECV_MIN)
                    if not data:
                        raise TLSError(f"TLS handshake with {address}: connection closed by peer") from None
                    self._incoming.write(data)
            self._flush_raw()
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(f"TLS certificate verification failed for {address}: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise TLSError(f"TLS handshake with {address} failed: {exc.reason or exc}") from exc
        except TimeoutError:
            raise  # the caller turns this into HandshakeTimeout
        except OSError as exc:
            # e.g. a reset while the handshake runs: the host is not usable,
            # which the failover logic must see as an AMQPError.
            reason = exc.strerror or type(exc).__name__
            raise ConnectionLost(f"TLS handshake with {address} failed: {reason}") from None

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        # Records are made and written under the TLS locks: sendall does both.
        return 0

    def _flush_raw(self) -> None:
        out = self._outgoing.read()
        if out:
            self._send_raw(out)

    def recv(self) -> bytes | memoryview | None:
        """Next decrypted bytes; b"" if only part of a record arrived; None on EOF.

        Ciphertext lands in the raw receive buffer and plaintext in a second
        preallocated buffer, so a read allocates nothing. The returned view is
        valid only until the next call (reader thread only).
        """
        view = self._rview
        n = self.sock.recv_into(view)
        if not n:
            return None
        out = self._plain
        size = len(out)
        filled = 0
        eof = False
        with self._tls_lock:
            self._incoming.write(view[:n])
            try:
                while True:
                    if filled == size:
                        # Plaintext never exceeds the ciphertext that carried
                        # it, but a record begun in the previous read may
                        # complete now: grow (into a new buffer, since views
                        # of the old one may still exist).
                        size *= 2
                        grown = bytearray(size)
                        grown[:filled] = out
                        self._plain = out = grown
                        self._plain_view = memoryview(grown)
                    # with a buffer, read() returns a byte count (typeshed says bytes)
                    got: int = self._obj.read(size - filled, self._plain_view[filled:])  # type: ignore[arg-type, assignment]
                    if not got:
                        eof = True
                        break
                    filled += got
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                eof = True
            pending = self._outgoing.pending
        if pending:
            # Post-handshake records (e.g. key update replies) must go out in
            # order with application data, so they take the write lock.
            with self._write_lock, self._tls_lock:
                self._flush_raw()
        data: memoryview | bytes | None = self._plain_view[:filled] if filled else None if eof else b""
        size = len(view)
        if n == size or size > RECV_MIN:
            self._fit_buffer(n)  # new buffers: the view returned stays valid
        return data

    def _encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        with self._tls_lock:
            view = memoryview(data)
            while view:
                n = self._obj.write(view)
                view = view[n:]
            return self._outgoing.read()

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        with self._write_lock:
            self._send_raw(self._encrypt(data))

    def try_send(self, data: bytes) -> bool:
        # Never wait for the write lock either: the reader may hold it in a
        # post-handshake write that cannot finish.
        if not self._write_lock.acquire(False):
            return False
        try:
            _, writable, _ = select.select([], [self.sock], [], 0)
            if not writable:
                return False
            self._send_raw(self._encrypt(data))
            return True
        finally:
            self._write_lock.release()


def open_transport(params: ConnectionParams, timeout: float) -> PlainTransport:
    """Connected transport (TLS handshake done) with the socket timeout set."""
    ctx = None
    if params.ssl:
        try:
            ctx = make_ssl_context(params)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"cannot set up TLS for {params.address}: {exc}") from None
    sock = open_socket(params, timeout)
    if ctx is None:
        return PlainTransport(sock)
    try:
        transport = TlsTransport(sock, ctx, params.server_hostname or params.host)
        transport.handshake(params.address)
    except BaseException:
        sock.close()
        raise
    return transport
