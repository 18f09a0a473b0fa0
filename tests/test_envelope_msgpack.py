"""msgpack bodies: the compiled envelope reads and writes them itself (ext/msgpack_codec.pxi).

Its bytes must be msgpack-python's (what the pure codec and every earlier
fastrpc peer write), what it reads must be what msgpack-python reads, and a
body msgpack-python refuses must be refused with the same reason. The pure
codec and msgpack-python are the reference throughout.
"""

from __future__ import annotations

import collections
import datetime
import enum
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrpc import envelope_py
from fastrpc.envelope_common import reject_ext, to_primitive
from fastrpc.envelope_py import MSGPACK, EnvelopeError

pytestmark = pytest.mark.twins

try:
    from fastrpc._ext import envelope as envelope_ext
except ImportError:  # test_envelope.py's test_compiled_envelope_loaded reports it
    envelope_ext = None

needs_ext = pytest.mark.skipif(envelope_ext is None, reason="compiled envelope not built")

HEAD = b"\x82\xacoslo.version\xa32.0\xacoslo.message"  # the standard envelope's first bytes


def _packb(value):
    """A body as msgpack-python writes it with the pure codec's options."""
    return msgpack.packb(value, default=to_primitive, use_bin_type=True, datetime=False)


def _unpackb(body):
    return msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=reject_ext, timestamp=0)


def _outcome(fn, *args):
    try:
        result = fn(*args)
    except EnvelopeError as exc:
        return ("error", exc.reason, exc.msg_id, exc.reply_q, exc.binary)
    return ("ok", type(result), repr(result))  # repr: types and order count


def _assert_same_reading(body):
    for name in ("decode_request", "decode_reply"):
        expected = _outcome(getattr(envelope_py, name), body, MSGPACK)
        assert _outcome(getattr(envelope_ext, name), body, MSGPACK) == expected, (name, body)


class Colour(enum.IntEnum):
    RED = 7


class Text(str):
    pass


class Mapping(dict):
    pass


Pair = collections.namedtuple("Pair", "a b")

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64)
    | st.floats() | st.text() | st.binary(max_size=40)
    | st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
                       -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
                       "x" * 31, "x" * 32, "x" * 255, "x" * 256, "é" * 40, b"y" * 255, b"y" * 256,
                       Colour.RED, Text("sub"), datetime.date(2026, 1, 2), {1, 2}, bytearray(b"ba"),
                       msgpack.Timestamp(5, 6), msgpack.ExtType(3, b"ext")]),
    lambda children: (st.lists(children, max_size=17) | st.tuples(children, children)
                      | st.dictionaries(st.text(max_size=12) | st.integers(-5, 5), children, max_size=17)
                      | st.builds(Pair, children, children)
                      | st.dictionaries(st.text(max_size=5), children, max_size=3).map(Mapping)),
    max_leaves=30,
)


# ---- writing -----------------------------------------------------------------------


@needs_ext
@settings(max_examples=400, deadline=None)
@given(args=st.dictionaries(st.text(max_size=12), _values, max_size=6),
       ctxt=st.none() | st.dictionaries(st.text(max_size=8), _values, max_size=3),
       call=st.booleans(), timeout=st.none() | st.integers(0, 3600) | st.floats(0, 60))
def test_requests_are_written_as_msgpack_python_writes_them(args, ctxt, call, timeout):
    message = {"method": "m", "args": args}
    fields = ("mid", "reply_q", timeout) if call else (None, None, None)
    outcomes = []
    for impl in (envelope_py, envelope_ext):
        try:
            outcomes.append(impl.encode_request(message, ctxt, "uid", *fields, binary=True))
        except EnvelopeError as exc:
            outcomes.append(("error", exc.reason))
    assert outcomes[1] == outcomes[0]


