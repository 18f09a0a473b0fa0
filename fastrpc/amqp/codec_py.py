"""Pure-Python AMQP 0-9-1 frame codec (import ``fastrpc.amqp.codec``, which
chooses it or the compiled one).

``FrameReader`` turns bytes into events; ``FrameWriter`` turns requests into
bytes.  Neither does I/O.  Both are driven by the tables in ``spec`` so this
module and the compiled ``fastrpc._ext.codec`` share one definition of every
method and property.  The contract (and the offsets/reasons of every
``FrameError``) is documented in ``spec`` and docs/architecture.md.

Why one module of about 840 lines: it is one pass each way over the same
field types (decoders of tables, values and properties above
``FrameReader``, their encoders above ``FrameWriter``), driven by ``spec``'s
tables for every method and property, and it mirrors ``ext/codec.pyx``
function for function so the two are read and fuzzed side by side. Split
into a reader and a writer module, each half would still need the value
mapping the other holds (tables, arrays, decimals, timestamps), and every
field would cost a lookup across modules in the implementation that has no
compiler to bind them.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import struct
from collections.abc import Callable
from typing import Any, final

from fastrpc.amqp import spec
from fastrpc.amqp.spec import (
    BIT,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_OVERHEAD,
    LONG,
    LONGLONG,
    LONGSTR,
    MAX_TABLE_DEPTH,
    OCTET,
    SHORT,
    SHORTSTR,
    TABLE,
    TIMESTAMP,
    ContentMethod,
    Delivery,
    FrameError,
    Heartbeat,
    Method,
    MethodSpec,
    Returned,
)

__all__ = ["FrameReader", "FrameWriter", "PackedProperties"]

_U8 = struct.Struct(">B")
_I8 = struct.Struct(">b")
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_DECIMAL = struct.Struct(">Bi")
_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">HH")
_CONTENT_HEADER = struct.Struct(">HHQH")
_ACK = struct.Struct(">BHIHHQB")  # whole ack/nack/reject frame minus the end octet

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_ONE_SECOND = datetime.timedelta(seconds=1)
_FRAME_END_BYTE = bytes([FRAME_END])
_HEARTBEAT_FRAME = _FRAME_HEADER.pack(FRAME_HEARTBEAT, 0, 0) + _FRAME_END_BYTE
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_UNSIGNED_LIMITS = {OCTET: 0xFF, SHORT: 0xFFFF, LONG: 0xFFFFFFFF, LONGLONG: 0xFFFFFFFFFFFFFFFF}
_UNSIGNED_STRUCTS = {OCTET: _U8, SHORT: _U16, LONG: _U32, LONGLONG: _U64}

_DELIVER = spec.METHODS_BY_NAME["basic.deliver"]
_RETURN = spec.METHODS_BY_NAME["basic.return"]
_PUBLISH = spec.METHODS_BY_NAME["basic.publish"]


class _Bad(Exception):
    """Internal: a decode problem at a position relative to the parsed view."""

    def __init__(self, reason: str, pos: int) -> None:
        self.reason = reason
        self.pos = pos


# ---------------------------------------------------------------------------
# decoding helpers: (view, pos, end) -> (value, new pos); they never read past
# ``end`` and raise _Bad with the position of the read that would have.


def _need(pos: int, n: int, end: int, what: str) -> None:
    if n > end - pos:
        raise _Bad(f"truncated {what}", pos)


def _shortstr(mv: memoryview, pos: int, end: int, what: str) -> tuple[str, int]:
    # the hottest decoder: bounds checks inlined
    if pos >= end:
        raise _Bad(f"truncated {what}", pos)
    n = mv[pos]
    pos += 1
    if n > end - pos:
        raise _Bad(f"truncated {what}", pos)
    return str(mv[pos : pos + n], "utf-8", "surrogateescape"), pos + n


def _longstr(mv: memoryview, pos: int, end: int, what: str) -> tuple[bytes, int]:
    _need(pos, 4, end, what)
    n = _U32.unpack_from(mv, pos)[0]
    pos += 4
    _need(pos, n, end, what)
    return bytes(mv[pos : pos + n]), pos + n


def _timestamp(mv: memoryview, pos: int, end: int, what: str) -> tuple[datetime.datetime, int]:
    _need(pos, 8, end, what)
    seconds = _U64.unpack_from(mv, pos)[0]
    try:
        value = _EPOCH + datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise _Bad(f"{what} {seconds} out of range", pos) from None
    return value, pos + 8


def _table(mv: memoryview, pos: int, end: int, depth: int) -> tuple[dict[str, Any], int]:
    _need(pos, 4, end, "table length")
    n = _U32.unpack_from(mv, pos)[0]
    pos += 4
    _need(pos, n, end, "table")
    tend = pos + n
    result: dict[str, Any] = {}
    while pos < tend:
        key, pos = _shortstr(mv, pos, tend, "table key")
        value, pos = _value(mv, pos, tend, depth, "table value")
        result[key] = value
    return result, pos


def _array(mv: memoryview, pos: int, end: int, depth: int) -> tuple[list[Any], int]:
    _need(pos, 4, end, "array length")
    n = _U32.unpack_from(mv, pos)[0]
    pos += 4
    _need(pos, n, end, "array")
    aend = pos + n
    result: list[Any] = []
    while pos < aend:
        value, pos = _value(mv, pos, aend, depth, "array value")
        result.append(value)
    return result, pos


def _fixed(st: struct.Struct, what: str) -> Callable[[memoryview, int, int], tuple[Any, int]]:
    size = st.size
    unpack_from = st.unpack_from

    def read(mv: memoryview, pos: int, end: int) -> tuple[Any, int]:
        if size > end - pos:
            raise _Bad(f"truncated {what}", pos)
        return unpack_from(mv, pos)[0], pos + size

    return read


_FIXED_VALUE_READERS: dict[int, Callable[[memoryview, int, int], tuple[Any, int]]] = {
    ord("b"): _fixed(_I8, "short-short-int"),
    ord("B"): _fixed(_U8, "short-short-uint"),
    ord("s"): _fixed(_I16, "short-int"),
    ord("u"): _fixed(_U16, "short-uint"),
    ord("I"): _fixed(_I32, "long-int"),
    ord("i"): _fixed(_U32, "long-uint"),
    ord("l"): _fixed(_I64, "long-long-int"),
    ord("f"): _fixed(_F32, "float"),
    ord("d"): _fixed(_F64, "double"),
}


def _value(mv: memoryview, pos: int, end: int, depth: int, what: str) -> tuple[Any, int]:
    _need(pos, 1, end, what)
    kind = mv[pos]
    tpos = pos
    pos += 1
    if kind == 0x53:  # 'S'
        raw, pos = _longstr(mv, pos, end, "long string")
        try:
            return raw.decode("utf-8"), pos
        except UnicodeDecodeError:
            return raw, pos
    reader = _FIXED_VALUE_READERS.get(kind)
    if reader is not None:
        return reader(mv, pos, end)
    if kind == 0x74:  # 't'
        _need(pos, 1, end, "boolean")
        return mv[pos] != 0, pos + 1
    if kind == 0x46:  # 'F'
        if depth >= MAX_TABLE_DEPTH:
            raise _Bad(f"table nesting deeper than {MAX_TABLE_DEPTH} levels", tpos)
        return _table(mv, pos, end, depth + 1)
    if kind == 0x41:  # 'A'
        if depth >= MAX_TABLE_DEPTH:
            raise _Bad(f"table nesting deeper than {MAX_TABLE_DEPTH} levels", tpos)
        return _array(mv, pos, end, depth + 1)
    if kind == 0x56:  # 'V'
        return None, pos
    if kind == 0x78:  # 'x'
        return _longstr(mv, pos, end, "byte array")
    if kind == 0x54:  # 'T'
        return _timestamp(mv, pos, end, "timestamp")
    if kind == 0x44:  # 'D'
        _need(pos, 5, end, "decimal")
        scale, raw = _DECIMAL.unpack_from(mv, pos)
        return decimal.Decimal(raw).scaleb(-scale), pos + 5
    raise _Bad(f"bad field type {chr(kind)!r} (0x{kind:02x})", tpos)


# A decode plan is the method's field list with consecutive bits grouped, so
# the per-frame loop does no bit bookkeeping.
_Plan = tuple[tuple[str, Any], ...]


def _make_plan(fields: tuple[tuple[str, str], ...]) -> _Plan:
    plan: list[tuple[str, Any]] = []
    bits: list[str] = []
    for name, kind in fields:
        if kind == BIT:
            if len(bits) == 8:  # a ninth bit starts a new octet
                plan.append((BIT, tuple(bits)))
                bits = []
            bits.append(name)
            continue
        if bits:
            plan.append((BIT, tuple(bits)))
            bits = []
        plan.append((kind, name))
    if bits:
        plan.append((BIT, tuple(bits)))
    return tuple(plan)


_PLANS: dict[tuple[int, int], tuple[MethodSpec, _Plan]] = {
    key: (mspec, _make_plan(mspec.fields)) for key, mspec in spec.METHODS.items()
}


def _decode_fields(mv: memoryview, pos: int, end: int, plan: _Plan) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for kind, name in plan:
        if kind == SHORTSTR:
            args[name], pos = _shortstr(mv, pos, end, name)
        elif kind == BIT:
            _need(pos, 1, end, name[0])
            octet = mv[pos]
            pos += 1
            for i, bit_name in enumerate(name):
                args[bit_name] = bool(octet & (1 << i))
        elif kind == TABLE:
            args[name], pos = _table(mv, pos, end, 1)
        elif kind == LONGSTR:
            args[name], pos = _longstr(mv, pos, end, name)
        elif kind == TIMESTAMP:
            args[name], pos = _timestamp(mv, pos, end, name)
        else:
            st = _UNSIGNED_STRUCTS[kind]
            _need(pos, st.size, end, name)
            args[name] = st.unpack_from(mv, pos)[0]
            pos += st.size
    return args


_PROPERTY_FLAGS = tuple((1 << (15 - i), name, kind) for i, (name, kind) in enumerate(spec.BASIC_PROPERTIES))
_KNOWN_FLAGS = sum(flag for flag, _, _ in _PROPERTY_FLAGS)


def _decode_properties(mv: memoryview, pos: int, end: int, flags: int) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if not flags:
        return props
    if flags & 1:
        # Continuation words belong to properties basic does not have.
        raise _Bad("property flags continuation is not valid for class basic", pos - 2)
    if flags & ~_KNOWN_FLAGS:
        raise _Bad(f"unknown property flags 0x{flags:04x}", pos - 2)
    for flag, name, kind in _PROPERTY_FLAGS:
        if not flags & flag:
            continue
        if kind == SHORTSTR:
            props[name], pos = _shortstr(mv, pos, end, name)
        elif kind == TABLE:
            props[name], pos = _table(mv, pos, end, 1)
        elif kind == OCTET:
            _need(pos, 1, end, name)
            props[name] = mv[pos]
            pos += 1
        else:
            props[name], pos = _timestamp(mv, pos, end, name)
    return props


class _Pending:
    """A content method waiting for its header and body frames."""

    __slots__ = ("mspec", "args", "props", "body_size", "chunks", "received", "have_header")

    def __init__(self, mspec: MethodSpec, args: dict[str, Any]) -> None:
        self.mspec = mspec
        self.args = args
        self.props: dict[str, Any] = {}
        self.body_size = 0
        self.chunks: list[bytes] = []
        self.received = 0
        self.have_header = False


def _content_event(channel: int, pending: _Pending) -> spec.Event:
    chunks = pending.chunks
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    args = pending.args
    name = pending.mspec.name
    if name == "basic.deliver":
        return Delivery(
            channel,
            args["consumer_tag"],
            args["delivery_tag"],
            args["redelivered"],
            args["exchange"],
            args["routing_key"],
            pending.props,
            body,
        )
    if name == "basic.return":
        return Returned(
            channel,
            args["reply_code"],
            args["reply_text"],
            args["exchange"],
            args["routing_key"],
            pending.props,
            body,
        )
    return ContentMethod(channel, name, args, pending.props, body)


class FrameReader:
    """Incremental AMQP 0-9-1 frame parser: bytes in, events out."""

    def __init__(
        self, frame_max: int = spec.DEFAULT_FRAME_MAX, max_message_size: int = spec.DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        self.frame_max = frame_max
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0]
        self._pending: dict[int, _Pending] = {}
        self._error: FrameError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[spec.Event]:
        if self._error is not None:
            raise FrameError(
                f"reader unusable after earlier error: {self._error.reason}", self._error.channel, self._error.offset
            )
        buf = self._buf
        buffered = bool(buf)
        if buffered:
            buf += data
            mv = memoryview(buf)
        else:
            # Nothing buffered: parse the caller's bytes in place and keep only
            # the incomplete tail, so whole recvs are never copied.
            mv = memoryview(data)
            if mv.ndim != 1 or mv.format != "B":
                mv = mv.cast("B")
        events: list[spec.Event] = []
        try:
            pos = self._parse(mv, events)
            if not buffered:
                buf += mv[pos:]
        except FrameError as exc:
            self._error = exc
            raise
        finally:
            mv.release()
        if buffered and pos:
            del buf[:pos]  # drops the consumed prefix; CPython does this without a copy
        self._base += pos
        return events

    def _parse(self, mv: memoryview, events: list[spec.Event]) -> int:
        n = len(mv)
        pos = 0
        frame_max = self.frame_max
        pending = self._pending
        unpack_header = _FRAME_HEADER.unpack_from
        while n - pos >= 7:
            ftype, channel, size = unpack_header(mv, pos)
            if ftype not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT):
                if mv[pos : pos + 4] == b"AMQP":
                    # Only the 7 header bytes are sure to be there: the
                    # reason must not depend on how the stream was split.
                    raise FrameError(
                        f"broker answered with a protocol header (protocol {mv[pos + 4]}, version "
                        f"{mv[pos + 5]}-{mv[pos + 6]}): it does not speak AMQP 0-9-1",
                        None,
                        self._base + pos,
                    )
                raise FrameError(f"unknown frame type {ftype}", channel, self._base + pos)
            if size > frame_max - FRAME_OVERHEAD:
                raise FrameError(
                    f"frame of {size + FRAME_OVERHEAD} bytes exceeds frame_max {frame_max}", channel, self._base + pos
                )
            fend = pos + 7 + size
            if fend >= n:
                break
            if mv[fend] != FRAME_END:
                raise FrameError(f"bad frame-end octet 0x{mv[fend]:02x} (expected 0xce)", channel, self._base + fend)
            start = pos + 7
            try:
                if ftype == FRAME_METHOD:
                    self._method(mv, start, fend, channel, pos, events)
                elif ftype == FRAME_BODY:
                    state = pending.get(channel)
                    if state is None or not state.have_header:
                        self._orphan("content body", state, channel, pos)
                    else:
                        state.received += size
                        if state.received > state.body_size:
                            raise FrameError(
                                f"content body of {state.received} bytes exceeds the header's body size {state.body_size}",
                                channel,
                                self._base + pos,
                            )
                        state.chunks.append(bytes(mv[start:fend]))
                        if state.received == state.body_size:
                            del pending[channel]
                            events.append(_content_event(channel, state))
                elif ftype == FRAME_HEADER:
                    self._header(mv, start, fend, channel, pos, events)
                else:
                    events.append(Heartbeat(channel))
            except _Bad as bad:
                raise FrameError(bad.reason, channel, self._base + bad.pos) from None
            pos = fend + 1
        return pos

    def _method(
        self, mv: memoryview, start: int, end: int, channel: int, frame_pos: int, events: list[spec.Event]
    ) -> None:
        pending = self._pending
        if channel in pending:
            raise FrameError(
                f"method frame in the middle of content on channel {channel}", channel, self._base + frame_pos
            )
        if end - start < 4:
            raise _Bad("truncated method id", start if end - start < 2 else start + 2)
        class_id, method_id = _METHOD_ID.unpack_from(mv, start)
        entry = _PLANS.get((class_id, method_id))
        if entry is None:
            raise _Bad(f"unknown method (class {class_id}, method {method_id})", start)
        mspec, plan = entry
        args = _decode_fields(mv, start + 4, end, plan)
        if mspec.has_content:
            pending[channel] = _Pending(mspec, args)
        else:
            events.append(Method(channel, mspec.name, args))

    def _header(
        self, mv: memoryview, start: int, end: int, channel: int, frame_pos: int, events: list[spec.Event]
    ) -> None:
        state = self._pending.get(channel)
        if state is None or state.have_header:
            self._orphan("content header", state, channel, frame_pos)
            return
        size = end - start
        if size < _CONTENT_HEADER.size:
            # Report the first of class-id, weight, body-size, flags that overruns.
            for off, width, what in (
                (0, 2, "class id"),
                (2, 2, "weight"),
                (4, 8, "body size"),
                (12, 2, "property flags"),
            ):
                if off + width > size:
                    raise _Bad(f"truncated content header {what}", start + off)
        class_id, _weight, body_size, flags = _CONTENT_HEADER.unpack_from(mv, start)
        if class_id != state.mspec.class_id:
            raise _Bad(f"content header class {class_id} does not match method class {state.mspec.class_id}", start)
        if body_size > self.max_message_size:
            raise _Bad(f"body size {body_size} exceeds max_message_size {self.max_message_size}", start + 4)
        state.props = _decode_properties(mv, start + 14, end, flags)
        state.body_size = body_size
        state.have_header = True
        if body_size == 0:
            del self._pending[channel]
            events.append(_content_event(channel, state))

    def _orphan(self, what: str, state: _Pending | None, channel: int, frame_pos: int) -> None:
        if state is None:
            reason = f"{what} frame without a preceding content method"
        elif state.have_header:
            reason = f"unexpected {what} frame: content body expected"
        else:
            reason = f"unexpected {what} frame: content header expected"
        raise FrameError(reason, channel, self._base + frame_pos)


# ---------------------------------------------------------------------------
# encoding


def _enc_shortstr(buf: bytearray, value: Any, what: str) -> None:
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise TypeError(f"{what}: shortstr needs str, got {type(value).__name__}")
    if len(raw) > 255:
        raise ValueError(f"{what}: shortstr is {len(raw)} bytes, the limit is 255")
    buf.append(len(raw))
    buf += raw


def _enc_longstr(buf: bytearray, value: Any, what: str) -> None:
    if isinstance(value, str):
        raw: bytes | bytearray | memoryview = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = value
    else:
        raise TypeError(f"{what}: longstr needs bytes or str, got {type(value).__name__}")
    buf += _U32.pack(len(raw) if not isinstance(raw, memoryview) else raw.nbytes)
    buf += raw


def _timestamp_seconds(value: Any, what: str) -> int:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        seconds = (value - _EPOCH) // _ONE_SECOND
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise TypeError(f"{what}: timestamp needs datetime, got {type(value).__name__}")
    if not 0 <= seconds <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{what}: timestamp {value!r} is before 1970 or out of range")
    return seconds


def _enc_table(buf: bytearray, value: Any, what: str) -> None:
    if value is None:
        buf += b"\x00\x00\x00\x00"
        return
    if not isinstance(value, dict):
        raise TypeError(f"{what}: field table needs dict, got {type(value).__name__}")
    start = len(buf)
    buf += b"\x00\x00\x00\x00"
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{what}: table key {key!r} is not a str")
        _enc_shortstr(buf, key, f"{what} key {key!r}")
        _enc_value(buf, item, f"{what}[{key!r}]")
    _U32.pack_into(buf, start, len(buf) - start - 4)


def _enc_value(buf: bytearray, value: Any, what: str) -> None:
    # bool before int: bool is an int subclass.
    if isinstance(value, str):
        raw = value.encode("utf-8")
        buf += b"S"
        buf += _U32.pack(len(raw))
        buf += raw
    elif isinstance(value, bool):
        buf += b"t\x01" if value else b"t\x00"
    elif isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX:
            buf += b"I"
            buf += _I32.pack(value)
        elif _INT64_MIN <= value <= _INT64_MAX:
            buf += b"l"
            buf += _I64.pack(value)
        else:
            raise ValueError(f"{what}: integer {value} does not fit a signed 64-bit field")
    elif isinstance(value, dict):
        buf += b"F"
        _enc_table(buf, value, what)
    elif value is None:
        buf += b"V"
    elif isinstance(value, float):
        buf += b"d"
        buf += _F64.pack(value)
    elif isinstance(value, (list, tuple)):
        buf += b"A"
        start = len(buf)
        buf += b"\x00\x00\x00\x00"
        for i, item in enumerate(value):
            _enc_value(buf, item, f"{what}[{i}]")
        _U32.pack_into(buf, start, len(buf) - start - 4)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        buf += b"x"
        _enc_longstr(buf, value, what)
    elif isinstance(value, datetime.datetime):
        buf += b"T"
        buf += _U64.pack(_timestamp_seconds(value, what))
    elif isinstance(value, decimal.Decimal):
        buf += b"D"
        buf += _encode_decimal(value, what)
    else:
        raise TypeError(f"{what}: cannot encode {type(value).__name__} in a field table")


def _encode_decimal(value: decimal.Decimal, what: str) -> bytes:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"{what}: decimal {value} is not finite")
    mantissa = int("".join(map(str, digits)) or "0")
    if sign:
        mantissa = -mantissa
    if exponent > 0:
        mantissa *= 10**exponent
        exponent = 0
    scale = -exponent
    if scale > 255 or not _INT32_MIN <= mantissa <= _INT32_MAX:
        raise ValueError(f"{what}: decimal {value} needs scale <= 255 and a 32-bit mantissa")
    return _DECIMAL.pack(scale, mantissa)


def _enc_unsigned(buf: bytearray, value: Any, kind: str, what: str) -> None:
    if not isinstance(value, int):
        raise TypeError(f"{what}: {kind} needs int, got {type(value).__name__}")
    if not 0 <= value <= _UNSIGNED_LIMITS[kind]:
        raise ValueError(f"{what}: {value} out of range for {kind} (0..{_UNSIGNED_LIMITS[kind]})")
    buf += _UNSIGNED_STRUCTS[kind].pack(value)


def _encode_fields(buf: bytearray, mspec: MethodSpec, plan: _Plan, values: dict[str, Any]) -> None:
    unknown = set(values).difference(name for name, _ in mspec.fields)
    if unknown:
        raise TypeError(f"{mspec.name} has no field(s) {', '.join(sorted(unknown))}")
    get = values.get
    for kind, name in plan:
        if kind == BIT:
            octet = 0
            for i, bit_name in enumerate(name):
                if get(bit_name):
                    octet |= 1 << i
            buf.append(octet)
        elif kind == SHORTSTR:
            _enc_shortstr(buf, get(name, ""), f"{mspec.name}.{name}")
        elif kind == TABLE:
            _enc_table(buf, get(name), f"{mspec.name}.{name}")
        elif kind == LONGSTR:
            _enc_longstr(buf, get(name, b""), f"{mspec.name}.{name}")
        elif kind == TIMESTAMP:
            buf += _U64.pack(_timestamp_seconds(get(name, 0), f"{mspec.name}.{name}"))
        else:
            _enc_unsigned(buf, get(name, 0), kind, f"{mspec.name}.{name}")


@final
class PackedProperties:
    """Basic properties encoded once, for the messages that are all published
    with the same ones (an RPC driver's requests, replies and casts): a
    publish copies their bytes instead of reading the dict again. Immutable,
    and shared by every thread that publishes with it; not to be subclassed."""

    __slots__ = ("_data", "_fields")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("PackedProperties cannot be subclassed")

    def __init__(self, properties: dict[str, Any]) -> None:
        if getattr(self, "_data", None) is not None:
            raise TypeError("PackedProperties cannot be changed")
        if not isinstance(properties, dict):
            raise TypeError(f"properties must be a dict, not {type(properties).__name__}")
        buf = bytearray()
        _encode_properties(buf, properties)
        self._fields = copy.deepcopy(properties)  # tables (headers) included
        self._data = bytes(buf)

    @property
    def data(self) -> bytes:
        """The property flags and values, as a content header carries them."""
        return self._data

    @property
    def properties(self) -> dict[str, Any]:
        """A copy of the properties these bytes encode."""
        return copy.deepcopy(self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not PackedProperties:
            return NotImplemented
        return self._data == other._data

    def __hash__(self) -> int:
        return hash(self._data)

    def __repr__(self) -> str:
        return f"PackedProperties({self._fields!r})"


def _encode_properties(buf: bytearray, properties: dict[str, Any] | PackedProperties | None) -> None:
    if isinstance(properties, PackedProperties):
        buf += properties.data
        return
    start = len(buf)
    buf += b"\x00\x00"
    if not properties:
        return
    unknown = set(properties).difference(spec.BASIC_PROPERTY_NAMES)
    if unknown:
        raise ValueError(f"unknown basic properties: {', '.join(sorted(unknown))}")
    flags = 0
    for flag, name, kind in _PROPERTY_FLAGS:
        value = properties.get(name)
        if value is None:  # absent and None both mean "not sent"
            continue
        flags |= flag
        what = f"property {name}"
        if kind == SHORTSTR:
            _enc_shortstr(buf, value, what)
        elif kind == TABLE:
            _enc_table(buf, value, what)
        elif kind == OCTET:
            _enc_unsigned(buf, value, OCTET, what)
        else:
            buf += _U64.pack(_timestamp_seconds(value, what))
    _U16.pack_into(buf, start, flags)


def _check_channel(channel: int) -> None:
    if not isinstance(channel, int) or not 0 <= channel <= 0xFFFF:
        raise ValueError(f"channel {channel!r} is not in 0..65535")


class FrameWriter:
    """Encodes AMQP frames into an internal buffer; ``take()`` drains it."""

    def __init__(self, frame_max: int = spec.DEFAULT_FRAME_MAX) -> None:
        self.frame_max = frame_max
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def take(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def protocol_header(self) -> None:
        self._buf += spec.PROTOCOL_HEADER

    def heartbeat(self) -> None:
        self._buf += _HEARTBEAT_FRAME

    def method(self, channel: int, name: str, **fields: Any) -> None:
        mspec = spec.METHODS_BY_NAME.get(name)
        if mspec is None:
            raise ValueError(f"unknown AMQP method {name!r}")
        _check_channel(channel)
        self._write_method(channel, mspec, fields)

    def publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes | bytearray | memoryview,
        properties: dict[str, Any] | PackedProperties | None = None,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None:
        _check_channel(channel)
        buf = self._buf
        mark = len(buf)
        try:
            start = len(buf)
            buf += _FRAME_HEADER.pack(FRAME_METHOD, channel, 0)
            buf += b"\x00\x3c\x00\x28\x00\x00"  # basic.publish, ticket 0
            _enc_shortstr(buf, exchange, "basic.publish.exchange")
            _enc_shortstr(buf, routing_key, "basic.publish.routing_key")
            buf.append((1 if mandatory else 0) | (2 if immediate else 0))
            self._close_frame(start)
            self._write_content(channel, _PUBLISH.class_id, properties, body)
        except BaseException:
            del buf[mark:]
            raise

    def content(
        self,
        channel: int,
        name: str,
        args: dict[str, Any],
        properties: dict[str, Any] | PackedProperties | None,
        body: bytes | bytearray | memoryview,
    ) -> None:
        mspec = spec.METHODS_BY_NAME.get(name)
        if mspec is None:
            raise ValueError(f"unknown AMQP method {name!r}")
        if not mspec.has_content:
            raise ValueError(f"{name} does not carry content")
        _check_channel(channel)
        mark = len(self._buf)
        try:
            self._write_method(channel, mspec, dict(args or {}))
            self._write_content(channel, mspec.class_id, properties, body)
        except BaseException:
            del self._buf[mark:]
            raise

    def ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> None:
        self._write_ack(channel, 80, delivery_tag, 1 if multiple else 0)

    def nack(self, channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._write_ack(channel, 120, delivery_tag, (1 if multiple else 0) | (2 if requeue else 0))

    def reject(self, channel: int, delivery_tag: int, requeue: bool = True) -> None:
        self._write_ack(channel, 90, delivery_tag, 1 if requeue else 0)

    # -- internals --

    def _write_ack(self, channel: int, method_id: int, delivery_tag: int, bits: int) -> None:
        try:
            frame = _ACK.pack(FRAME_METHOD, channel, 13, 60, method_id, delivery_tag, bits)
        except struct.error:
            _check_channel(channel)
            raise ValueError(f"delivery_tag {delivery_tag!r} is not in 0..2**64-1") from None
        self._buf += frame
        self._buf.append(FRAME_END)

    def _write_method(self, channel: int, mspec: MethodSpec, fields: dict[str, Any]) -> None:
        buf = self._buf
        start = len(buf)
        try:
            buf += _FRAME_HEADER.pack(FRAME_METHOD, channel, 0)
            buf += _METHOD_ID.pack(mspec.class_id, mspec.method_id)
            _encode_fields(buf, mspec, _PLANS[(mspec.class_id, mspec.method_id)][1], fields)
            self._close_frame(start)
        except BaseException:
            del buf[start:]
            raise

    def _close_frame(self, start: int) -> None:
        buf = self._buf
        size = len(buf) - start - 7
        if size + FRAME_OVERHEAD > self.frame_max:
            raise ValueError(f"frame of {size + FRAME_OVERHEAD} bytes exceeds frame_max {self.frame_max}")
        _U32.pack_into(buf, start + 3, size)
        buf.append(FRAME_END)

    def _write_content(
        self, channel: int, class_id: int, properties: dict[str, Any] | PackedProperties | None, body: bytes | bytearray | memoryview
    ) -> None:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"body must be bytes, got {type(body).__name__}")
        view = memoryview(body)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        total = len(view)
        buf = self._buf
        start = len(buf)
        buf += _FRAME_HEADER.pack(FRAME_HEADER, channel, 0)
        buf += _U16.pack(class_id)
        buf += b"\x00\x00"
        buf += _U64.pack(total)
        _encode_properties(buf, properties)
        self._close_frame(start)
        chunk = self.frame_max - FRAME_OVERHEAD
        if chunk <= 0:
            raise ValueError(f"frame_max {self.frame_max} leaves no room for a body")
        pack_header = _FRAME_HEADER.pack
        for offset in range(0, total, chunk):
            part = view[offset : offset + chunk]
            buf += pack_header(FRAME_BODY, channel, len(part))
            buf += part
            buf.append(FRAME_END)
