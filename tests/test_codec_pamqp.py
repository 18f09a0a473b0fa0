"""Differential tests against pamqp, an independent AMQP 0-9-1 implementation.

Frames we write must decode in pamqp to the same values, and frames pamqp
writes must decode in ours.  Strategies stay inside what pamqp itself accepts
(its name validation, float32 floats, unsigned decimals on decode, timestamps
before 2106) so a difference is a real disagreement about the wire format.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from types import ModuleType
from typing import Any

import pamqp.body
import pamqp.commands
import pamqp.frame
import pamqp.header
import pamqp.heartbeat
import pytest
from codec_support import assert_events, assert_same, content_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_golden import GOLDEN

from fastrpc.amqp import spec
from fastrpc.amqp.spec import Method

pytestmark = [pytest.mark.twins, pytest.mark.filterwarnings("ignore:This command is deprecated:DeprecationWarning")]
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
UTC = datetime.timezone.utc
PAMQP_CLASS: dict[tuple[int, int], Any] = {}
for _index, _cls in pamqp.commands.INDEX_MAPPING.items():
    PAMQP_CLASS[(_index >> 16, _index & 0xFFFF)] = _cls
PAMQP_FIELD = {"type": "exchange_type"}  # our name -> pamqp attribute
PAMQP_PROPERTY = {"type": "message_type"}
# fields pamqp insists on (deprecated or reserved ones)
PAMQP_FIXED = {
    "connection.open": {"capabilities": "", "insist": False},
    "connection.open-ok": {"known_hosts": ""},
    "channel.open": {"out_of_band": "0"},
    "channel.open-ok": {"channel_id": b"0"},
    "basic.get-empty": {"cluster_id": ""},
}
NAME_FIELDS = {"exchange", "queue", "destination", "source"}



def pamqp_frames(data: bytes) -> list[tuple[int, Any]]:
    frames = []
    pos = 0
    while pos < len(data):
        used, channel, value = pamqp.frame.unmarshal(data[pos:])
        frames.append((channel, value))
        pos += used
    return frames


def normalize(value: Any) -> Any:
    """pamqp's decoded values in the shapes our reader uses."""
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def float32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


# -- values both directions agree on --
# (pamqp reads the decimal mantissa with its own struct; negative ones are
# exercised in the golden vector, which pamqp decodes too)
names = st.from_regex(r"[A-Za-z0-9_.:\-]{0,40}", fullmatch=True)
texts = st.text(max_size=30)
small_stamps = st.integers(min_value=0, max_value=0xFFFFFFFF).map(
    lambda s: datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=s)
)
unsigned_decimals = st.builds(
    lambda m, s: decimal.Decimal(m).scaleb(-s),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=0, max_value=20),
)
common_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    texts,
    st.none(),
    small_stamps,
    unsigned_decimals,
)


def value_tables(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=10
    )
    return st.dictionaries(texts, values, max_size=5)


# ours -> pamqp: doubles and bytes are fine (pamqp decodes 'd' and 'x')
our_tables = value_tables(st.one_of(common_scalars, st.floats(allow_nan=False), st.binary(max_size=20)))
# pamqp -> ours: pamqp writes floats as float32 and only bytearray as 'x'
pamqp_tables = value_tables(
    st.one_of(
        common_scalars,
        st.floats(width=32, allow_nan=False, allow_infinity=False),
        st.binary(max_size=20).map(bytearray),
        st.builds(
            lambda m, s: decimal.Decimal(m).scaleb(-s),
            st.integers(min_value=-(2**31), max_value=2**31 - 1),
            st.integers(0, 20),
        ),
    )
)


