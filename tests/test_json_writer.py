"""The compiled envelope's own JSON writer (ext/json_writer.pxi).

It writes the usual values straight into the envelope's quoted string; its
bytes must be orjson's for the same value, quoted as the envelope quotes
them, and every other value must be left to orjson (whose bytes and errors
the pure codec gives). A writer that left everything to orjson would pass
the byte checks alone, so the usual values are also checked to be written
by it.
"""

from __future__ import annotations

import collections

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrpc import envelope_py
from fastrpc._ext import envelope as envelope_ext
from fastrpc.envelope_py import JSON, EnvelopeError


def quoted(value) -> bytes:
    """orjson's JSON of `value`, quoted as the envelope's string is."""
    return orjson.dumps(value).replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def check_value(value):
    """The writer's bytes for `value`, checked against orjson's."""
    mine = envelope_ext._json_written(value)
    if mine is not None:
        assert mine == quoted(value), value
    return mine


_ascii = st.text(alphabet=st.characters(max_codepoint=127), max_size=40)
# What the writer takes: exact containers with ASCII str keys, ASCII str,
# 64-bit int, bool, None.
_written = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _ascii,
    lambda children: (st.lists(children, max_size=4) | st.lists(children, max_size=3).map(tuple)
                      | st.dictionaries(_ascii, children, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(value=_written)
def test_writes_what_orjson_writes(value):
    assert check_value(value) is not None, value


def _nested(depth):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


class Text(str):
    pass


class Number(int):
    pass


@pytest.mark.parametrize("value", [
    1.5, float("nan"), [1, 2.5], {"a": -0.0},  # floats: orjson's
    "\u00e9", ["\u20ac"], {"\U0001f600": 1},  # not ASCII
    2**63, -(2**63) - 1, 2**64 - 1, 2**64, [2**70],  # beyond 64 bits signed
    Text("x"), Number(1), [Text("x")], {Text("k"): 1}, collections.OrderedDict(a=1),  # subclasses
    {1: "a"}, {None: 1}, {(1, 2): 3},  # keys not str
    b"bytes", {1, 2}, object(),
    _nested(70),  # deeper than the writer goes
])
def test_leaves_other_values_to_orjson(value):
    assert envelope_ext._json_written(value) is None


def test_every_ascii_character_and_block_boundaries():
    every = "".join(chr(i) for i in range(128))
    assert check_value(every) is not None
    for special in ('"', "\\", "\n", "\x00", "\x1f", "\x7f", '\\"'):
        for offset in range(40):
            assert check_value("a" * offset + special + "b" * (40 - offset)) is not None
    long = ('x"\\\n' * 5000) + "y" * 70000  # past the first buffer, escapes throughout
    assert check_value(long) is not None
    assert check_value({"k" * 3000: ["\x01" * 3000]}) is not None
    assert check_value(_nested(62)) is not None


def _outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except EnvelopeError as exc:
        return ("error", exc.reason)


@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(_ascii, _written, max_size=4),
       extra=st.dictionaries(st.sampled_from(["_msg_id", "_reply_q", "_timeout", "_unique_id", "_x", "x"]),
                             _written, max_size=2),
       result=_written | st.floats() | st.text(max_size=5),
       call=st.booleans(), timeout=st.none() | st.integers(0, 100))
def test_bodies_are_the_pure_codecs(args, extra, result, call, timeout):
    message = {"method": "m", "args": args, **extra}
    ids = ("m1", "reply_q1", timeout) if call else ()
    body = _outcome(envelope_ext.encode_request, message, None, "u1", *ids)
    assert body == _outcome(envelope_py.encode_request, message, None, "u1", *ids)
    for ending in (True, False):
        body = _outcome(envelope_ext.encode_reply, "m1", "u1", result=result, ending=ending)
        assert body == _outcome(envelope_py.encode_reply, "m1", "u1", result=result, ending=ending)
        if body[0] == "ok":
            assert envelope_ext.decode_reply(body[1], JSON) == envelope_py.decode_reply(body[1], JSON)
