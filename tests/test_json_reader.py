"""The compiled envelope's own JSON reader (ext/json_reader.pxi).

It may only take what orjson reads to the very same value (types, key
order, a float's sign and bits included) and must leave everything else
to orjson, so whatever it reads is checked against orjson here; and the
request and reply parts it reads straight from a body (quoted as the
envelope's string, or unescaped first) against the pure-Python codec.
A reader that left everything to orjson would pass the first kind of check
alone, so the usual texts are also checked to be read by it.
"""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_messaging._drivers import common as oslo_common

from fastrpc import envelope_py
from fastrpc._ext import envelope as envelope_ext
from fastrpc.envelope_py import JSON, EnvelopeError

COMPACT = b'{"oslo.version":"2.0","oslo.message":"'
SPACED = b'{"oslo.version": "2.0", "oslo.message": "'


def same(a, b):
    """Equal with the same types throughout, dict order and float bits included."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return a.hex() == b.hex()
    return a == b


def check_text(text: bytes):
    """The reader's result for `text`, checked against orjson's."""
    mine = envelope_ext._json_read(text)
    if mine is not None:
        assert type(mine) is dict
        assert same(mine, orjson.loads(text)), text
    return mine


# What the reader takes: every value but integers beyond 18 digits.
_keys = st.text(max_size=12) | st.sampled_from(["method", "args", "_msg_id", "result", "a" * 40, "é", "\u20ac"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**18) + 1, 10**18 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=25,
)


def _writings(value: dict):
    """The same object as JSON writers in the field write it."""
    yield orjson.dumps(value)
    yield json.dumps(value).encode()
    yield json.dumps(value, ensure_ascii=False).encode()
    yield json.dumps(value, separators=(",", ":")).encode()
    yield json.dumps(value, indent=2).encode()
    yield b" \t\r\n" + orjson.dumps(value) + b"\n "


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_keys, _values, max_size=6))
def test_reads_what_writers_write_as_orjson_does(value):
    for text in _writings(value):
        mine = check_text(text)
        assert mine is not None, text  # read here, not left to orjson


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_keys, _values, max_size=4),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.booleans(),
                                st.sampled_from([b'"', b"\\", b"\\u", b"\\ud800", b"\\udc00", b"\x01", b"\x7f",
                                                 b"\xff", b"\xc3", b"\xed\xa0\x80", b",", b":", b"}", b"]",
                                                 b"[", b"{", b"0", b"-", b".", b"e", b"1e999", b"n", b" ",
                                                 b"\t", b"99999999999999999999"])),
                      min_size=1, max_size=3))
def test_damaged_texts_read_as_orjson_or_left(value, edits):
    text = bytearray(orjson.dumps(value))
    for pos, replace, piece in edits:
        pos %= len(text) + 1
        text[pos:pos + (1 if replace else 0)] = piece
    text = bytes(text)
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        assert envelope_ext._json_read(text) is None, text  # never read where orjson refuses
        return
    check_text(text)


@pytest.mark.parametrize("text, read", [
    (b'{"a": 123456789012345678}', True),
    (b'{"a": -123456789012345678}', True),
    (b'{"a": 1234567890123456789}', False),  # 19 digits: orjson's (a float beyond 64 bits)
    (b'{"a": 18446744073709551616}', False),
    (b'{"a": -0}', True),
    (b'{"a": -0.0}', True),
    (b'{"a": 1e308}', True),
    (b'{"a": 1e309}', False),  # an overflow: orjson's error
    (b'{"a": 5e-324}', True),
    (b'{"a": 1e-400}', True),
    (b'{"a": 0.1e1, "b": 1E+2, "c": 2.5e-3}', True),
    (b'{"a": 01}', False),
    (b'{"a": 1.}', False),
    (b'{"a": .5}', False),
    (b'{"a": +1}', False),
    (b'{"a": NaN}', False),
    (b'{"a": Infinity}', False),
    (b'{"a": "\\ud83d\\ude00 \\u00e9 \\n\\t\\"\\\\\\/\\b\\f\\r"}', True),
    (b'{"a": "\\ud800"}', False),  # a lone surrogate: orjson's error, json's string
    (b'{"a": "\\udc00"}', False),
    (b'{"a": "\\ud800\\u0041"}', False),
    (b'{"a": "\\x"}', False),
    (b'{"a": "\xed\xa0\x80"}', False),  # a surrogate in UTF-8
    (b'{"a": "\xc3"}', False),
    (b'{"a": "\x01"}', False),
    (b'{"a": 1,}', False),
    (b'{"a": [1,]}', False),
    (b'{"a" 1}', False),
    (b'{a: 1}', False),
    (b'{"a": 1} x', False),
    (b'{"a": 1}{}', False),
    (b'[1]', False),  # not an object
    (b'"s"', False),
    (b'', False),
    (b'{"a": tru}', False),
    (b'{"a": nul}', False),
    (b'{"a": 1, "a": 2, "b": 3}', True),  # a repeated key: its first place, its last value
    (b'{"a": ' + b'[' * 127 + b']' * 127 + b'}', True),
    (b'{"a": ' + b'[' * 200 + b']' * 200 + b'}', False),  # deeper than the reader goes
])
def test_edges(text, read):
    assert (check_text(text) is not None) is read


@pytest.mark.parametrize("text", ["{}", bytearray(b"{}"), memoryview(b"{}"), None, 2**1000])
def test_only_bytes_are_read(text):
    # the reader takes a bytes object's buffer (its NUL byte included)
    with pytest.raises(TypeError):
        envelope_ext._json_read(text)


def test_many_keys_through_the_key_cache():
    # more distinct keys than the cache has slots, long ones and known ones
    keys = [f"key_{i}" for i in range(600)] + ["k" * 33, "k" * 32, "method", "args", "ending"]
    for _ in range(2):
        text = orjson.dumps({k: i for i, k in enumerate(keys)})
        mine = check_text(text)
        assert list(mine) == keys and list(mine.values()) == list(range(len(keys)))


def test_values_are_new_objects():
    text = b'{"a": {"b": [1, "x"]}, "c": "x"}'
    first, second = envelope_ext._json_read(text), envelope_ext._json_read(text)
    first["a"]["b"].append(2)
    assert second == {"a": {"b": [1, "x"]}, "c": "x"}


# ---- requests and replies read into their parts ----------------------------------

def _outcome(fn, body):
    try:
        result = fn(body, JSON)
    except EnvelopeError as exc:
        return ("error", exc.reason, exc.msg_id, exc.reply_q)
    return ("ok", type(result), repr(result))


def check_body(body: bytes):
    for name in ("decode_request", "decode_reply"):
        expected = _outcome(getattr(envelope_py, name), body)
        assert _outcome(getattr(envelope_ext, name), body) == expected, (name, body)


TRICKY = 'q"uo\\te / \n\t\x01 \x7f \u00e9 \u2028 \u20ac \U0001f600'


@pytest.mark.parametrize("raw, reply, path", [
    # fastrpc's and oslo's usual requests and replies: read in place
    ({"method": "echo", "args": {"payload": "x" * 150}, "namespace": None, "version": "1.0",
      "_msg_id": "m", "_reply_q": "reply_q", "_timeout": 30, "_unique_id": "u"}, False, "in place"),
    ({"method": "echo", "args": {}, "_context_user": "bob", "_context_roles": ["a", "b"],
      "_unique_id": "u"}, False, "in place"),
    ({"result": {"r": [1, 2.5, None]}, "failure": None, "ending": True, "_msg_id": "m", "_unique_id": "u"},
     True, "in place"),
    ({"result": None, "failure": '{"class": "E"}', "ending": False, "_msg_id": "m"}, True, "unescaped"),
    # escapes in a string: read after unescaping
    ({"method": "m", "args": {"s": TRICKY}, "_context_t": TRICKY}, False, "unescaped"),
    ({"result": TRICKY, "ending": True, "_msg_id": "m"}, True, "unescaped"),
])
def test_usual_bodies_are_read_into_parts(raw, reply, path):
    inner = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
    for body in (COMPACT + inner.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"}',
                 json.dumps(oslo_common.serialize_msg(raw), ensure_ascii=False).encode()):
        if path == "in place" or body.startswith(COMPACT):
            assert envelope_ext._fields_read(body, reply) == path, body
        check_body(body)


@pytest.mark.parametrize("inner", [
    # field names escaped in the key: still the fields
    '{"\\u005fmsg_id": "m", "_reply_q": "q", "method": "x"}',
    '{"_msg\\u005fid": "m", "result": 1, "ending": true}',
    '{"\\u005fcontext_user": "bob", "method": "x"}',
    '{"_context_\\u20ac": 1, "_context_\\u00e9": 2, "_context_": 3, "method": "x"}',
    '{"_context_\u20ac": 1, "_context_\u00e9": 2, "method": "x"}',
    # routing values (kept as keys are): escaped, wide, long, not strings
    '{"method": "\\u00e9x", "version": "1.\\u0030", "namespace": "n\u20ac"}',
    '{"method": "%s", "version": "2.0", "namespace": null}' % ("m" * 40),
    '{"method": "m", "version": 2, "namespace": ["x"]}',
    # repeated fields: the last value
    '{"_msg_id": "a", "_reply_q": "q", "_msg_id": "b", "method": "x", "method": "y"}',
    '{"result": 1, "result": 2, "_msg_id": "m", "ending": false, "ending": 1}',
    # shapes the general path judges
    '{"_msg_id": "m", "method": "x"}',
    '{"_msg_id": 5, "_reply_q": "q", "method": "x"}',
    '{"_timeout": true, "method": "x"}',
    '{"_timeout": 1.5, "method": "x", "args": null}',
    '{"method": "x", "args": [1]}',
    '{"method": "", "namespace": 1}',
    '{"method": "x", "version": 1.0}',
    '{"_unique_id": 1, "method": "x"}',
    '{"_msg_id": "", "result": 1}',
    '{"_msg_id": "m", "failure": 1}',
    '{"_msg_id": "m", "_unique_id": 2, "result": 1}',
    '{}',
    '{"method": "x", "n": 12345678901234567890}',
    '{"method": "x", "s": "\\ud800"}',
    '{"method": "x", "f": 1e999}',
])
def test_field_edges_match_the_pure_codec(inner):
    for prefix in (COMPACT, SPACED):
        quoted = inner.replace("\\", "\\\\").replace('"', '\\"').encode()
        check_body(prefix + quoted + b'"}')
        check_body(prefix + quoted.replace(b", ", b",").replace(b": ", b":") + b'"}')
        check_body(prefix + b"  " + quoted + b'  "}')


@pytest.mark.parametrize("inner", [b'{\\"method\\":\\', b'{\\"method\\":\\"m\\",\\', b'{\\', b'\\',
                                   b'{\\"method\\":1.5', b'{\\"method\\":-'])
def test_quoted_text_cut_short_before_the_envelopes_closing_quote(inner):
    # the byte after the quoted text is the envelope's closing quote: a
    # backslash just before it is no quote of the inner text
    for prefix in (COMPACT, SPACED):
        body = prefix + inner + b'"}'
        assert envelope_ext._fields_read(body, False) is None
        assert envelope_ext._fields_read(body, True) is None
        check_body(body)


def test_raw_whitespace_other_than_spaces_is_left_in_the_quoted_text():
    # a raw tab or line break in the envelope's string makes the body invalid
    for ws in (b"\t", b"\n", b"\r"):
        body = COMPACT + b'{\\"method\\":' + ws + b'\\"m\\"}"}'
        assert envelope_ext._fields_read(body, False) is None
        check_body(body)


@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(_keys, _values, max_size=4),
       ctxt=st.dictionaries(_keys, _values, max_size=3),
       result=_values,
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.booleans(),
                                st.sampled_from([b'\\"', b'"', b"\\", b"\\\\", b"\\u0041", b"\t", b" ",
                                                 b"\xff", b"\xc3", b",", b":", b"}", b"{", b"1", b"n"])),
                      max_size=3))
def test_bodies_read_into_parts_as_the_pure_codec(args, ctxt, result, edits):
    for body in (envelope_ext.encode_request({"method": "m", "args": args}, ctxt, "u", msg_id="i",
                                             reply_q="q", timeout=10),
                 envelope_ext.encode_reply("i", "u", result=result),
                 envelope_ext.encode_reply("i", "u", failure='{"class": "E", "message": "a\\nb"}', ending=False)):
        damaged = bytearray(body)
        for pos, replace, piece in edits:
            pos %= len(damaged) + 1
            damaged[pos:pos + (1 if replace else 0)] = piece
        check_body(body)
        check_body(bytes(damaged))


def test_floats_round_as_orjson():
    # correctly rounded either way: the same bits for awkward decimal texts
    texts = ["0.1", "2.2250738585072011e-308", "2.2250738585072014e-308", "1.7976931348623157e308",
             "4.9e-324", "9007199254740993", "9007199254740993.0", "0.30000000000000004",
             "123456789012345678901234567890.5", "1e23", "8.41e21", "5e-324", "2.4703282292062328e-324"]
    for t in texts:
        text = b'{"f": ' + t.encode() + b"}"
        mine = check_text(text)
        assert mine is not None
        assert math.isfinite(mine["f"])
