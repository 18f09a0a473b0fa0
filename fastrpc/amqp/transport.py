"""Byte transports under a Connection: plain TCP and TLS.

A transport is used by exactly two kinds of callers at once: one reader thread
(``recv``) and senders serialised by ``send_lock`` (``sendall`` /
``try_send``). TLS is driven through ``ssl.MemoryBIO`` rather than an
``SSLSocket`` because one SSL object must never be used by two threads at the
same time; here every touch of it happens under ``_tls_lock`` while the raw
socket does the blocking I/O with the GIL released.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading

from fastrpc.amqp.exceptions import ConnectionRefused, TLSError
from fastrpc.amqp.url import ConnectionParams

RECV_SIZE = 256 * 1024


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
    return sock


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


class PlainTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        # One receive buffer reused for every recv: the FrameReader copies
        # what it keeps, so nothing is allocated per read.
        self._rbuf = bytearray(RECV_SIZE)
        self._rview = memoryview(self._rbuf)

    def recv(self) -> bytes | memoryview | None:
        """Block for the next bytes; None on orderly EOF.

        The returned view is valid only until the next call (reader thread only).
        """
        n = self.sock.recv_into(self._rbuf)
        return self._rview[:n] if n else None

    def sendall(self, data: bytes) -> None:
        # caller holds send_lock
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send only if the socket buffer has room now (caller holds send_lock).

        Used by the heartbeat timer, which must never get stuck behind a full
        socket buffer: a full buffer means bytes are already on their way.
        """
        _, writable, _ = select.select([], [self.sock], [], 0)
        if not writable:
            return False
        self.sendall(data)
        return True

    def shutdown(self) -> None:
        """Wake any thread blocked in recv/send and release the socket."""
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

    def handshake(self, address: str) -> None:
        """TLS handshake on the calling thread (socket timeout already set)."""
        try:
            while True:
                try:
                    self._obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush_raw()
                    data = self.sock.recv(RECV_SIZE)
                    if not data:
                        raise TLSError(f"TLS handshake with {address}: connection closed by peer") from None
                    self._incoming.write(data)
            self._flush_raw()
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(f"TLS certificate verification failed for {address}: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise TLSError(f"TLS handshake with {address} failed: {exc.reason or exc}") from exc

    def _flush_raw(self) -> None:
        out = self._outgoing.read()
        if out:
            self.sock.sendall(out)

    def recv(self) -> bytes | memoryview | None:
        """Next decrypted bytes; b"" if only part of a record arrived; None on EOF."""
        data = self.sock.recv(RECV_SIZE)
        if not data:
            return None
        chunks = []
        eof = False
        with self._tls_lock:
            self._incoming.write(data)
            try:
                while True:
                    chunk = self._obj.read(RECV_SIZE)
                    if not chunk:
                        eof = True
                        break
                    chunks.append(chunk)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                eof = True
            pending = self._outgoing.pending
        if pending:
            # Post-handshake records (e.g. key update replies) must go out in
            # order with application data, so they take the send lock.
            with self.send_lock, self._tls_lock:
                self._flush_raw()
        if chunks:
            return b"".join(chunks)
        return None if eof else b""

    def _encrypt(self, data: bytes) -> bytes:
        with self._tls_lock:
            view = memoryview(data)
            while view:
                n = self._obj.write(view)
                view = view[n:]
            return self._outgoing.read()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(self._encrypt(data))


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
