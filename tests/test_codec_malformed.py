"""Malformed input: every case in the contract raises FrameError with the
channel, absolute stream offset and reason documented in ``spec``; arbitrary
garbage raises nothing else and allocates nothing from forged lengths."""

from __future__ import annotations

import struct
import tracemalloc
from types import ModuleType

import pytest
from codec_support import (
    HEARTBEAT,
    body_frame,
    check_frame_error,
    deliver_frame,
    frame,
    header_frame,
    method_frame,
    shortstr,
    table,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_golden import STREAM

from fastrpc.amqp import spec
from fastrpc.amqp.spec import FrameError

pytestmark = pytest.mark.twins

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

PREFIX = HEARTBEAT  # fed first, in its own call, so offsets must be absolute
BASE = len(PREFIX)  # stream offset of the bad frame
PAYLOAD = BASE + 7  # stream offset of the bad frame's payload



def fail_after_prefix(codec: ModuleType, bad: bytes, **limits: int) -> FrameError:
    reader = codec.FrameReader(**limits)
    assert reader.feed(PREFIX) == [spec.Heartbeat(0)]
    with pytest.raises(FrameError) as info:
        reader.feed(bad)
    return info.value


def declare(arguments: bytes, channel: int = 1) -> bytes:
    """queue.declare(queue "q") with a hand-encoded arguments table: the
    table's length field sits at payload + 9, its entries at payload + 13."""
    return method_frame(channel, 50, 10, b"\x00\x00" + shortstr("q") + b"\x00" + arguments)


TABLE_LEN = PAYLOAD + 9
TABLE_DATA = PAYLOAD + 13


# ---- frame level ------------------------------------------------------------


def test_bad_frame_end(codec: ModuleType) -> None:
    bad = frame(spec.FRAME_METHOD, 4, struct.pack(">HHQB", 60, 80, 1, 0), end=0x00)
    err = fail_after_prefix(codec, bad)
    check_frame_error(err, "frame_end", channel=4, offset=BASE + len(bad) - 1)


def test_bad_frame_end_on_heartbeat(codec: ModuleType) -> None:
    with pytest.raises(FrameError) as info:
        codec.FrameReader().feed(HEARTBEAT[:-1] + b"\xcf")
    check_frame_error(info.value, "frame_end", channel=0, offset=7)


def test_frame_over_frame_max_from_header_alone(codec: ModuleType) -> None:
    # 4089 + 8 = 4097 bytes: rejected before any payload arrives
    err = fail_after_prefix(codec, struct.pack(">BHI", spec.FRAME_METHOD, 5, 4089), frame_max=4096)
    check_frame_error(err, "frame_max", channel=5, offset=BASE)


def test_frame_exactly_frame_max_is_accepted(codec: ModuleType) -> None:
    entry = shortstr("k") + b"x" + struct.pack(">I", 4068) + b"\x00" * 4068
    data = declare(table(entry))
    assert len(data) == 4096
    reader = codec.FrameReader(frame_max=4096)
    assert reader.feed(data[:7]) == []
    (event,) = reader.feed(data[7:])
    assert event.args["arguments"] == {"k": b"\x00" * 4068}


def test_forged_huge_frame_size(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, struct.pack(">BHI", spec.FRAME_BODY, 1, 0xFFFFFFFF))
    check_frame_error(err, "frame_max", channel=1, offset=BASE)


def test_allowed_large_frame_is_not_preallocated(codec: ModuleType) -> None:
    # A frame size the reader must accept (frame_max is huge) only grows the
    # buffer as bytes arrive.
    reader = codec.FrameReader(frame_max=2**31 - 1, max_message_size=2**40)
    tracemalloc.start()
    try:
        assert reader.feed(struct.pack(">BHI", spec.FRAME_BODY, 1, 2**31 - 9) + b"\x00" * 100) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"feeding 107 bytes allocated {peak} bytes"


def test_unknown_frame_type(codec: ModuleType) -> None:
    for ftype in (0, 4, 7, 9, 0xFF):
        err = fail_after_prefix(codec, frame(ftype, 3, b""))
        check_frame_error(err, "frame_type", channel=3, offset=BASE)


def test_protocol_header_from_broker(codec: ModuleType) -> None:
    with pytest.raises(FrameError) as info:
        codec.FrameReader().feed(spec.PROTOCOL_HEADER)
    check_frame_error(info.value, "protocol_header", channel=None, offset=0)
    # Detected from the 7-byte frame header; the reason must not depend on
    # whether the 8th byte arrived in the same recv.
    with pytest.raises(FrameError) as seven:
        codec.FrameReader().feed(spec.PROTOCOL_HEADER[:7])
    assert (seven.value.reason, seven.value.channel, seven.value.offset) == (
        info.value.reason,
        info.value.channel,
        info.value.offset,
    )
    # An AMQP 1.0-only peer answers with its own header: same error.
    with pytest.raises(FrameError) as info:
        codec.FrameReader().feed(b"AMQP\x00\x01\x00\x00")
    check_frame_error(info.value, "protocol_header", channel=None, offset=0)


# ---- truncated fields -----------------------------------------------------


def test_truncated_method_id(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, frame(spec.FRAME_METHOD, 2, b""))
    check_frame_error(err, "truncated", channel=2, offset=PAYLOAD)
    err = fail_after_prefix(codec, frame(spec.FRAME_METHOD, 2, b"\x00\x3c"))
    check_frame_error(err, "truncated", channel=2, offset=PAYLOAD + 2)


def test_truncated_shortstr(codec: ModuleType) -> None:
    # basic.consume-ok: the tag claims 10 bytes, 3 follow; the read of the
    # string bytes starts right after the length octet.
    err = fail_after_prefix(codec, method_frame(1, 60, 21, b"\x0aabc"))
    check_frame_error(err, "truncated", channel=1, offset=PAYLOAD + 5)
    err = fail_after_prefix(codec, method_frame(1, 60, 21))  # no length octet at all
    check_frame_error(err, "truncated", channel=1, offset=PAYLOAD + 4)


def test_truncated_integer(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, method_frame(9, 60, 80, b"\x00\x00\x00\x01"))
    check_frame_error(err, "truncated", channel=9, offset=PAYLOAD + 4)
    # the bit octet after the delivery tag is missing
    err = fail_after_prefix(codec, method_frame(9, 60, 80, b"\x00" * 8))
    check_frame_error(err, "truncated", channel=9, offset=PAYLOAD + 12)


def test_truncated_longstr(codec: ModuleType) -> None:
    # connection.secure: a forged 4 GiB challenge inside a 12-byte frame
    err = fail_after_prefix(codec, method_frame(0, 10, 20, b"\xff\xff\xff\xf0abcd"))
    check_frame_error(err, "truncated", channel=0, offset=PAYLOAD + 8)


def test_truncated_table_length(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, declare(b"\x00\x00"))
    check_frame_error(err, "truncated", channel=1, offset=TABLE_LEN)


def test_table_longer_than_frame(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, declare(struct.pack(">I", 100) + b"\x01k"))
    check_frame_error(err, "truncated", channel=1, offset=TABLE_DATA)


def test_value_overrunning_its_table(codec: ModuleType) -> None:
    # The table says 5 bytes; its 'I' value needs 4 after the type octet but
    # only 2 remain inside the table (the frame itself has more bytes).
    err = fail_after_prefix(codec, declare(struct.pack(">I", 5) + b"\x01kI\x00\x00\x00\x07"))
    check_frame_error(err, "truncated", channel=1, offset=TABLE_DATA + 3)


def test_table_value_missing(codec: ModuleType) -> None:
    # a key with no type octet before the table ends
    err = fail_after_prefix(codec, declare(table(b"\x01k")))
    check_frame_error(err, "truncated", channel=1, offset=TABLE_DATA + 2)


def test_truncated_array_element(codec: ModuleType) -> None:
    # array of 3 bytes holding an 'S' whose length needs 4
    err = fail_after_prefix(codec, declare(table(b"\x01kA\x00\x00\x00\x03S\x00\x00")))
    check_frame_error(err, "truncated", channel=1, offset=TABLE_DATA + 8)


def test_truncated_content_header(codec: ModuleType) -> None:
    deliver = deliver_frame(channel=6)
    start = BASE + len(deliver)
    bad = frame(spec.FRAME_HEADER, 6, struct.pack(">HH", 60, 0) + b"\x00" * 6)
    err = fail_after_prefix(codec, deliver + bad)
    check_frame_error(err, "truncated", channel=6, offset=start + 7 + 4)


def test_truncated_property(codec: ModuleType) -> None:
    deliver = deliver_frame(channel=6)
    start = BASE + len(deliver)
    # content_type flagged, its shortstr length octet missing
    err = fail_after_prefix(codec, deliver + header_frame(6, 0, flags=0x8000))
    check_frame_error(err, "truncated", channel=6, offset=start + 7 + 14)
    # headers table flagged, claims more than the frame holds
    err = fail_after_prefix(codec, deliver + header_frame(6, 0, flags=0x2000, props=b"\x00\x00\x00\x09\x01k"))
    check_frame_error(err, "truncated", channel=6, offset=start + 7 + 18)


# ---- unknown ids and bad values ----------------------------------------------


@pytest.mark.parametrize(("class_id", "method_id"), [(60, 999), (99, 10), (0, 0), (10, 12)])
def test_unknown_method(codec: ModuleType, class_id: int, method_id: int) -> None:
    err = fail_after_prefix(codec, method_frame(7, class_id, method_id, b"\x00" * 8))
    check_frame_error(err, "unknown_method", channel=7, offset=PAYLOAD)


@pytest.mark.parametrize("code", [b"Z", b"\x00", b"L", b"U", b"?"])
def test_bad_table_field_type(codec: ModuleType, code: bytes) -> None:
    err = fail_after_prefix(codec, declare(table(b"\x01kI\x00\x00\x00\x01\x01m" + code + b"\x00" * 8)))
    check_frame_error(err, "field_type", channel=1, offset=TABLE_DATA + 9)


def test_bad_array_field_type(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, declare(table(b"\x01kA\x00\x00\x00\x02VZ")))
    check_frame_error(err, "field_type", channel=1, offset=TABLE_DATA + 8)


def test_bad_field_type_in_headers_property(codec: ModuleType) -> None:
    deliver = deliver_frame(channel=2)
    start = BASE + len(deliver)
    err = fail_after_prefix(codec, deliver + header_frame(2, 0, flags=0x2000, props=table(b"\x01kZ")))
    check_frame_error(err, "field_type", channel=2, offset=start + 7 + 14 + 4 + 2)


def nested_tables(levels: int) -> bytes:
    """A table nested ``levels`` deep, counting the outermost as level 1."""
    data = table(b"")
    for _ in range(levels - 1):
        data = table(b"\x01nF" + data)
    return data


def nested_arrays(levels: int) -> bytes:
    """An outermost table holding arrays of arrays: ``levels`` in all."""
    data = struct.pack(">I", 0)
    for _ in range(levels - 2):
        data = struct.pack(">I", len(data) + 1) + b"A" + data
    return table(b"\x01nA" + data)


def test_nesting_at_limit_is_accepted(codec: ModuleType) -> None:
    (event,) = codec.FrameReader().feed(declare(nested_tables(spec.MAX_TABLE_DEPTH)))
    value = event.args["arguments"]
    depth = 1
    while value:
        value = value["n"]
        depth += 1
    assert depth == spec.MAX_TABLE_DEPTH
    (event,) = codec.FrameReader().feed(declare(nested_arrays(spec.MAX_TABLE_DEPTH)))
    value = event.args["arguments"]["n"]
    depth = 2
    while value:
        (value,) = value
        depth += 1
    assert depth == spec.MAX_TABLE_DEPTH


def test_nesting_too_deep(codec: ModuleType) -> None:
    levels = spec.MAX_TABLE_DEPTH + 1
    # tables: level k's 'F' octet sits 7 bytes after level k-1's
    err = fail_after_prefix(codec, declare(nested_tables(levels)))
    check_frame_error(err, "nesting", channel=1, offset=TABLE_DATA + 2 + 7 * (levels - 2))
    # arrays: 5 bytes apart
    err = fail_after_prefix(codec, declare(nested_arrays(levels)))
    check_frame_error(err, "nesting", channel=1, offset=TABLE_DATA + 2 + 5 * (levels - 2))


def test_deep_nesting_does_not_recurse_unbounded(codec: ModuleType) -> None:
    # 20000 levels in one frame: a FrameError, not RecursionError or a crash
    inner = b"A\x00\x00\x00\x00"
    for _ in range(20000):
        inner = b"A" + struct.pack(">I", len(inner)) + inner
    err = fail_after_prefix(codec, declare(table(b"\x01n" + inner)), frame_max=1 << 20)
    check_frame_error(err, "nesting", channel=1)


# ---- content sequencing -----------------------------------------------------


def test_body_size_over_max_message_size(codec: ModuleType) -> None:
    deliver = deliver_frame(channel=3)
    start = BASE + len(deliver)
    err = fail_after_prefix(codec, deliver + header_frame(3, 1001), max_message_size=1000)
    check_frame_error(err, "max_message_size", channel=3, offset=start + 7 + 4)


def test_body_size_at_max_message_size_is_accepted(codec: ModuleType) -> None:
    reader = codec.FrameReader(max_message_size=1000)
    assert reader.feed(deliver_frame(channel=3) + header_frame(3, 1000)) == []
    (event,) = reader.feed(body_frame(3, b"a" * 600) + body_frame(3, b"b" * 400))
    assert event.body == b"a" * 600 + b"b" * 400


def test_forged_body_size_does_not_allocate(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, deliver_frame(channel=3) + header_frame(3, 2**64 - 1))
    check_frame_error(err, "max_message_size", channel=3)
    # a large body size the reader must accept is assembled from chunks
    reader = codec.FrameReader(max_message_size=2**62)
    tracemalloc.start()
    try:
        assert reader.feed(deliver_frame(channel=3) + header_frame(3, 2**62) + body_frame(3, b"x" * 100)) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"a 2**62-byte body size allocated {peak} bytes up front"


def test_body_larger_than_header_says(codec: ModuleType) -> None:
    head = deliver_frame(channel=3) + header_frame(3, 5)
    err = fail_after_prefix(codec, head + body_frame(3, b"123456"))
    check_frame_error(err, "body_size", channel=3, offset=BASE + len(head))
    first = body_frame(3, b"123")
    err = fail_after_prefix(codec, head + first + body_frame(3, b"456"))
    check_frame_error(err, "body_size", channel=3, offset=BASE + len(head) + len(first))


@pytest.mark.parametrize("orphan", ["header", "body"])
def test_content_frame_without_method(codec: ModuleType, orphan: str) -> None:
    bad = header_frame(4, 5) if orphan == "header" else body_frame(4, b"hello")
    err = fail_after_prefix(codec, bad)
    check_frame_error(err, "orphan", channel=4, offset=BASE)


def test_content_frame_on_other_channel_is_orphan(codec: ModuleType) -> None:
    deliver = deliver_frame(channel=1)
    err = fail_after_prefix(codec, deliver + header_frame(2, 5))
    check_frame_error(err, "orphan", channel=2, offset=BASE + len(deliver))


def test_content_completed_then_extra_body(codec: ModuleType) -> None:
    done = deliver_frame(channel=1) + header_frame(1, 2) + body_frame(1, b"ok")
    reader = codec.FrameReader()
    (event,) = reader.feed(done)
    assert event.body == b"ok"
    with pytest.raises(FrameError) as info:
        reader.feed(body_frame(1, b"!"))
    check_frame_error(info.value, "orphan", channel=1, offset=len(done))


def test_body_before_header(codec: ModuleType) -> None:
    deliver = deliver_frame(channel=5)
    err = fail_after_prefix(codec, deliver + body_frame(5, b"x"))
    check_frame_error(err, "unexpected", channel=5, offset=BASE + len(deliver))


def test_second_header(codec: ModuleType) -> None:
    head = deliver_frame(channel=5) + header_frame(5, 3)
    err = fail_after_prefix(codec, head + header_frame(5, 3))
    check_frame_error(err, "unexpected", channel=5, offset=BASE + len(head))


def test_method_in_middle_of_content(codec: ModuleType) -> None:
    ack = method_frame(5, 60, 80, b"\x00" * 9)
    head = deliver_frame(channel=5) + header_frame(5, 3) + body_frame(5, b"a")
    err = fail_after_prefix(codec, head + ack)
    check_frame_error(err, "mid_content", channel=5, offset=BASE + len(head))
    # before the header as well
    deliver = deliver_frame(channel=5)
    err = fail_after_prefix(codec, deliver + ack)
    check_frame_error(err, "mid_content", channel=5, offset=BASE + len(deliver))


def test_error_offsets_count_bytes_across_feeds(codec: ModuleType) -> None:
    # 1000 heartbeats fed one at a time, then a bad frame-end: the offset
    # counts every byte ever fed, not the reader's internal buffer position.
    reader = codec.FrameReader()
    for _ in range(1000):
        assert reader.feed(HEARTBEAT) == [spec.Heartbeat(0)]
    reader.feed(HEARTBEAT[:3])
    with pytest.raises(FrameError) as info:
        reader.feed(HEARTBEAT[3:7] + b"\x00")
    check_frame_error(info.value, "frame_end", channel=0, offset=1000 * 8 + 7)


def test_frame_error_is_value_error_and_keeps_fields(codec: ModuleType) -> None:
    err = fail_after_prefix(codec, frame(4, 3, b""))
    assert isinstance(err, ValueError)
    assert "offset 8" in str(err) and "channel 3" in str(err)


# ---- garbage ------------------------------------------------------------------


def feed_garbage(codec: ModuleType, data: bytes, cuts: list[int]) -> None:
    reader = codec.FrameReader(frame_max=65536, max_message_size=1 << 20)
    last = 0
    try:
        for cut in sorted(set(cuts)) + [len(data)]:
            if last <= cut <= len(data):
                events = reader.feed(data[last:cut])
                assert isinstance(events, list)
                last = cut
    except FrameError as err:
        assert isinstance(err.reason, str) and err.reason
        assert err.offset is None or 0 <= err.offset <= len(data)
        assert err.channel is None or 0 <= err.channel <= 65535


@SETTINGS
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=6))
def test_random_garbage_only_raises_frame_error(codec: ModuleType, data: bytes, cuts: list[int]) -> None:
    feed_garbage(codec, data, cuts)