def field_values(
    mspec: spec.MethodSpec, tables: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for name, kind in mspec.fields:
        if name == "ticket":
            parts[name] = st.just(0)
        elif kind == spec.BIT:
            parts[name] = st.booleans()
        elif kind in (spec.OCTET, spec.SHORT, spec.LONG, spec.LONGLONG):
            # pamqp reads longlong as signed, the spec says unsigned: stay below 2**63
            bits = {spec.OCTET: 8, spec.SHORT: 16, spec.LONG: 32, spec.LONGLONG: 63}[kind]
            parts[name] = st.integers(min_value=0, max_value=2**bits - 1)
        elif kind == spec.SHORTSTR:
            parts[name] = names if name in NAME_FIELDS else texts
        elif kind == spec.LONGSTR:
            parts[name] = st.text(max_size=40).map(str.encode)
        else:
            parts[name] = tables
    for name, value in PAMQP_FIXED.get(mspec.name, {}).items():
        parts[name] = st.just(value)
    return st.fixed_dictionaries(parts)


@st.composite
def methods(
    draw: st.DrawFn, tables: st.SearchStrategy[dict[str, Any]], content: bool = False
) -> tuple[spec.MethodSpec, dict[str, Any]]:
    choices = [m for m in spec.METHODS.values() if m.has_content == content]
    mspec = draw(st.sampled_from(choices))
    return mspec, draw(field_values(mspec, tables))


def pamqp_properties(props: dict[str, Any]) -> pamqp.commands.Basic.Properties:
    return pamqp.commands.Basic.Properties(**{PAMQP_PROPERTY.get(k, k): v for k, v in props.items()})


property_values = st.fixed_dictionaries(
    {},
    optional={
        name: (
            st.integers(min_value=1, max_value=2)
            if name == "delivery_mode"
            else st.integers(min_value=0, max_value=9)
            if kind == spec.OCTET
            else small_stamps
            if kind == spec.TIMESTAMP
            else value_tables(common_scalars)
            if kind == spec.TABLE
            else st.text(min_size=1, max_size=20)
        )
        for name, kind in spec.BASIC_PROPERTIES
    },
)


def check_pamqp_method(value: Any, mspec: spec.MethodSpec, args: dict[str, Any]) -> None:
    assert type(value) is PAMQP_CLASS[(mspec.class_id, mspec.method_id)]
    for name, kind in mspec.fields:
        got = normalize(getattr(value, PAMQP_FIELD.get(name, name)))
        want = args[name]
        if kind == spec.LONGSTR:
            got = got.encode() if isinstance(got, str) else got
        assert got == want, f"{mspec.name}.{name}: pamqp {got!r} != {want!r}"


# ---- ours -> pamqp ----------------------------------------------------------


def test_pamqp_reads_golden_vectors() -> None:
    for name, data, events in GOLDEN:
        frames = pamqp_frames(data)
        if name == "heartbeat":
            assert isinstance(frames[0][1], pamqp.heartbeat.Heartbeat)
            continue
        (event,) = events
        channel, value = frames[0]
        assert channel == event.channel
        if isinstance(event, Method):
            mspec = spec.METHODS_BY_NAME[event.name]
            check_pamqp_method(value, mspec, event.args)
        else:
            header = frames[1][1]
            assert header.body_size == len(event.body)
            assert b"".join(v.value for _, v in frames[2:]) == event.body


@SETTINGS
@given(channel=st.integers(min_value=0, max_value=65535), method=methods(our_tables))
def test_pamqp_decodes_our_methods(
    codec: ModuleType, channel: int, method: tuple[spec.MethodSpec, dict[str, Any]]
) -> None:
    mspec, args = method
    writer = codec.FrameWriter()
    writer.method(channel, mspec.name, **args)
    ((got_channel, value),) = pamqp_frames(writer.take())
    assert got_channel == channel
    check_pamqp_method(value, mspec, args)


@SETTINGS
@given(
    channel=st.integers(min_value=1, max_value=65535),
    exchange=names,
    routing_key=texts,
    props=property_values,
    body=st.binary(max_size=10000),
    mandatory=st.booleans(),
)
def test_pamqp_decodes_our_publish(
    codec: ModuleType,
    channel: int,
    exchange: str,
    routing_key: str,
    props: dict[str, Any],
    body: bytes,
    mandatory: bool,
) -> None:
    writer = codec.FrameWriter(frame_max=4096)
    writer.publish(channel, exchange, routing_key, body, props, mandatory=mandatory)
    frames = pamqp_frames(writer.take())
    assert {c for c, _ in frames} == {channel}
    method, header = frames[0][1], frames[1][1]
    assert isinstance(method, pamqp.commands.Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory, method.immediate) == (
        exchange,
        routing_key,
        mandatory,
        False,
    )
    assert isinstance(header, pamqp.header.ContentHeader)
    assert header.class_id == 60 and header.body_size == len(body)
    for name, _ in spec.BASIC_PROPERTIES:
        got = getattr(header.properties, PAMQP_PROPERTY.get(name, name))
        if name in props:
            assert normalize(got) == props[name], name
        else:
            assert got in (None, ""), name
    bodies = [v for _, v in frames[2:]]
    assert all(isinstance(b, pamqp.body.ContentBody) and len(b.value) <= 4088 for b in bodies)
    assert b"".join(b.value for b in bodies) == body


# ---- pamqp -> ours ----------------------------------------------------------


@SETTINGS
@given(channel=st.integers(min_value=0, max_value=65535), method=methods(pamqp_tables))
def test_we_decode_pamqp_methods(
    codec: ModuleType, channel: int, method: tuple[spec.MethodSpec, dict[str, Any]]
) -> None:
    mspec, args = method
    cls = PAMQP_CLASS[(mspec.class_id, mspec.method_id)]
    kwargs = {
        PAMQP_FIELD.get(k, k): (args[k].decode() if kind == spec.LONGSTR else args[k]) for k, kind in mspec.fields
    }
    data = pamqp.frame.marshal(cls(**kwargs), channel)
    expected = dict(args)
    for name, kind in mspec.fields:
        if kind == spec.TABLE:
            expected[name] = _as_we_decode(args[name])
    assert_events(codec.FrameReader().feed(data), [Method(channel, mspec.name, expected)])


def _as_we_decode(value: Any) -> Any:
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: _as_we_decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_we_decode(v) for v in value]
    return value