@needs_ext
@settings(max_examples=300, deadline=None)
@given(result=_values, failure=st.none() | st.text(max_size=20), ending=st.booleans())
def test_replies_are_written_as_msgpack_python_writes_them(result, failure, ending):
    outcomes = []
    for impl in (envelope_py, envelope_ext):
        try:
            outcomes.append(impl.encode_reply("mid", "uid", result, failure, ending, binary=True))
        except EnvelopeError as exc:
            outcomes.append(("error", exc.reason))
    assert outcomes[1] == outcomes[0]


@needs_ext
@pytest.mark.parametrize("message", [
    {"method": "m", "args": {}, "_unique_id": "theirs"},  # a key an added field replaces
    {"method": "m", "args": {}, "_timeout": 9, "_msg_id": "x"},
    {"method": "m", "args": {"k": object()}},  # refused by the default
    {"method": "m", "args": {"k": 2**64}},  # too large: the default refuses it too
    {"method": "m", "args": {"s": "\ud800"}},  # a lone surrogate has no UTF-8
])
@pytest.mark.parametrize("ctxt", [None, {"user": "u", 5: "five"}])
def test_unusual_requests_written_or_refused_alike(message, ctxt):
    outcomes = []
    for impl in (envelope_py, envelope_ext):
        try:
            outcomes.append(impl.encode_request(message, ctxt, "uid", "mid", "rq", 30, binary=True))
        except EnvelopeError as exc:
            outcomes.append(("error", exc.reason))
    assert outcomes[1] == outcomes[0]


@needs_ext
def test_default_result_that_still_cannot_be_written():
    class Odd:
        def to_dict(self):
            return object()

    for impl in (envelope_py, envelope_ext):
        with pytest.raises(EnvelopeError, match="can not serialize 'object' object"):
            impl.encode_reply("mid", "uid", Odd(), binary=True)


@needs_ext
def test_nesting_the_reader_refuses_is_refused_when_written():
    deep = 1
    for _ in range(1030):
        deep = [deep]
    with pytest.raises(EnvelopeError, match="recursion limit exceeded"):
        envelope_ext.encode_reply("mid", "uid", deep, binary=True)
    # as deep as the reader allows: the envelope, the reply's map, the result's 1022 lists
    deep = 1
    for _ in range(1022):
        deep = [deep]
    body = envelope_ext.encode_reply("mid", "uid", deep, binary=True)
    assert body == envelope_py.encode_reply("mid", "uid", deep, binary=True)
    value = envelope_ext.decode_reply(body, MSGPACK).result
    for _ in range(1022):  # (== on it would pass Python's recursion limit)
        assert type(value) is list and len(value) == 1
        value = value[0]
    assert value == 1


# ---- reading -----------------------------------------------------------------------


@needs_ext
@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(st.text(max_size=12), _values, max_size=6),
       ctxt=st.dictionaries(st.text(max_size=8), _values, max_size=3))
def test_requests_are_read_as_msgpack_python_reads_them(args, ctxt):
    try:
        body = envelope_py.encode_request({"method": "m", "args": args}, ctxt, "uid", "mid", "rq", 30,
                                          binary=True)
    except EnvelopeError:
        return  # not writable: the writing tests cover it
    _assert_same_reading(body)
    try:
        expected = _unpackb(body)["oslo.message"]["args"]
    except ValueError:  # an extension type in it: refused alike, as checked above
        return
    # repr: NaN is not equal to itself
    assert repr(envelope_ext.decode_request(body, MSGPACK).message["args"]) == repr(expected)


@needs_ext
@settings(max_examples=600, deadline=None)
@given(value=_values, cut=st.integers(0, 60), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                              max_size=3),
       tail=st.binary(max_size=3), enveloped=st.booleans())
def test_damaged_bodies_are_read_or_refused_as_msgpack_python_does(value, cut, flips, tail, enveloped):
    try:
        body = bytearray(_packb({"oslo.version": "2.0", "oslo.message": value} if enveloped else value))
    except (TypeError, ValueError, OverflowError):
        return
    for at, byte in flips:
        if at < len(body):
            body[at] = byte
    body = bytes(body[:len(body) - cut] if cut < len(body) else body) + tail
    _assert_same_reading(body)


