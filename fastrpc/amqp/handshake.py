"""The AMQP 0-9-1 opening handshake of one connection, run once by
:meth:`fastrpc.amqp.connection.Connection.connect`.

Protocol header, connection.start / start-ok (SASL PLAIN or EXTERNAL),
tune / tune-ok (channel_max, frame_max and heartbeat negotiated), open /
open-ok, all within the connect deadline. A refusal becomes the
:mod:`fastrpc.amqp.exceptions` class that names it (wrong credentials, no
access to the virtual host, a broker close). Not on any per-message path, so
this module is pure Python only.
"""

from __future__ import annotations

import platform
import time
from collections import deque
from typing import Any, NamedTuple

from fastrpc._version import __version__ as FASTRPC_VERSION
from fastrpc.amqp import spec
from fastrpc.amqp.exceptions import (
    AMQPError,
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionLost,
    HandshakeTimeout,
    VirtualHostError,
)
from fastrpc.amqp.transport import PlainTransport
from fastrpc.amqp.url import ConnectionParams

__all__ = ["CAPABILITIES", "Negotiated", "client_properties", "handshake", "negotiate"]

CAPABILITIES = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "basic.nack": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "exchange_exchange_bindings": True,
    "per_consumer_qos": True,
}

_Method = spec.Method
_Heartbeat = spec.Heartbeat


class Negotiated(NamedTuple):
    """What the handshake settled with the broker."""

    server_properties: dict[str, Any]
    channel_max: int
    frame_max: int
    heartbeat: int  # 0: no heartbeats
    leftover: list[Any]  # events read after connection.open-ok, in order


def negotiate(client: int, server: int) -> int:
    """Lower of two limits where 0 means "no preference"."""
    if client == 0:
        return server
    if server == 0:
        return client
    return min(client, server)


def client_properties(params: ConnectionParams) -> dict[str, Any]:
    """connection.start-ok's client_properties."""
    props: dict[str, Any] = {
        "product": "fastrpc",
        "version": FASTRPC_VERSION,
        "platform": f"Python {platform.python_version()}",
        "information": "oslo.messaging-compatible RPC over AMQP 0-9-1",
        "capabilities": dict(CAPABILITIES),
    }
    if params.connection_name:
        props["connection_name"] = params.connection_name
    return props


def handshake(transport: PlainTransport, params: ConnectionParams, deadline: float, reader: Any,
              writer: Any) -> Negotiated:
    """Open the AMQP connection on ``transport`` by ``deadline`` (a ``time.monotonic()``).

    ``reader`` / ``writer``: a FrameReader and a FrameWriter made for the
    default frame_max; the reader is set to the negotiated frame_max and
    stays the connection's (it may hold part of a frame already).
    """
    address = params.address
    events: deque[Any] = deque()
    stage = "start"

    def send() -> None:
        try:
            transport.sendall(writer.take())
        except TimeoutError:
            raise HandshakeTimeout(f"AMQP handshake with {address} timed out") from None
        except OSError as exc:
            raise ConnectionLost(f"connection to {address} failed during handshake: {exc.strerror}") from None

    def closed_by_broker(args: dict[str, Any]) -> AMQPError:
        writer.method(0, "connection.close-ok")
        try:
            transport.sendall(writer.take())
        except OSError:
            pass
        code, text = args.get("reply_code", 0), args.get("reply_text", "")
        if stage == "auth" and code == spec.ACCESS_REFUSED:
            return AuthenticationFailed(
                f"authentication failed for user {params.username!r} at {address}: {code} {text}", code, text
            )
        if stage == "open" and code in (spec.NOT_ALLOWED, spec.ACCESS_REFUSED, spec.INVALID_PATH):
            return VirtualHostError(f"cannot open virtual host {params.virtual_host!r} at {address}: {code} {text}",
                                    code, text)
        return ConnectionClosed(code, text, args.get("class_id", 0), args.get("method_id", 0))

    def next_method(expected: str) -> dict[str, Any]:
        while True:
            while not events:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HandshakeTimeout(
                        f"AMQP handshake with {address} not completed within {params.connect_timeout:g}s "
                        f"(waiting for {expected})"
                    )
                transport.sock.settimeout(remaining)
                try:
                    data = transport.recv()
                except TimeoutError:
                    continue  # the deadline check above raises
                except OSError as exc:
                    raise ConnectionLost(f"connection to {address} failed during handshake: {exc.strerror}") from None
                if data is None:
                    if stage == "auth":
                        # Brokers without authentication_failure_close just hang up.
                        raise AuthenticationFailed(
                            f"broker at {address} closed the connection during login of user {params.username!r}"
                        )
                    raise ConnectionLost(f"broker at {address} closed the connection during handshake ({stage})")
                try:
                    events.extend(reader.feed(data))
                except spec.FrameError as exc:
                    raise ConnectionLost(f"invalid data from {address} during handshake: {exc}") from exc
            event = events.popleft()
            if type(event) is _Heartbeat:
                continue
            if type(event) is not _Method or event.channel != 0:
                raise ConnectionLost(f"unexpected frame from {address} during handshake: {type(event).__name__}")
            if event.name == "connection.close":
                raise closed_by_broker(event.args)
            if event.name != expected:
                raise ConnectionLost(f"unexpected {event.name} from {address} during handshake (wanted {expected})")
            return dict(event.args)

    transport.sock.settimeout(max(deadline - time.monotonic(), 0.001))
    writer.protocol_header()
    send()
    start = next_method("connection.start")
    if (start.get("version_major"), start.get("version_minor")) != (0, 9):
        raise ConnectionLost(f"broker at {address} speaks AMQP {start.get('version_major')}-{start.get('version_minor')}")
    server_properties = dict(start.get("server_properties") or {})
    mechanisms = start.get("mechanisms") or b""
    if isinstance(mechanisms, str):
        mechanisms = mechanisms.encode()
    mechanism = params.auth_mechanism.upper()
    if mechanism.encode() not in mechanisms.split():
        raise AuthenticationFailed(
            f"broker at {address} does not offer SASL {mechanism} (offers {mechanisms.decode(errors='replace')})"
        )
    if mechanism == "PLAIN":
        response = b"\x00" + params.username.encode() + b"\x00" + params.password.encode()
    else:
        response = b""
    writer.method(
        0,
        "connection.start-ok",
        client_properties=client_properties(params),
        mechanism=mechanism,
        response=response,
        locale="en_US",
    )
    del response
    stage = "auth"
    send()
    tune = next_method("connection.tune")
    stage = "tune"
    channel_max = negotiate(params.channel_max, tune.get("channel_max", 0)) or 65535
    frame_max = negotiate(params.frame_max, tune.get("frame_max", 0)) or spec.DEFAULT_FRAME_MAX
    # Lower non-zero of both proposals; our 0 means "no heartbeats" (as in
    # oslo's heartbeat_timeout_threshold=0, py-amqp and kombu).
    heartbeat = negotiate(params.heartbeat, tune.get("heartbeat", 0)) if params.heartbeat else 0
    writer.method(0, "connection.tune-ok", channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat)
    writer.method(0, "connection.open", virtual_host=params.virtual_host)
    stage = "open"
    send()
    reader.frame_max = frame_max
    next_method("connection.open-ok")
    return Negotiated(server_properties, channel_max, frame_max, heartbeat, list(events))