@SETTINGS
@given(
    channel=st.integers(min_value=1, max_value=65535),
    method=methods(pamqp_tables, content=True),
    props=property_values,
    body=st.binary(max_size=10000),
)
def test_we_decode_pamqp_content(
    codec: ModuleType, channel: int, method: tuple[spec.MethodSpec, dict[str, Any]], props: dict[str, Any], body: bytes
) -> None:
    mspec, args = method
    props = {k: v for k, v in props.items() if k != "cluster_id"}  # pamqp refuses to write it
    cls = PAMQP_CLASS[(mspec.class_id, mspec.method_id)]
    kwargs = {PAMQP_FIELD.get(k, k): v for k, v in args.items()}
    data = pamqp.frame.marshal(cls(**kwargs), channel)
    data += pamqp.frame.marshal(pamqp.header.ContentHeader(0, len(body), pamqp_properties(props)), channel)
    for start in range(0, len(body), 4088):
        data += pamqp.frame.marshal(pamqp.body.ContentBody(body[start : start + 4088]), channel)
    data += pamqp.frame.marshal(pamqp.heartbeat.Heartbeat(), 0)
    events = codec.FrameReader(frame_max=4096).feed(data)
    assert_events(events, [content_event(channel, mspec.name, args, props, body), spec.Heartbeat(0)])


@SETTINGS
@given(value=st.floats(width=32, allow_nan=False))
def test_we_decode_pamqp_float32(codec: ModuleType, value: float) -> None:
    data = pamqp.frame.marshal(pamqp.commands.Queue.Declare(queue="q", arguments={"f": value}), 1)
    (event,) = codec.FrameReader().feed(data)
    assert_same(event.args["arguments"], {"f": float32(value)})