@needs_ext
@settings(max_examples=600, deadline=None)
@given(rest=st.binary(max_size=40))
def test_random_bytes_after_the_envelope_head(rest):
    _assert_same_reading(HEAD + rest)
    _assert_same_reading(rest)


@needs_ext
@pytest.mark.parametrize("body, kind", [
    (b"", "ValueError"),  # nothing
    (HEAD, "ValueError"),  # the envelope without its message
    (HEAD + b"\x80\x01", "ExtraData"),
    (b"\xc1", "FormatError"),
    (HEAD + b"\x81\xa1m\xa2\xff\xfe", "UnicodeDecodeError"),
    (HEAD + b"\x81\x91\x01\x02", "TypeError"),  # a list as a key
    (HEAD + b"\x81\xa1m\xd4\x05\x01", "ValueError"),  # an extension type
    (HEAD + b"\x81\xa1m\xd5\xff\x00\x00", "ValueError"),  # a timestamp of a length it cannot have
    (HEAD + b"\xdd\xff\xff\xff\xf0\x01", "ValueError"),  # an array longer than the body
    (HEAD + b"\xdf\x00\x00\x00\x09" + b"\x01" * 10, "ValueError"),  # a map longer than half the body
    (HEAD + b"\xdb\x00\x00\x10\x00abc", "ValueError"),  # a string longer than the body
    (b"\x91" * 1024 + b"\x90", "StackError"),  # 1,025 containers
    (HEAD + b"\x91" * 1024 + b"\x01", "StackError"),  # 1,025 with the envelope
])
def test_reasons_for_invalid_bodies(body, kind):
    for impl in (envelope_py, envelope_ext):
        with pytest.raises(EnvelopeError, match=rf"^body is not valid msgpack \({kind}\)$") as info:
            impl.decode_request(body, MSGPACK)
        assert info.value.binary is True
    _assert_same_reading(body)


@needs_ext
def test_nesting_as_deep_as_msgpack_python_reads():
    inner = b"\x81\xa1m" + b"\x91" * 1021 + b"\x01"  # 1,024 containers with the envelope's map
    for body in (HEAD + inner, b"\x91" * 1023 + b"\x80"):
        _assert_same_reading(body)
    assert envelope_ext.decode_reply(HEAD + b"\x82\xa7_msg_id\xa1x\xa6result" + b"\x91" * 1021 + b"\x01",
                                     MSGPACK).result is not None


@needs_ext
def test_forged_lengths_allocate_nothing_large():
    # An array claiming four thousand million items in a small body is
    # refused before room for them is made (it would be 32 GB of pointers).
    for body in (b"\xdd\xff\xff\xff\xff" + b"\x01" * 64, HEAD + b"\xdd\x00\x01\x00\x00" + b"\xc0" * 60,
                 b"\xdf\xff\xff\xff\xff" + b"\x01" * 64):
        with pytest.raises(EnvelopeError, match="not valid msgpack"):
            envelope_ext.decode_request(body, MSGPACK)
    # a count within the body's size but beyond its bytes: items are read until they run out
    body = HEAD + b"\x81\xa1m\xdc\x00\x30" + b"\xa1\xff" + b"\x01" * 60
    _assert_same_reading(body)


@needs_ext
def test_timestamps_and_other_types_read_alike():
    for value in (msgpack.Timestamp(1, 2), msgpack.Timestamp(2**40, 999_999_999), 1.5, -2**63, 2**64 - 1,
                  b"\x00\xff", "é€😀", [], {}, {1: 2, None: 3, 1.5: 4, b"k": 5, -7: 6},
                  msgpack.Timestamp(0, 0)):
        body = _packb({"oslo.version": "2.0", "oslo.message": {"_msg_id": "m", "result": value}})
        _assert_same_reading(body)
        assert envelope_ext.decode_reply(body, MSGPACK).result == value
    float32 = HEAD + b"\x82\xa7_msg_id\xa1m\xa6result\xca\x3f\xc0\x00\x00"
    _assert_same_reading(float32)
    assert envelope_ext.decode_reply(float32, MSGPACK).result == 1.5


