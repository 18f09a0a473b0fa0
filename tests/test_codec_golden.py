"""Golden frame vectors: exact bytes, written out by hand, in both directions."""

from __future__ import annotations

import datetime
import decimal
import tracemalloc
from types import ModuleType

import pytest
from codec_support import (
    HEARTBEAT,
    assert_events,
    assert_same,
    feed_bytewise,
    load_codec,
    split_frames,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrpc.amqp import spec
from fastrpc.amqp.spec import ContentMethod, Delivery, Heartbeat, Method

pytestmark = pytest.mark.twins

UTC = datetime.timezone.utc


def h(text: str) -> bytes:
    """Hex with spaces and newlines allowed, for readable vectors."""
    return bytes.fromhex("".join(text.split()))


# ---- the vectors ----------------------------------------------------------

# basic.publish(exchange "", routing_key "rpc") + header + body "hello" on channel 1
PUBLISH = h(
    """
    01 0001 0000000c  003c 0028  0000  00  03 727063  00  ce
    02 0001 00000020  003c 0000 0000000000000005 9000
       10 6170706c69636174696f6e2f6a736f6e  02  ce
    03 0001 00000005  68656c6c6f  ce
    """
)
PUBLISH_EVENT = ContentMethod(
    1,
    "basic.publish",
    {"ticket": 0, "exchange": "", "routing_key": "rpc", "mandatory": False, "immediate": False},
    {"content_type": "application/json", "delivery_mode": 2},
    b"hello",
)

# basic.deliver with all 14 basic properties (flags 0xfffc), body "hi"
DELIVER_ALL = h(
    """
    01 0001 00000018  003c 003c  04 63746167  0000000000000001  01  02 6578  02 726b  ce
    02 0001 00000051  003c 0000 0000000000000002 fffc
       0a 746578742f706c61696e
       05 7574662d38
       00000008 01 6b 53 00000001 76
       02
       05
       02 6331
       01 72
       05 3630303030
       01 6d
       000000006553f100
       01 74
       05 6775657374
       03 617070
       02 636c
       ce
    03 0001 00000002  6869  ce
    """
)
ALL_PROPERTIES = {
    "content_type": "text/plain",
    "content_encoding": "utf-8",
    "headers": {"k": "v"},
    "delivery_mode": 2,
    "priority": 5,
    "correlation_id": "c1",
    "reply_to": "r",
    "expiration": "60000",
    "message_id": "m",
    "timestamp": datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    "type": "t",
    "user_id": "guest",
    "app_id": "app",
    "cluster_id": "cl",
}
DELIVER_ALL_EVENT = Delivery(1, "ctag", 1, True, "ex", "rk", ALL_PROPERTIES, b"hi")

# queue.declare(queue "q") whose arguments hold every field type the reader knows
ALL_TYPES_TABLE = h(
    """
    01 0001 0000009e  0032 000a  0000  01 71  00
    00000091
      01 74  74 01
      01 62  62 ff
      01 42  42 ff
      01 73  73 fffe
      01 75  75 fffe
      01 49  49 fffffffd
      01 69  69 fffffffd
      01 6c  6c fffffffffffffffc
      01 66  66 3fc00000
      01 64  64 4004000000000000
      01 44  44 02 ffffff85
      01 53  53 00000003 e282ac
      02 5332  53 00000002 fffe
      01 78  78 00000003 000102
      01 41  41 0000000b  49 00000001  53 00000001 61
      01 54  54 000000006553f100
      01 46  46 00000003  01 6e 56
      01 56  56
    ce
    """
)
ALL_TYPES_VALUES = {
    "t": True,
    "b": -1,
    "B": 255,
    "s": -2,
    "u": 65534,
    "I": -3,
    "i": 4294967293,
    "l": -4,
    "f": 1.5,
    "d": 2.5,
    "D": decimal.Decimal("-1.23"),
    "S": "\u20ac",
    "S2": b"\xff\xfe",  # not utf-8: stays bytes
    "x": b"\x00\x01\x02",
    "A": [1, "a"],
    "T": datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    "F": {"n": None},
    "V": None,
}
ALL_TYPES_EVENT = Method(
    1,
    "queue.declare",
    {
        "ticket": 0,
        "queue": "q",
        "passive": False,
        "durable": False,
        "exclusive": False,
        "auto_delete": False,
        "nowait": False,
        "arguments": ALL_TYPES_VALUES,
    },
)

# connection.start the way RabbitMQ 3.12 sends it on channel 0
CONNECTION_START = (
    h("01 0000 000001fd  000a 000a  00 09")
    + h("000001d8")
    + b"\x0ccapabilities" + b"F" + h("000000c7")
    + b"\x12publisher_confirms" + b"t\x01"
    + b"\x1aexchange_exchange_bindings" + b"t\x01"
    + b"\x0abasic.nack" + b"t\x01"
    + b"\x16consumer_cancel_notify" + b"t\x01"
    + b"\x12connection.blocked" + b"t\x01"
    + b"\x13consumer_priorities" + b"t\x01"
    + b"\x1cauthentication_failure_close" + b"t\x01"
    + b"\x10per_consumer_qos" + b"t\x01"
    + b"\x0fdirect_reply_to" + b"t\x01"
    + b"\x0ccluster_name" + b"S" + h("0000000e") + b"rabbit@fastrpc"
    + b"\x09copyright" + b"S" + h("0000003d") + b"Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries."
    + b"\x0binformation" + b"S" + h("00000039") + b"Licensed under the MPL 2.0. Website: https://rabbitmq.com"
    + b"\x08platform" + b"S" + h("00000013") + b"Erlang/OTP 25.3.2.8"
    + b"\x07product" + b"S" + h("00000008") + b"RabbitMQ"
    + b"\x07version" + b"S" + h("00000006") + b"3.12.1"
    + h("0000000e") + b"AMQPLAIN PLAIN"
    + h("00000005") + b"en_US"
    + h("ce")
)  # fmt: skip
CONNECTION_START_EVENT = Method(
    0,
    "connection.start",
    {
        "version_major": 0,
        "version_minor": 9,
        "server_properties": {
            "capabilities": {
                "publisher_confirms": True,
                "exchange_exchange_bindings": True,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "connection.blocked": True,
                "consumer_priorities": True,
                "authentication_failure_close": True,
                "per_consumer_qos": True,
                "direct_reply_to": True,
            },
            "cluster_name": "rabbit@fastrpc",
            "copyright": "Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries.",
            "information": "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
            "platform": "Erlang/OTP 25.3.2.8",
            "product": "RabbitMQ",
            "version": "3.12.1",
        },
        "mechanisms": b"AMQPLAIN PLAIN",
        "locales": b"en_US",
    },
)

ACK_MULTIPLE = h("01 0001 0000000d  003c 0050  000000000000002a  01  ce")
ACK_MULTIPLE_EVENT = Method(1, "basic.ack", {"delivery_tag": 42, "multiple": True})

GOLDEN = [
    ("heartbeat", HEARTBEAT, [Heartbeat(0)]),
    ("publish", PUBLISH, [PUBLISH_EVENT]),
    ("deliver_all_properties", DELIVER_ALL, [DELIVER_ALL_EVENT]),
    ("table_all_types", ALL_TYPES_TABLE, [ALL_TYPES_EVENT]),
    ("connection_start", CONNECTION_START, [CONNECTION_START_EVENT]),
    ("ack_multiple", ACK_MULTIPLE, [ACK_MULTIPLE_EVENT]),
]
STREAM = b"".join(data for _, data, _ in GOLDEN)
STREAM_EVENTS = [event for _, _, events in GOLDEN for event in events]


# ---- decoding -------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in GOLDEN], ids=[n for n, _, _ in GOLDEN])
def test_golden_decode(codec: ModuleType, data: bytes, expected: list[object]) -> None:
    reader = codec.FrameReader()
    assert_events(reader.feed(data), expected)
    assert reader.feed(b"") == []


def test_golden_vectors_are_well_formed() -> None:
    # The independent splitter agrees on frame boundaries (guards typos in sizes).
    assert [f[0] for f in split_frames(STREAM)] == [8, 1, 2, 3, 1, 2, 3, 1, 1, 1]


def test_table_type_codes_cover_contract() -> None:
    # Every decode type the contract lists appears in the vector.
    assert {k[0] for k in ALL_TYPES_VALUES} == set("tbBsuIilfdDSxATFV")


def test_stream_whole(codec: ModuleType) -> None:
    assert_events(codec.FrameReader().feed(STREAM), STREAM_EVENTS)


def test_stream_byte_by_byte(codec: ModuleType) -> None:
    reader = codec.FrameReader()
    assert_events(feed_bytewise(reader, STREAM), STREAM_EVENTS)


def test_stream_accepts_bytearray_and_memoryview(codec: ModuleType) -> None:
    reader = codec.FrameReader()
    half = len(STREAM) // 2
    events = reader.feed(bytearray(STREAM[:half])) + reader.feed(memoryview(STREAM)[half:])
    assert_events(events, STREAM_EVENTS)


def test_reader_copies_fed_buffer(codec: ModuleType) -> None:
    # A connection reuses its recv buffer: mutating it after feed() must not
    # change pending state or returned events.
    reader = codec.FrameReader()
    buf = bytearray(PUBLISH)
    first = reader.feed(memoryview(buf)[:20])
    buf[:] = b"\x00" * len(buf)
    rest = reader.feed(PUBLISH[20:])
    assert first == []
    assert_events(rest, [PUBLISH_EVENT])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_stream_random_splits(codec: ModuleType, cuts: list[int]) -> None:
    from codec_support import feed_chunks

    assert_events(feed_chunks(codec.FrameReader(), STREAM, cuts), STREAM_EVENTS)


# ---- encoding -------------------------------------------------------------


def test_write_heartbeat_and_protocol_header(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.protocol_header()
    writer.heartbeat()
    assert len(writer) == 16
    assert writer.take() == b"AMQP\x00\x00\x09\x01" + HEARTBEAT
    assert len(writer) == 0
    assert writer.take() == b""


def test_write_publish(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.publish(1, "", "rpc", b"hello", {"content_type": "application/json", "delivery_mode": 2})
    assert writer.take() == PUBLISH


def test_write_deliver_all_properties(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    args = {"consumer_tag": "ctag", "delivery_tag": 1, "redelivered": True, "exchange": "ex", "routing_key": "rk"}
    writer.content(1, "basic.deliver", args, dict(ALL_PROPERTIES), b"hi")
    assert writer.take() == DELIVER_ALL


def test_write_connection_start(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.method(0, "connection.start", **CONNECTION_START_EVENT.args)
    assert writer.take() == CONNECTION_START


def test_write_ack_nack_reject(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.ack(1, 42, multiple=True)
    assert writer.take() == ACK_MULTIPLE
    writer.ack(7, 1)
    assert writer.take() == h("01 0007 0000000d 003c 0050 0000000000000001 00 ce")
    writer.nack(1, 2**64 - 1, multiple=True, requeue=False)
    assert writer.take() == h("01 0001 0000000d 003c 0078 ffffffffffffffff 01 ce")
    writer.nack(1, 3)  # requeue defaults to True
    assert writer.take() == h("01 0001 0000000d 003c 0078 0000000000000003 02 ce")
    writer.reject(2, 9)
    assert writer.take() == h("01 0002 0000000d 003c 005a 0000000000000009 01 ce")
    writer.reject(2, 9, requeue=False)
    assert writer.take() == h("01 0002 0000000d 003c 005a 0000000000000009 00 ce")


def test_write_ack_equals_generic_method(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.ack(3, 12345, multiple=True)
    writer.nack(3, 6, multiple=False, requeue=True)
    writer.reject(3, 7, requeue=False)
    fast = writer.take()
    writer.method(3, "basic.ack", delivery_tag=12345, multiple=True)
    writer.method(3, "basic.nack", delivery_tag=6, requeue=True)
    writer.method(3, "basic.reject", delivery_tag=7, requeue=False)
    assert writer.take() == fast


# The encode side of the value mapping: int -> I or l, float -> d, etc.
ENCODED_TABLE = h(
    """
    01 0001 00000084  0032 000a  0000  01 71  02
    00000077
      01 61  74 01
      01 62  49 00000007
      01 63  6c 0000000080000000
      01 64  49 80000000
      01 65  64 3ff8000000000000
      01 66  44 02 0000013a
      01 67  53 00000002 c3a9
      01 68  78 00000001 01
      01 69  41 00000006  49 00000001  56
      01 6a  46 00000008  01 6b 53 00000001 76
      01 6c  56
      01 6d  54 000000006553f100
      01 6e  41 00000005  49 00000002
    ce
    """
)


def test_write_table_value_mapping(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    arguments = {
        "a": True,
        "b": 7,
        "c": 2**31,
        "d": -(2**31),
        "e": 1.5,
        "f": decimal.Decimal("3.14"),
        "g": "\u00e9",
        "h": b"\x01",
        "i": [1, None],
        "j": {"k": "v"},
        "l": None,
        "m": datetime.datetime(2023, 11, 14, 22, 13, 20),  # naive means UTC
        "n": (2,),
    }
    writer.method(1, "queue.declare", queue="q", durable=True, arguments=arguments)
    assert writer.take() == ENCODED_TABLE
    (event,) = codec.FrameReader().feed(ENCODED_TABLE)
    expected = dict(arguments, m=datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), n=[2])
    assert_same(event.args["arguments"], expected)


def test_write_bytearray_and_aware_datetime(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    writer.method(
        1,
        "queue.declare",
        queue="q",
        durable=True,
        arguments={"h": bytearray(b"\x01"), "m": datetime.datetime(2023, 11, 15, 0, 13, 20, tzinfo=plus_two)},
    )
    assert writer.take() == h(
        """
        01 0001 00000020  0032 000a  0000  01 71  02
        00000013
          01 68  78 00000001 01
          01 6d  54 000000006553f100
        ce
        """
    )


def test_write_defaults(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.method(1, "queue.declare")
    assert writer.take() == h("01 0001 0000000c  0032 000a  0000  00  00  00000000  ce")
    writer.method(0, "connection.start-ok")
    assert writer.take() == h("01 0000 0000000e  000a 000b  00000000  00  00000000  00  ce")
    writer.method(0, "connection.tune-ok", channel_max=2047, frame_max=131072, heartbeat=60)
    assert writer.take() == h("01 0000 0000000c  000a 001f  07ff  00020000  003c  ce")
    writer.method(5, "channel.close-ok")
    assert writer.take() == h("01 0005 00000004  0014 0029  ce")


def test_write_longstr_from_str_and_bytes(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.method(0, "connection.start-ok", mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US")
    text = writer.take()
    writer.method(0, "connection.start-ok", mechanism="PLAIN", response=b"\x00guest\x00guest", locale="en_US")
    assert writer.take() == text
    assert text == h("01 0000 00000024  000a 000b  00000000  05 504c41494e") + h(
        "0000000c 006775657374 006775657374  05 656e5f5553  ce"
    )
    (event,) = codec.FrameReader().feed(text)
    assert_same(event.args["response"], b"\x00guest\x00guest")


def test_bits_pack_into_octets(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.method(1, "queue.declare", queue="", passive=True, exclusive=True, nowait=True, arguments={})
    assert writer.take() == h("01 0001 0000000c  0032 000a  0000  00  15  00000000  ce")
    writer.method(1, "basic.nack", delivery_tag=1, multiple=True, requeue=False)
    assert writer.take() == h("01 0001 0000000d  003c 0078  0000000000000001  01  ce")


def test_shortstr_surrogateescape(codec: ModuleType) -> None:
    # A non-utf-8 consumer tag decodes with surrogateescape and encodes back.
    data = h("01 0001 00000006  003c 0015  01 ff  ce")
    (event,) = codec.FrameReader().feed(data)
    assert event == Method(1, "basic.consume-ok", {"consumer_tag": "\udcff"})
    writer = codec.FrameWriter()
    writer.method(1, "basic.consume-ok", consumer_tag="\udcff")
    assert writer.take() == data


def test_empty_body_has_no_body_frame(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.publish(2, "x", "", b"")
    data = writer.take()
    assert data == h(
        """
        01 0002 0000000a  003c 0028  0000  01 78  00  00  ce
        02 0002 0000000e  003c 0000 0000000000000000 0000  ce
        """
    )
    assert_events(
        codec.FrameReader().feed(data),
        [
            ContentMethod(
                2,
                "basic.publish",
                {"ticket": 0, "exchange": "x", "routing_key": "", "mandatory": False, "immediate": False},
                {},
                b"",
            )
        ],
    )


def test_publish_flags(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.publish(1, "", "", b"", mandatory=True, immediate=True)
    frames = split_frames(writer.take())
    assert frames[0] == (1, 1, h("003c 0028 0000 00 00 03"))
    writer.publish(1, "", "", b"", mandatory=True)
    assert split_frames(writer.take())[0] == (1, 1, h("003c 0028 0000 00 00 01"))


def test_publish_splits_body_by_frame_max(codec: ModuleType) -> None:
    writer = codec.FrameWriter(frame_max=4096)
    body = bytes(range(256)) * 40  # 10240 bytes
    writer.publish(1, "", "q", body)
    frames = split_frames(writer.take())
    assert [(t, c, len(p)) for t, c, p in frames] == [(1, 1, 10), (2, 1, 14), (3, 1, 4088), (3, 1, 4088), (3, 1, 2064)]
    assert b"".join(p for t, _, p in frames if t == 3) == body
    writer.frame_max = 8192  # writable after tune
    writer.publish(1, "", "q", body)
    frames = split_frames(writer.take())
    assert [len(p) for t, _, p in frames if t == 3] == [8184, 2056]
    writer.frame_max = 4096
    writer.publish(1, "", "q", body[:4088])  # exactly one full frame
    assert [len(p) for t, _, p in split_frames(writer.take()) if t == 3] == [4088]


def test_publish_accepts_bytearray_and_memoryview(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.publish(1, "", "rpc", bytearray(b"hello"), {"content_type": "application/json", "delivery_mode": 2})
    writer.publish(1, "", "rpc", memoryview(b"xhellox")[1:6], {"content_type": "application/json", "delivery_mode": 2})
    assert writer.take() == PUBLISH * 2


def test_several_frames_accumulate_until_take(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    writer.heartbeat()
    writer.publish(1, "", "rpc", b"hello", {"content_type": "application/json", "delivery_mode": 2})
    writer.ack(1, 42, multiple=True)
    assert len(writer) == len(HEARTBEAT) + len(PUBLISH) + len(ACK_MULTIPLE)
    assert writer.take() == HEARTBEAT + PUBLISH + ACK_MULTIPLE


def test_writer_gives_back_big_buffers(codec: ModuleType) -> None:
    """One writer lives per thread per connection: after a big message its
    buffer must not stay allocated (at most ~256 KiB is kept)."""
    writer = codec.FrameWriter()
    tracemalloc.start()
    try:
        writer.publish(1, "", "q", b"x" * (2 << 20))
        out = writer.take()
        assert len(out) > 2 << 20
        del out
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < 300 * 1024, kept
    # and it still works afterwards
    writer.heartbeat()
    assert writer.take() == HEARTBEAT


def test_impl_selects_compiled_codec() -> None:
    import fastrpc._impl as impl
    from fastrpc.amqp import codec

    if impl.NO_EXTENSIONS:
        from fastrpc.amqp import codec_py

        assert impl.COMPILED_MODULES["fastrpc.amqp.codec"] is False
        assert codec.FrameReader is codec_py.FrameReader
        assert codec.FrameWriter is codec_py.FrameWriter
    else:
        assert impl.COMPILED_MODULES["fastrpc.amqp.codec"] is True, (
            "FASTRPC_NO_EXTENSIONS is not set but fastrpc._impl fell back to the pure-Python codec: build the extension"
        )
        compiled = load_codec("c")
        assert codec.FrameReader is compiled.FrameReader
        assert codec.FrameWriter is compiled.FrameWriter


def test_spec_tables_are_consistent() -> None:
    assert len(spec.BASIC_PROPERTIES) == 14
    for (class_id, method_id), mspec in spec.METHODS.items():
        assert (mspec.class_id, mspec.method_id) == (class_id, method_id)
        assert spec.METHODS_BY_NAME[mspec.name] is mspec
