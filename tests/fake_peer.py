"""A scripted AMQP peer on loopback, and helpers to drive a Connection against it.

The peer lets tests drive what a real broker rarely does on demand:
connection.blocked, channel.flow, unexpected methods, malformed frames,
a broker that never answers the handshake, a broker that stops reading.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from fastrpc.amqp import spec
from fastrpc.amqp.channel import Channel
from fastrpc.amqp.codec import FrameReader, FrameWriter
from fastrpc.amqp.connection import Connection

WAIT = 10.0


class Peer:
    """Server side of one AMQP connection on 127.0.0.1, driven by the test."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.sock: socket.socket | None = None
        self.reader = FrameReader()
        self.writer = FrameWriter()
        self.events: list[Any] = []
        self.preamble = b""

    def accept(self) -> None:
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(WAIT)
        data = b""
        while len(data) < 8:
            chunk = self.sock.recv(8 - len(data))
            assert chunk, "client hung up before the protocol header"
            data += chunk
        self.preamble = data

    def send_method(self, channel: int, name: str, **fields: Any) -> None:
        self.writer.method(channel, name, **fields)
        self.flush()

    def flush(self) -> None:
        assert self.sock is not None
        self.sock.sendall(self.writer.take())

    def next_event(self, skip_heartbeats: bool = True) -> Any:
        assert self.sock is not None
        deadline = time.monotonic() + WAIT
        while True:
            while not self.events:
                assert time.monotonic() < deadline, "peer waited too long for a frame"
                data = self.sock.recv(65536)
                assert data, "client closed the connection"
                self.events.extend(self.reader.feed(data))
            event = self.events.pop(0)
            if skip_heartbeats and type(event) is spec.Heartbeat:
                continue
            return event

    def expect(self, name: str) -> Any:
        event = self.next_event()
        assert getattr(event, "name", None) == name, f"expected {name}, got {event}"
        return event

    def handshake(self, heartbeat: int = 0, frame_max: int = 131072, channel_max: int = 100) -> dict[str, Any]:
        self.accept()
        assert self.preamble == spec.PROTOCOL_HEADER
        self.send_method(
            0, "connection.start", version_major=0, version_minor=9,
            server_properties={"product": "fake", "capabilities": {"publisher_confirms": True}},
            mechanisms=b"PLAIN AMQPLAIN", locales=b"en_US",
        )
        start_ok = self.expect("connection.start-ok").args
        self.send_method(0, "connection.tune", channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat)
        tune_ok = self.expect("connection.tune-ok").args
        open_ = self.expect("connection.open").args
        self.send_method(0, "connection.open-ok")
        return {"start_ok": start_ok, "tune_ok": tune_ok, "open": open_}

    def open_channel(self) -> int:
        event = self.expect("channel.open")
        self.send_method(event.channel, "channel.open-ok")
        return int(event.channel)

    def close(self) -> None:
        for s in (self.sock, self.listener):
            if s is not None:
                s.close()


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, queue.Queue[Any]]:
    out: queue.Queue[Any] = queue.Queue()

    def target() -> None:
        try:
            out.put(("ok", fn()))
        except BaseException as exc:
            out.put(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def connect(peer: Peer, **kwargs: Any) -> tuple[Connection, dict[str, Any]]:
    """Handshake in the peer's thread while the client connects here."""
    _, result = run_in_thread(peer.handshake)
    conn = Connection(f"amqp://alice:PeerS3cret@127.0.0.1:{peer.port}/vh", **kwargs)
    conn.connect()
    status, value = result.get(timeout=WAIT)
    assert status == "ok", value
    return conn, value


def open_channel(conn: Connection, peer: Peer) -> tuple[Channel, int]:
    _, opened = run_in_thread(conn.channel)
    cid = peer.open_channel()
    status, ch = opened.get(timeout=WAIT)
    assert status == "ok", ch
    return ch, cid


def barrier(conn: Connection, peer: Peer) -> None:
    """Return once the reader handled everything the peer sent before."""
    seen = threading.Event()

    def on_blocked(c: Connection, blocked: bool, reason: str) -> None:
        seen.set()

    conn.on_blocked.append(on_blocked)
    peer.send_method(0, "connection.unblocked")
    assert seen.wait(WAIT)
    conn.on_blocked.remove(on_blocked)


def select_confirms(ch: Channel, cid: int, peer: Peer) -> None:
    """Put ``ch`` in confirm mode, the peer answering."""
    _, selected = run_in_thread(ch.confirm_select)
    peer.expect("confirm.select")
    peer.send_method(cid, "confirm.select-ok")
    assert selected.get(timeout=WAIT)[0] == "ok"