@needs_ext
def test_duplicate_keys_keep_the_last_value_in_the_first_place():
    body = HEAD + b"\x83\xa6method\xa1a\xa4args\x80\xa6method\xa1b"
    _assert_same_reading(body)
    assert list(envelope_ext.decode_request(body, MSGPACK).message.items()) == [("method", "b"), ("args", {})]


@needs_ext
def test_other_layouts_take_the_shared_rules():
    # the message first, a bare message, a version that is not 2.0, a message that is not a map
    bodies = [
        _packb({"oslo.message": {"method": "m", "args": {}}, "oslo.version": "2.0"}),
        _packb({"method": "m", "args": {}}),
        _packb({"oslo.version": "3.0", "oslo.message": {"method": "m"}}),
        HEAD + b"\x92\x01\x02",
        HEAD + b"\xa1x",
        _packb([1, 2]),
    ]
    for body in bodies:
        _assert_same_reading(body)
    assert envelope_ext.decode_request(bodies[0], MSGPACK).message == {"method": "m", "args": {}}
    with pytest.raises(EnvelopeError, match=r"oslo.message is not a mapping \(list\)"):
        envelope_ext.decode_request(HEAD + b"\x92\x01\x02", MSGPACK)


@needs_ext
@pytest.mark.parametrize("body_type", [bytearray, memoryview])
def test_bodies_other_than_bytes(body_type):
    body = envelope_ext.encode_request({"method": "m", "args": {"a": 1}}, None, "uid", binary=True)
    assert envelope_ext.decode_request(body_type(body), MSGPACK) == envelope_py.decode_request(body, MSGPACK)


@needs_ext
def test_known_keys_are_the_same_strings_every_time():
    body = envelope_ext.encode_request({"method": "m", "args": {}}, None, "uid", "mid", "rq", 5, binary=True)
    first = envelope_ext.decode_request(body, MSGPACK)
    second = envelope_ext.decode_request(body, MSGPACK)
    key = next(k for k in first.message if k == "method")
    assert key is next(k for k in second.message if k == "method")
    assert first == second == envelope_py.decode_request(body, MSGPACK)


# ---- values built to break the writer ------------------------------------------------


def _written(impl, fn):
    try:
        return fn(impl)
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return (type(exc).__name__, str(exc))


@needs_ext
@pytest.mark.parametrize("value", [
    tuple.__new__(msgpack.ExtType, (5,)),  # too short for its fields
    msgpack.ExtType(1, b"x")._replace(data=bytearray(b"y")),
    msgpack.Timestamp(2**63 - 1, 999_999_999), msgpack.Timestamp(-(2**63), 0), msgpack.Timestamp(2**34, 1),
    msgpack.Timestamp(2**32, 0), msgpack.Timestamp(2**32 - 1, 0), msgpack.Timestamp(-1, 5),
])
def test_extension_values_written_alike_without_reading_past_them(value):
    outcomes = [_written(impl, lambda m: m.encode_reply("m", "u", value, binary=True))
                for impl in (envelope_py, envelope_ext)]
    assert outcomes[1] == outcomes[0]


@needs_ext
@pytest.mark.parametrize("where", ["message", "args"])
def test_a_dict_changed_while_written_is_an_error_not_a_body(where):
    # A default call (a value's to_dict) that changes a dict being written:
    # the count already written would frame the body wrongly (and could make
    # its bytes read as another message).
    message: dict = {"method": "ping", "args": {}, "x": 1, "y": 2}

    class Meddler:
        def to_dict(self):
            if where == "args":
                message["args"]["method"] = "delete_all"
            else:
                message.pop("x", None)
            return 0

    message["args"]["o"] = Meddler()
    with pytest.raises(RuntimeError, match="changed size"):
        envelope_ext.encode_request(message, None, "uid", "mid", "rq", 5, binary=True)


# ---- the usual bodies read straight into their parts (ext/msgpack_fields.pxi) ----


