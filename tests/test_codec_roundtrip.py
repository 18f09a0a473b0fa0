"""Property tests: whatever FrameWriter encodes, FrameReader gives back."""

from __future__ import annotations

import datetime
from types import ModuleType
from typing import Any

import pytest
from codec_support import (
    args_strategy,
    assert_events,
    assert_same,
    content_event,
    expected_args,
    feed_chunks,
    properties_strategy,
    split_frames,
    tables,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrpc.amqp import spec
from fastrpc.amqp.spec import Method

pytestmark = pytest.mark.twins

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
ALL_METHODS = sorted(spec.METHODS_BY_NAME)
PLAIN_METHODS = [name for name in ALL_METHODS if not spec.METHODS_BY_NAME[name].has_content]
CONTENT_METHODS = [name for name in ALL_METHODS if spec.METHODS_BY_NAME[name].has_content]
channels = st.integers(min_value=0, max_value=65535)



@st.composite
def plain_methods(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(PLAIN_METHODS))
    return name, draw(args_strategy(spec.METHODS_BY_NAME[name]))


@st.composite
def content_methods(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(CONTENT_METHODS))
    return name, draw(args_strategy(spec.METHODS_BY_NAME[name]))


@pytest.mark.parametrize("name", PLAIN_METHODS)
def test_every_method_round_trips_with_defaults(codec: ModuleType, name: str) -> None:
    mspec = spec.METHODS_BY_NAME[name]
    writer = codec.FrameWriter()
    writer.method(3, name)
    defaults = {spec.BIT: False, spec.SHORTSTR: "", spec.LONGSTR: b"", spec.TABLE: {}}
    expected = {field: defaults.get(kind, 0) for field, kind in mspec.fields}
    assert_events(codec.FrameReader().feed(writer.take()), [Method(3, name, expected)])


@SETTINGS
@given(channel=channels, method=plain_methods())
def test_method_round_trip(codec: ModuleType, channel: int, method: tuple[str, dict[str, Any]]) -> None:
    name, args = method
    writer = codec.FrameWriter()
    writer.method(channel, name, **args)
    data = writer.take()
    events = codec.FrameReader().feed(data)
    assert_events(events, [Method(channel, name, expected_args(spec.METHODS_BY_NAME[name], args))])


@SETTINGS
@given(
    channel=st.integers(min_value=1, max_value=65535),
    method=content_methods(),
    props=properties_strategy,
    body=st.binary(max_size=9000),
)
def test_content_round_trip(
    codec: ModuleType, channel: int, method: tuple[str, dict[str, Any]], props: dict[str, Any], body: bytes
) -> None:
    name, args = method
    writer = codec.FrameWriter(frame_max=4096)
    writer.content(channel, name, args, props, body)
    data = writer.take()
    body_frames = [f for f in split_frames(data) if f[0] == spec.FRAME_BODY]
    assert len(body_frames) == -(-len(body) // 4088)
    reader = codec.FrameReader(frame_max=4096)
    assert_events(reader.feed(data), [content_event(channel, name, args, props, body)])


@SETTINGS
@given(
    channel=st.integers(min_value=1, max_value=65535),
    exchange=st.text(max_size=30),
    routing_key=st.text(max_size=60),
    props=properties_strategy,
    body=st.one_of(
        st.binary(max_size=20000), st.integers(min_value=0, max_value=4).map(lambda k: b"\xab" * (4088 * k))
    ),
    mandatory=st.booleans(),
    immediate=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=30000), max_size=8),
)
def test_publish_round_trip(
    codec: ModuleType,
    channel: int,
    exchange: str,
    routing_key: str,
    props: dict[str, Any],
    body: bytes,
    mandatory: bool,
    immediate: bool,
    cuts: list[int],
) -> None:
    writer = codec.FrameWriter(frame_max=4096)
    writer.publish(channel, exchange, routing_key, body, props, mandatory=mandatory, immediate=immediate)
    data = writer.take()
    frames = split_frames(data)
    assert all(len(payload) + 8 <= 4096 for _, _, payload in frames)
    assert len([f for f in frames if f[0] == spec.FRAME_BODY]) == -(-len(body) // 4088)
    args = {
        "ticket": 0,
        "exchange": exchange,
        "routing_key": routing_key,
        "mandatory": mandatory,
        "immediate": immediate,
    }
    expected = spec.ContentMethod(channel, "basic.publish", args, props, body)
    assert_events(feed_chunks(codec.FrameReader(frame_max=4096), data, cuts), [expected])


@SETTINGS
@given(arguments=tables)
def test_table_round_trip(codec: ModuleType, arguments: dict[str, Any]) -> None:
    writer = codec.FrameWriter()
    writer.method(1, "exchange.declare", exchange="x", type="topic", arguments=arguments)
    (event,) = codec.FrameReader().feed(writer.take())
    assert_same(event.args["arguments"], arguments)


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = {"d": value} if level % 2 else [value]
    return value


@SETTINGS
@given(depth=st.integers(min_value=0, max_value=30), leaf=st.sampled_from([1, "s", None, b"x", 2.5]))
def test_nested_tables_round_trip(codec: ModuleType, depth: int, leaf: Any) -> None:
    # up to 31 levels below the arguments table itself: within MAX_TABLE_DEPTH
    arguments = {"n": _nested(depth, leaf)}
    writer = codec.FrameWriter()
    writer.method(1, "queue.declare", queue="q", arguments=arguments)
    (event,) = codec.FrameReader().feed(writer.take())
    assert_same(event.args["arguments"], arguments)


@SETTINGS
@given(
    batch=st.lists(st.one_of(plain_methods().map(lambda m: ("m", m)), st.just(("h", None))), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
)
def test_many_frames_in_random_splits(codec: ModuleType, batch: list[tuple[str, Any]], cuts: list[int]) -> None:
    writer = codec.FrameWriter()
    expected: list[Any] = []
    for i, (kind, method) in enumerate(batch):
        if kind == "h":
            writer.heartbeat()
            expected.append(spec.Heartbeat(0))
        else:
            name, args = method
            writer.method(i, name, **args)
            expected.append(Method(i, name, expected_args(spec.METHODS_BY_NAME[name], args)))
    data = writer.take()
    assert_events(feed_chunks(codec.FrameReader(), data, cuts), expected)


def test_interleaved_channels_and_heartbeat_inside_content(codec: ModuleType) -> None:
    # Content on one channel may be interleaved with frames of other channels.
    writer = codec.FrameWriter(frame_max=4096)
    writer.publish(1, "", "a", b"A" * 5000, {"message_id": "one"})
    one = split_frames(writer.take())
    writer.publish(2, "", "b", b"B" * 100)
    two = writer.take()
    writer.heartbeat()
    beat = writer.take()
    writer.ack(3, 9)
    ack = writer.take()

    def raw(f: tuple[int, int, bytes]) -> bytes:
        import struct

        return struct.pack(">BHI", f[0], f[1], len(f[2])) + f[2] + b"\xce"

    stream = raw(one[0]) + raw(one[1]) + raw(one[2]) + beat + two + ack + raw(one[3])
    events = codec.FrameReader().feed(stream)
    publish = {"ticket": 0, "exchange": "", "mandatory": False, "immediate": False}
    assert_events(
        events,
        [
            spec.Heartbeat(0),
            spec.ContentMethod(2, "basic.publish", dict(publish, routing_key="b"), {}, b"B" * 100),
            Method(3, "basic.ack", {"delivery_tag": 9, "multiple": False}),
            spec.ContentMethod(1, "basic.publish", dict(publish, routing_key="a"), {"message_id": "one"}, b"A" * 5000),
        ],
    )


def test_reader_limits_are_writable(codec: ModuleType) -> None:
    writer = codec.FrameWriter(frame_max=131072)
    writer.publish(1, "", "q", b"z" * 10000)
    data = writer.take()
    reader = codec.FrameReader(frame_max=4096)
    assert reader.frame_max == 4096
    reader.frame_max = 131072
    assert reader.frame_max == 131072
    reader.max_message_size = 10000
    assert reader.max_message_size == 10000
    (event,) = reader.feed(data)
    assert event.body == b"z" * 10000


def test_timestamp_property_is_utc_datetime(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    naive = datetime.datetime(2001, 2, 3, 4, 5, 6)
    writer.publish(1, "", "q", b"", {"timestamp": naive})
    (event,) = codec.FrameReader().feed(writer.take())
    stamp = event.properties["timestamp"]
    assert stamp == naive.replace(tzinfo=datetime.timezone.utc)
    assert stamp.utcoffset() == datetime.timedelta(0)


def test_large_body_reassembled(codec: ModuleType) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB in 257 frames
    writer = codec.FrameWriter(frame_max=4096)
    writer.publish(1, "", "q", body)
    data = writer.take()
    reader = codec.FrameReader(frame_max=4096)
    events = []
    for start in range(0, len(data), 65536):
        events.extend(reader.feed(data[start : start + 65536]))
    assert len(events) == 1
    assert events[0].body == body
