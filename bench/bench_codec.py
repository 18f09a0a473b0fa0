"""Frame codec micro-benchmarks: compiled vs pure-Python vs pamqp, side by side.

Run with::

    .venv/bin/python -m pytest bench/bench_codec.py --benchmark-only -q

Each group (encode-publish, encode-batch32, decode-deliveries100,
decode-split100) measures the same work with the three implementations.
Every benchmark first checks that its implementation produced the expected
result, so a fast but wrong codec cannot win.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from pamqp import body as pamqp_body
from pamqp import commands as pamqp_commands
from pamqp import exceptions as pamqp_exceptions
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from fastrpc._ext import codec as compiled_codec
from fastrpc.amqp import codec_py
from fastrpc.amqp.spec import Delivery

IMPLS = ["compiled", "pure", "pamqp"]
CODECS = {"compiled": compiled_codec, "pure": codec_py}

BODY = bytes(range(200))
CHANNEL = 1
PUBLISH_PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "delivery_mode": 2,
    "correlation_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
}
DELIVERY_PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "headers": {"x-origin": "compute-1", "x-attempt": 1, "x-trace": True},
}
N_BATCH = 32
N_DELIVERIES = 100


# ---- pamqp equivalents -------------------------------------------------------


def _pamqp_publish(exchange: str, routing_key: str, body: bytes, properties: dict[str, Any]) -> bytes:
    return b"".join(
        (
            pamqp_frame.marshal(pamqp_commands.Basic.Publish(exchange=exchange, routing_key=routing_key), CHANNEL),
            pamqp_frame.marshal(
                pamqp_header.ContentHeader(0, len(body), pamqp_commands.Basic.Properties(**properties)), CHANNEL
            ),
            pamqp_frame.marshal(pamqp_body.ContentBody(body), CHANNEL),
        )
    )


def _pamqp_decode(chunks: list[bytes]) -> int:
    """Unmarshal every complete frame of the chunked stream; returns the body-frame count."""
    buf = b""
    bodies = 0
    for chunk in chunks:
        buf += chunk
        while buf:
            try:
                used, _channel, frame = pamqp_frame.unmarshal(buf)
            except pamqp_exceptions.UnmarshalingException:
                break  # incomplete frame: wait for more bytes
            buf = buf[used:]
            if isinstance(frame, pamqp_body.ContentBody):
                bodies += 1
    return bodies


# ---- inputs --------------------------------------------------------------------


def _delivery_stream() -> bytes:
    writer = compiled_codec.FrameWriter()
    for tag in range(1, N_DELIVERIES + 1):
        writer.content(
            CHANNEL,
            "basic.deliver",
            {
                "consumer_tag": "ctag-1.0f8fad5b",
                "delivery_tag": tag,
                "redelivered": False,
                "exchange": "openstack",
                "routing_key": "compute.host-1",
            },
            DELIVERY_PROPERTIES,
            BODY,
        )
    return writer.take()


STREAM = _delivery_stream()


def _split(data: bytes, pieces: int, seed: int = 20240611) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), pieces - 1))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


SPLIT = _split(STREAM, 80)


def _check_deliveries(events: list[Any]) -> None:
    assert len(events) == N_DELIVERIES
    assert all(isinstance(e, Delivery) for e in events)
    assert events[-1].delivery_tag == N_DELIVERIES
    assert events[-1].body == BODY
    assert events[-1].properties == DELIVERY_PROPERTIES


# ---- benchmarks ----------------------------------------------------------------


def _encode_publish(impl: str) -> Callable[[], bytes]:
    if impl == "pamqp":
        return lambda: _pamqp_publish("openstack", "compute.host-1", BODY, PUBLISH_PROPERTIES)
    writer = CODECS[impl].FrameWriter()

    def run() -> bytes:
        writer.publish(CHANNEL, "openstack", "compute.host-1", BODY, PUBLISH_PROPERTIES)
        return writer.take()

    return run


@pytest.mark.benchmark(group="encode-publish")
@pytest.mark.parametrize("impl", IMPLS)
def test_encode_publish(benchmark: Any, impl: str) -> None:
    run = _encode_publish(impl)
    reference = _encode_publish("pure")()
    assert run() == reference
    benchmark(run)


def _encode_batch(impl: str) -> Callable[[], bytes]:
    if impl == "pamqp":
        return lambda: b"".join(
            [_pamqp_publish("openstack", "compute.host-1", BODY, PUBLISH_PROPERTIES) for _ in range(N_BATCH)]
        )
    writer = CODECS[impl].FrameWriter()
    publish = writer.publish

    def run() -> bytes:
        for _ in range(N_BATCH):
            publish(CHANNEL, "openstack", "compute.host-1", BODY, PUBLISH_PROPERTIES)
        return writer.take()

    return run


@pytest.mark.benchmark(group="encode-batch32")
@pytest.mark.parametrize("impl", IMPLS)
def test_encode_batch32(benchmark: Any, impl: str) -> None:
    run = _encode_batch(impl)
    assert run() == _encode_batch("pure")()
    benchmark(run)


def _decode(impl: str, chunks: list[bytes]) -> Callable[[], Any]:
    if impl == "pamqp":
        return lambda: _pamqp_decode(chunks)
    reader_cls = CODECS[impl].FrameReader

    def run() -> list[Any]:
        reader = reader_cls()
        events: list[Any] = []
        for chunk in chunks:
            events += reader.feed(chunk)
        return events

    return run


@pytest.mark.benchmark(group="decode-deliveries100")
@pytest.mark.parametrize("impl", IMPLS)
def test_decode_deliveries(benchmark: Any, impl: str) -> None:
    run = _decode(impl, [STREAM])
    result = run()
    if impl == "pamqp":
        assert result == N_DELIVERIES
    else:
        _check_deliveries(result)
    benchmark(run)


@pytest.mark.benchmark(group="decode-split100")
@pytest.mark.parametrize("impl", IMPLS)
def test_decode_split(benchmark: Any, impl: str) -> None:
    run = _decode(impl, SPLIT)
    result = run()
    if impl == "pamqp":
        assert result == N_DELIVERIES
    else:
        _check_deliveries(result)
        assert result == _decode("pure", [STREAM])()
    benchmark(run)