def _request_body(message, ctxt=None, **fields):
    inner = {f"_context_{k}": v for k, v in (ctxt or {}).items()}
    inner.update(message)
    inner.update(fields)
    return _packb({"oslo.version": "2.0", "oslo.message": inner})


@needs_ext
@pytest.mark.parametrize("body, reply", [
    (_request_body({"method": "echo", "args": {"payload": "x"}, "namespace": None, "version": "1.0"},
                   {"user": "u", "réseau": [1, 2]}, _msg_id="m", _reply_q="r", _timeout=30,
                   _unique_id="u"), False),
    (_request_body({"method": "cast_only", "args": {}}, _unique_id="u"), False),  # a cast
    (_request_body({"method": "m", "args": {f"a{i}": i for i in range(20)}, "version": "2.3"},
                   {f"k{i}": i for i in range(20)}), False),  # a map16 at the top
    (_request_body({"method": "m", "args": {}, "x" * 40: b"\x00bytes"}), False),  # a str8 key
    (_request_body({"method": "m", "args": {}, "когда": datetime.datetime(2020, 1, 1)}), False),
    (_packb({"oslo.version": "2.0", "oslo.message": {"result": {"a": [1, 2.5]}, "failure": None,
                                                     "ending": True, "_msg_id": "m", "_unique_id": "u",
                                                     "extra": "ignored"}}), True),
    (_packb({"oslo.version": "2.0", "oslo.message": {"result": None, "failure": "{}",
                                                     "_msg_id": "m"}}), True),
])
def test_usual_bodies_are_read_straight_into_their_parts(body, reply):
    assert envelope_ext._msgpack_fields_read(body, reply) is True
    _assert_same_reading(body)


@needs_ext
@pytest.mark.parametrize("body, taken", [
    # keys of another type: at the top, among the arguments
    (HEAD + b"\x82\xa6method\xa1m\x05\xa1x", False),
    (_request_body({"method": "m", "args": {5: "five"}}), True),
    # fields of another type than senders write
    (_request_body({"method": "m", "args": {}, "namespace": 5}), True),
    (_request_body({"method": 5, "args": {}}), True),
    (_request_body({"method": "m", "args": None}), True),
    (_request_body({"method": "m", "args": {}}, _msg_id="m"), True),  # a call without its reply queue
    # repeated keys: the last value, in the first place
    (HEAD + b"\x84\xa6method\xa1a\xa7_msg_id\xa1m\xa4args\x80\xa7_msg_id\xa1n", True),
    (HEAD + b"\x83\xa6method\xa1a\xa4args\x80\xa6method\xa1b", True),
    # invalid UTF-8 in a key, in a context key, in a value
    (HEAD + b"\x82\xa6method\xa1m\xa2\xc3\x28\x01", False),
    (HEAD + b"\x82\xa6method\xa1m\xab_context_\xc3\x28\x01", False),
    (HEAD + b"\x82\xa6method\xa2\xc3\x28\xa4args\x80", False),
    # cut short, a byte too many, a count larger than the body
    (HEAD + b"\x82\xa6method\xa1m\xa4args", False),
    (HEAD + b"\x82\xa6method\xa1m\xa4args\x80\x00", False),
    (HEAD + b"\xdf\x7f\xff\xff\xff\xa6method", False),
    # an extension type other than the timestamp
    (HEAD + b"\x82\xa6method\xa1m\xa4args\xd4\x05\x00", False),
])
def test_bodies_the_parts_reader_takes_or_leaves_are_read_alike(body, taken):
    assert envelope_ext._msgpack_fields_read(body, False) is taken
    _assert_same_reading(body)


_TOP_KEYS = ["method", "args", "namespace", "version", "_msg_id", "_reply_q", "_timeout", "_unique_id",
             "result", "failure", "ending", "_context_", "_context_user", "_context_réseau", "_context_\U0001F600",
             "_context", "extra", "когда", "x" * 40]

# keys of another type (an int, nil, bin, an array), or a str that is not UTF-8
_OTHER_KEYS = [b"\x05", b"\xc0", b"\xc4\x06method", b"\x91\x01", b"\xa2\xc3\x28", b"\xab_context_\xed\xa0\x80"]

