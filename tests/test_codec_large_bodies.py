"""Large bodies encode to the same bytes whatever their type and whatever
comes before or after them in the writer (the compiled writer copies a large
bytes body only once, at take()), and a refused write after one leaves the
writer as it was."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import pytest
from codec_support import HEARTBEAT

from fastrpc.amqp import codec_py, spec

pytestmark = pytest.mark.twins

DELIVER = {"consumer_tag": "t", "delivery_tag": 7, "exchange": "ex", "routing_key": "rk"}


def _body(n: int, seed: int) -> bytes:
    return bytes((seed + 31 * i) % 256 for i in range(n))


def _mixed(codec: ModuleType, frame_max: int, bodies: list[Any]) -> Any:
    """A writer holding every kind of frame around each body."""
    w = codec.FrameWriter(frame_max)
    w.heartbeat()
    for i, body in enumerate(bodies):
        w.publish(1, "ex", f"rk{i}", body, {"message_id": f"m{i}", "delivery_mode": 2})
        w.ack(1, i + 1, False)
        w.content(2, "basic.deliver", dict(DELIVER, delivery_tag=i + 1), {"headers": {"i": i}}, body)
        w.method(3, "basic.qos", prefetch_count=i)
    return w


@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_large_bodies_of_every_type_encode_like_the_reference(codec: ModuleType, frame_max: int) -> None:
    raw = [_body(n, n) for n in (0, 1, 16 * 1024 - 1, 16 * 1024, 100_000, 1 << 20)]
    bodies: list[Any] = [*raw, bytearray(raw[4]), memoryview(raw[5])[3:], raw[4]]
    expected = _mixed(codec_py, frame_max, [bytes(b) for b in bodies]).take()
    w = _mixed(codec, frame_max, bodies)
    assert len(w) == len(expected)
    assert w.take() == expected
    assert len(w) == 0 and w.take() == b""
    # The reader gives every body back.
    events = codec.FrameReader().feed(expected)
    delivered = [e.body for e in events if isinstance(e, spec.ContentMethod | spec.Delivery)]
    assert delivered == [bytes(b) for b in bodies for _ in (0, 1)]


def test_a_refused_write_after_a_large_body_leaves_the_writer_as_it_was(codec: ModuleType) -> None:
    big = _body(300_000, 5)
    w = codec.FrameWriter(131072)
    w.publish(1, "", "q", big)
    before = len(w)
    with pytest.raises(TypeError):
        w.publish(1, "", "q", _body(200_000, 6), {"priority": "high"})
    with pytest.raises(ValueError):
        w.content(1, "basic.deliver", DELIVER, {"no such property": 1}, _body(200_000, 7))
    assert len(w) == before
    reference = codec_py.FrameWriter(131072)
    reference.publish(1, "", "q", big)
    assert w.take() == reference.take()


def test_the_writer_keeps_no_reference_to_a_body_after_take(codec: ModuleType) -> None:
    body = _body(50_000, 9)
    refs = sys.getrefcount(body)
    w = codec.FrameWriter()
    w.publish(1, "", "q", body)
    w.publish(1, "", "q", body)
    w.take()
    assert sys.getrefcount(body) == refs
    w.publish(1, "", "q", body)
    with pytest.raises(TypeError):
        w.publish(1, "", "q", body, {"priority": "high"})
    w.heartbeat()
    assert w.take().endswith(body + bytes([spec.FRAME_END]) + HEARTBEAT)  # one body frame, then the heartbeat
    assert sys.getrefcount(body) == refs
