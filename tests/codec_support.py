"""Shared helpers for the codec test suite.

``CODECS`` lists the implementations under test ("py" always, "c" unless
``FASTRPC_NO_EXTENSIONS=1``, as read once by fastrpc._impl); ``load_codec``
imports one and fails the test, never skips it, when the compiled codec should
be there and is not. The ``codec`` fixture in conftest.py is built on these.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import re
import struct
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import strategies as st

from fastrpc._impl import NO_EXTENSIONS
from fastrpc.amqp import spec

_MODULES = {"py": "fastrpc.amqp.codec_py", "c": "fastrpc._ext.codec"}
CODECS: list[str] = ["py"] if NO_EXTENSIONS else ["py", "c"]


def load_codec(name: str) -> ModuleType:
    """Import the codec called ``name``; a missing extension fails the test."""
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        if name == "c":
            pytest.fail(
                "the compiled codec fastrpc._ext.codec is not built "
                f"({exc}); run `.venv/bin/python setup.py build_ext --inplace` "
                "or set FASTRPC_NO_EXTENSIONS=1 to test only the pure-Python codec",
                pytrace=False,
            )
        raise


# ---- reasons each FrameError must mention (see the table in spec.py) ------

REASONS: dict[str, str] = {
    "frame_end": r"frame-end",
    "frame_max": r"frame_max",
    "frame_type": r"unknown frame type",
    "protocol_header": r"protocol header",
    "truncated": r"truncated",
    "unknown_method": r"unknown method",
    "field_type": r"field type",
    "nesting": r"nesting",
    "max_message_size": r"max_message_size",
    "body_size": r"body size",
    "orphan": r"without",
    "unexpected": r"unexpected",
    "mid_content": r"middle of content",
}


def check_frame_error(
    err: BaseException, kind: str, channel: int | None | type[Ellipsis] = ..., offset: int | None = None
) -> None:
    """Assert ``err`` is a FrameError of ``kind`` at ``channel``/``offset``.

    ``channel=...`` skips the channel check (used where it is meaningless).
    """
    assert isinstance(err, spec.FrameError), f"expected FrameError, got {type(err).__name__}: {err}"
    assert isinstance(err, ValueError)
    pattern = REASONS[kind]
    assert re.search(pattern, err.reason, re.IGNORECASE), f"reason {err.reason!r} does not mention {pattern!r}"
    if channel is not ...:
        assert err.channel == channel, f"channel {err.channel!r} != {channel!r} ({err.reason})"
    if offset is not None:
        assert err.offset == offset, f"offset {err.offset!r} != {offset!r} ({err.reason})"


# ---- hand-encoding helpers for building malformed input ------------------


def frame(ftype: int, channel: int, payload: bytes, end: int = spec.FRAME_END) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes([end])


def method_frame(channel: int, class_id: int, method_id: int, args: bytes = b"") -> bytes:
    return frame(spec.FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)


def shortstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return bytes([len(raw)]) + raw


def longstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def table(entries: bytes) -> bytes:
    return struct.pack(">I", len(entries)) + entries


def deliver_frame(
    channel: int = 1, tag: int = 1, consumer_tag: str = "c", exchange: str = "", routing_key: str = "q"
) -> bytes:
    args = shortstr(consumer_tag) + struct.pack(">QB", tag, 0) + shortstr(exchange) + shortstr(routing_key)
    return method_frame(channel, 60, 60, args)


def header_frame(channel: int, body_size: int, flags: int = 0, props: bytes = b"", class_id: int = 60) -> bytes:
    return frame(spec.FRAME_HEADER, channel, struct.pack(">HHQH", class_id, 0, body_size, flags) + props)


def body_frame(channel: int, body: bytes) -> bytes:
    return frame(spec.FRAME_BODY, channel, body)


HEARTBEAT = bytes.fromhex("08 0000 00000000 ce")


def feed_chunks(reader: Any, data: bytes, cuts: Iterable[int]) -> list[Any]:
    """Feed ``data`` split at the sorted positions ``cuts``; return all events."""
    events: list[Any] = []
    last = 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            events.extend(reader.feed(data[last:cut]))
            last = cut
    events.extend(reader.feed(data[last:]))
    return events


def feed_bytewise(reader: Any, data: bytes) -> list[Any]:
    events: list[Any] = []
    for i in range(len(data)):
        events.extend(reader.feed(data[i : i + 1]))
    return events


# ---- strict equality: 1 == True and 1 == 1.0 must not pass -----------------


def assert_same(actual: Any, expected: Any, path: str = "value") -> None:
    if isinstance(expected, (bytes, bytearray)):
        assert isinstance(actual, bytes), f"{path}: {type(actual).__name__} is not bytes ({actual!r})"
        assert actual == bytes(expected), f"{path}: {actual!r} != {expected!r}"
        return
    if isinstance(expected, tuple) and not hasattr(expected, "_fields"):
        expected = list(expected)
    assert type(actual) is type(expected), (
        f"{path}: type {type(actual).__name__} != {type(expected).__name__} ({actual!r} vs {expected!r})"
    )
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    elif isinstance(expected, decimal.Decimal):
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, datetime.datetime):
        assert actual == expected and actual.utcoffset() == datetime.timedelta(0), f"{path}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def assert_events(actual: Sequence[Any], expected: Sequence[Any]) -> None:
    assert len(actual) == len(expected), f"{len(actual)} events, expected {len(expected)}: {actual!r}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert type(a) is type(e), f"event {i}: {type(a).__name__} != {type(e).__name__}"
        assert_same(list(a), list(e), f"event {i}")


# ---- hypothesis strategies -------------------------------------------------

UTC = datetime.timezone.utc


# 63 characters are at most 252 utf-8 bytes: always a valid shortstr
shortstrs = st.text(max_size=63)
short_texts = st.text(max_size=20)
longstrs = st.binary(max_size=300)
timestamps = st.integers(min_value=0, max_value=253402300799).map(
    lambda s: datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=s)
)
decimals = st.builds(
    lambda mantissa, scale: decimal.Decimal(mantissa).scaleb(-scale),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.integers(min_value=0, max_value=30),
)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    decimals,
    st.text(max_size=40),
    st.binary(max_size=40),
    st.none(),
    timestamps,
)
table_keys = st.text(max_size=40)
table_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(table_keys, inner, max_size=4),
    max_leaves=12,
)
tables = st.dictionaries(table_keys, table_values, max_size=6)

UNSIGNED_MAX = {spec.OCTET: 0xFF, spec.SHORT: 0xFFFF, spec.LONG: 0xFFFFFFFF, spec.LONGLONG: 0xFFFFFFFFFFFFFFFF}


def field_strategy(kind: str) -> st.SearchStrategy[Any]:
    if kind == spec.BIT:
        return st.booleans()
    if kind in UNSIGNED_MAX:
        return st.integers(min_value=0, max_value=UNSIGNED_MAX[kind])
    if kind == spec.SHORTSTR:
        return shortstrs
    if kind == spec.LONGSTR:
        return longstrs
    if kind == spec.TABLE:
        return tables
    if kind == spec.TIMESTAMP:
        return timestamps
    raise AssertionError(f"no strategy for {kind}")


def args_strategy(mspec: spec.MethodSpec) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: field_strategy(kind) for name, kind in mspec.fields})


PROPERTY_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    name: (st.integers(min_value=0, max_value=255) if kind == spec.OCTET else field_strategy(kind))
    for name, kind in spec.BASIC_PROPERTIES
}
# keep headers small enough for one 4096-byte header frame
PROPERTY_STRATEGIES["headers"] = st.dictionaries(short_texts, scalars, max_size=5)
PROPERTY_STRATEGIES.update({name: short_texts for name, kind in spec.BASIC_PROPERTIES if kind == spec.SHORTSTR})
properties_strategy = st.fixed_dictionaries({}, optional=PROPERTY_STRATEGIES)


def expected_args(mspec: spec.MethodSpec, args: dict[str, Any]) -> dict[str, Any]:
    """The args a reader reports for ``args`` written by a writer."""
    out = {}
    for name, kind in mspec.fields:
        value = args[name]
        out[name] = value.encode() if kind == spec.LONGSTR and isinstance(value, str) else value
    return out


def content_event(channel: int, name: str, args: dict[str, Any], props: dict[str, Any], body: bytes) -> Any:
    if name == "basic.deliver":
        return spec.Delivery(
            channel,
            args["consumer_tag"],
            args["delivery_tag"],
            args["redelivered"],
            args["exchange"],
            args["routing_key"],
            props,
            body,
        )
    if name == "basic.return":
        return spec.Returned(
            channel, args["reply_code"], args["reply_text"], args["exchange"], args["routing_key"], props, body
        )
    return spec.ContentMethod(channel, name, args, props, body)


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Independent frame splitter for checking writer output layout."""
    frames = []
    pos = 0
    while pos < len(data):
        ftype, channel, size = struct.unpack_from(">BHI", data, pos)
        assert data[pos + 7 + size] == spec.FRAME_END
        frames.append((ftype, channel, data[pos + 7 : pos + 7 + size]))
        pos += 8 + size
    assert pos == len(data)
    return frames