# the fields' values of the types senders write
_USUAL_VALUES = {
    "method": st.sampled_from(["m", "echo", "é"]),
    "args": st.dictionaries(st.text(max_size=6), _values, max_size=3),
    "namespace": st.none() | st.just("ns"),
    "version": st.none() | st.just("1.0"),
    "_msg_id": st.just("m"),
    "_reply_q": st.just("r"),
    "_timeout": st.none() | st.integers(0, 60) | st.floats(0, 60),
    "_unique_id": st.just("u"),
    "result": _values,
    "failure": st.none() | st.just("{}"),
    "ending": st.booleans(),
}

_any_values = (st.sampled_from(["m", "r", "", "1.0"]) | st.none() | st.booleans() | st.integers(-2, 40)
               | st.floats() | st.binary(max_size=3)
               | st.dictionaries(st.integers(-2, 2) | st.binary(max_size=2), st.none(), min_size=1, max_size=2)
               | _values)


@st.composite
def _top_level(draw):
    """A message's top level as (key, key width, value): usually a
    request's or a reply's fields, mostly of the types senders write, then
    any keys (context keys, the bare prefix, keys of other types, repeated
    ones) with values of any type."""
    names = draw(st.sampled_from([
        [], ["method", "args"], ["method", "_unique_id"],
        ["method", "args", "namespace", "version", "_msg_id", "_reply_q", "_timeout", "_unique_id"],
        ["result", "failure", "ending", "_msg_id", "_unique_id"], ["_msg_id", "result"],
    ]))
    names = draw(st.permutations(names + draw(st.lists(
        st.sampled_from(_TOP_KEYS) | st.text(max_size=12) | st.sampled_from(_OTHER_KEYS), max_size=4))))
    entries = []
    for name in names:
        values = _USUAL_VALUES.get(name) if draw(st.integers(0, 9)) else None
        width = draw(st.sampled_from([0, 0, 1, 2, 3]))
        entries.append((name, width, draw(_any_values if values is None else values)))
    return entries


def _str_head(n, width):
    """The head of a str of n bytes: a fixstr (width 0) where it fits, else
    a str 8, 16 or 32 (width 1, 2, 3), the smallest that holds n from there."""
    if width == 0 and n < 32:
        return bytes([0xA0 | n])
    if width <= 1 and n < 256:
        return b"\xd9" + struct.pack(">B", n)
    if width <= 2 and n < 65536:
        return b"\xda" + struct.pack(">H", n)
    return b"\xdb" + struct.pack(">I", n)


def _map_head(n, width):
    if width == 0 and n < 16:
        return bytes([0x80 | n])
    return b"\xde" + struct.pack(">H", n) if width <= 1 else b"\xdf" + struct.pack(">I", n)


@needs_ext
@settings(max_examples=500, deadline=None)
@given(entries=_top_level(), width=st.sampled_from([0, 0, 1, 2]), damaged=st.booleans(), cut=st.integers(0, 3),
       flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=2),
       tail=st.binary(max_size=2))
def test_top_levels_read_straight_or_left_are_read_as_msgpack_python_reads_them(entries, width, damaged, cut,
                                                                                  flips, tail):
    parts = []
    for key, key_width, value in entries:
        if isinstance(key, bytes):
            parts.append(key)
        else:
            raw = key.encode()
            parts.append(_str_head(len(raw), key_width) + raw)
        try:
            parts.append(_packb(value))
        except (TypeError, ValueError, OverflowError):
            parts.append(b"\xc0")
    body = HEAD + _map_head(len(entries), width) + b"".join(parts)
    if damaged:
        damage = bytearray(body)
        for at, byte in flips:
            if len(HEAD) + at < len(damage):
                damage[len(HEAD) + at] = byte
        body = bytes(damage[:len(damage) - cut]) + tail
    for reply in (False, True):
        assert envelope_ext._msgpack_fields_read(body, reply) in (True, False)
    _assert_same_reading(body)