@st.composite
def plausible_garbage(draw: st.DrawFn) -> bytes:
    """Valid frame headers around random payloads: reaches the field decoders."""
    parts = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        ftype = draw(st.sampled_from([1, 1, 1, 2, 3, 8]))
        channel = draw(st.integers(min_value=0, max_value=3))
        if ftype == 1:
            mspec = draw(st.sampled_from(list(spec.METHODS.values())))
            payload = struct.pack(">HH", mspec.class_id, mspec.method_id) + draw(st.binary(max_size=80))
        elif ftype == 2:
            payload = struct.pack(">HHQ", 60, 0, draw(st.integers(0, 300))) + draw(st.binary(max_size=80))
        else:
            payload = draw(st.binary(max_size=40))
        parts.append(frame(ftype, channel, payload))
    return b"".join(parts)


@SETTINGS
@given(data=plausible_garbage(), cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=4))
def test_plausible_garbage_only_raises_frame_error(codec: ModuleType, data: bytes, cuts: list[int]) -> None:
    feed_garbage(codec, data, cuts)


@SETTINGS
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(STREAM) - 1), st.integers(0, 255)), min_size=1, max_size=6
    ),
    cut=st.integers(min_value=0, max_value=len(STREAM)),
)
def test_corrupted_stream_only_raises_frame_error(codec: ModuleType, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(STREAM)
    for pos, value in edits:
        data[pos] = value
    feed_garbage(codec, bytes(data), [cut])


@SETTINGS
@given(
    data=st.binary(min_size=1, max_size=200),
    prefix=st.sampled_from([b"", HEARTBEAT, deliver_frame(), deliver_frame() + header_frame(1, 50)]),
)
def test_garbage_after_valid_prefix_is_consistent_across_splits(codec: ModuleType, data: bytes, prefix: bytes) -> None:
    # Whole or byte by byte, the same events come out and the same error (if any).
    stream = prefix + data

    def run(chunks: list[bytes]) -> tuple[list[object], tuple[str, int | None, int | None] | None]:
        reader = codec.FrameReader()
        events: list[object] = []
        try:
            for chunk in chunks:
                events.extend(reader.feed(chunk))
        except FrameError as err:
            return events, (err.reason, err.channel, err.offset)
        return events, None

    whole_events, whole_error = run([stream])
    bytewise_events, bytewise_error = run([stream[i : i + 1] for i in range(len(stream))])
    assert whole_error == bytewise_error
    if whole_error is None:
        assert whole_events == bytewise_events
    else:
        # a failing feed() returns nothing, so the whole feed has no events
        assert whole_events == []
