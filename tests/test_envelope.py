"""Envelope codec: both implementations, and byte-level agreement with oslo."""

from __future__ import annotations

import collections
import datetime
import json
import os
import uuid

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_messaging._drivers import common as oslo_common

from fastrpc import envelope_py
from fastrpc.envelope_py import JSON, MSGPACK, EnvelopeError

pytestmark = pytest.mark.twins

IMPLS = [pytest.param(envelope_py, id="py")]
try:
    from fastrpc._ext import envelope as envelope_ext
except ImportError:  # reported by test_compiled_envelope_loaded
    envelope_ext = None
else:
    IMPLS.append(pytest.param(envelope_ext, id="ext"))


@pytest.fixture(params=IMPLS)
def env(request):
    return request.param


def test_compiled_envelope_loaded():
    import fastrpc.envelope as envelope
    from fastrpc import _impl

    if _impl.NO_EXTENSIONS:
        assert envelope is envelope_py
        return
    assert envelope_ext is not None, "fastrpc._ext.envelope is not built (setup.py build_ext --inplace)"
    assert _impl.COMPILED_MODULES["fastrpc.envelope"] is True
    assert envelope is envelope_ext


def test_same_error_class_in_both():
    if envelope_ext is not None:
        with pytest.raises(envelope_py.EnvelopeError):
            envelope_ext.decode_request(b"nope")


# ---- requests ----------------------------------------------------------------


def test_call_request_json_layout(env):
    body = env.encode_request({"method": "echo", "args": {"x": 1}, "namespace": "ns", "version": "1.2"},
                              {"user": "u1", "roles": ["a"]}, "uid1", msg_id="mid1", reply_q="reply_q1",
                              timeout=30)
    outer = json.loads(body)
    assert set(outer) == {"oslo.version", "oslo.message"}
    assert outer["oslo.version"] == "2.0"
    inner = json.loads(outer["oslo.message"])
    assert inner == {"method": "echo", "args": {"x": 1}, "namespace": "ns", "version": "1.2",
                     "_msg_id": "mid1", "_reply_q": "reply_q1", "_timeout": 30, "_unique_id": "uid1",
                     "_context_user": "u1", "_context_roles": ["a"]}


def test_cast_request_has_no_call_keys(env):
    inner = json.loads(json.loads(env.encode_request({"method": "m", "args": {}}, {}, "u"))["oslo.message"])
    assert inner == {"method": "m", "args": {}, "_unique_id": "u"}


def test_request_round_trip(env):
    for binary in (False, True):
        body = env.encode_request({"method": "m", "args": {"s": 'q"uo\\te\n\u00e9', "l": [1, 2.5, None]}},
                                  {"k": "v"}, "u", msg_id="m1", reply_q="r1", timeout=None, binary=binary)
        req = env.decode_request(body, MSGPACK if binary else JSON)
        assert req.ctxt == {"k": "v"}
        assert req.message == {"method": "m", "args": {"s": 'q"uo\\te\n\u00e9', "l": [1, 2.5, None]}}
        assert (req.unique_id, req.msg_id, req.reply_q, req.timeout, req.binary) == ("u", "m1", "r1", None, binary)


def test_msgpack_layout(env):
    body = env.encode_request({"method": "m", "args": {"b": b"\x00\xff"}}, None, "u", binary=True)
    outer = msgpack.unpackb(body, raw=False)
    assert outer["oslo.version"] == "2.0"
    assert outer["oslo.message"]["method"] == "m"
    # msgpack carries bytes natively; JSON has to turn them into text
    assert outer["oslo.message"]["args"]["b"] == b"\x00\xff"
    text = env.encode_request({"method": "m", "args": {"b": b"\x00\xff"}}, None, "u")
    assert json.loads(json.loads(text)["oslo.message"])["args"]["b"] == "\x00\ufffd"


def test_oslo_can_read_our_request(env):
    body = env.encode_request({"method": "m", "args": {"a": [1, "x\\y\"z"]}}, {"tenant": "t"}, "u",
                              msg_id="m1", reply_q="q", timeout=5.5)
    # kombu json-decodes the body, then oslo unwraps the envelope
    msg = oslo_common.deserialize_msg(json.loads(body.decode("utf-8")))
    assert msg["args"] == {"a": [1, "x\\y\"z"]}
    assert msg["_context_tenant"] == "t"
    assert msg["_timeout"] == 5.5


def test_we_can_read_oslo_request(env):
    raw = {"method": "m", "args": {"a": 1}, "version": "1.0", "_unique_id": "u", "_msg_id": "mid",
           "_reply_q": "reply_x", "_timeout": None, "_context_user_id": "bob"}
    body = json.dumps(oslo_common.serialize_msg(raw)).encode()
    req = env.decode_request(body, JSON)
    assert req.message == {"method": "m", "args": {"a": 1}, "version": "1.0"}
    assert req.ctxt == {"user_id": "bob"}
    assert (req.msg_id, req.reply_q, req.unique_id) == ("mid", "reply_x", "u")


def test_bare_message_without_envelope_accepted(env):
    req = env.decode_request(b'{"method": "m", "_unique_id": "u"}', JSON)
    assert req.message == {"method": "m", "args": {}}


def test_encode_fallbacks(env):
    import datetime
    import decimal

    body = env.encode_request({"method": "m", "args": {"s": {3}, "d": decimal.Decimal("1.5"),
                                                       "t": datetime.date(2024, 1, 2), 7: "int key"}},
                              {}, "u")
    args = json.loads(json.loads(body)["oslo.message"])["args"]
    assert args == {"s": [3], "d": "1.5", "t": "2024-01-02", "7": "int key"}


def test_unencodable_raises_envelope_error(env):
    with pytest.raises(EnvelopeError, match="cannot encode"):
        env.encode_request({"method": "m", "args": {"x": object()}}, {}, "u")


# ---- replies -----------------------------------------------------------------


def test_reply_layout_and_round_trip(env):
    body = env.encode_reply("mid", "uid", result={"r": 1}, failure=None)
    inner = json.loads(json.loads(body)["oslo.message"])
    assert inner == {"result": {"r": 1}, "failure": None, "ending": True, "_msg_id": "mid", "_unique_id": "uid"}
    rep = env.decode_reply(body, JSON)
    assert rep == envelope_py.Reply("mid", "uid", {"r": 1}, None, True)
    keep = env.decode_reply(env.encode_reply("mid", "u2", ending=False, binary=True), MSGPACK)
    assert keep.ending is False and keep.result is None


@pytest.mark.parametrize(("given", "written"), [(None, False), (0, False), (1, True), ("yes", True)])
def test_reply_ending_is_written_as_a_boolean(env, given, written):
    inner = json.loads(json.loads(env.encode_reply("mid", "uid", result=1, ending=given))["oslo.message"])
    assert inner["ending"] is written


def test_we_read_oslo_reply(env):
    raw = {"result": [1, 2], "failure": None, "ending": True, "_msg_id": "m", "_unique_id": "u"}
    rep = env.decode_reply(json.dumps(oslo_common.serialize_msg(raw)).encode(), JSON)
    assert rep.result == [1, 2] and rep.ending is True


def test_reply_without_ending_is_not_final(env):
    body = json.dumps(oslo_common.serialize_msg({"result": 1, "failure": None, "_msg_id": "m"})).encode()
    assert env.decode_reply(body, JSON).ending is False


@pytest.mark.parametrize("body, reason", [
    (b'{"oslo.version": "2.0", "oslo.message": "{}"}', "valid _msg_id"),
    (b'{"oslo.version": "2.0", "oslo.message": "{\\"_msg_id\\": \\"m\\", \\"failure\\": 3}"}', "failure"),
    (b"[1]", "not a mapping"),
])
def test_bad_replies(env, body, reason):
    with pytest.raises(EnvelopeError, match=reason):
        env.decode_reply(body, JSON)


# ---- bad requests --------------------------------------------------------------


def _wrap(inner: str, version: str = "2.0") -> bytes:
    return json.dumps({"oslo.version": version, "oslo.message": inner}).encode()


CALL = '"_msg_id": "m1", "_reply_q": "rq", '


@pytest.mark.parametrize("body, ctype, reason, knows_caller", [
    (b"\x00\x01garbage", JSON, "not valid JSON", False),
    (b"\xc1", MSGPACK, "not valid msgpack", False),
    (b"{}", "text/plain", "unsupported content type", False),
    (b'"a string"', JSON, "envelope is not a mapping", False),
    (_wrap("{}", version="3.0"), JSON, "unsupported oslo.version '3.0'", False),
    (_wrap("{}", version="2.1"), JSON, "unsupported oslo.version", False),
    (json.dumps({"oslo.version": 2.0, "oslo.message": "{}"}).encode(), JSON, "oslo.version is not a string", False),
    (json.dumps({"oslo.version": "2.0", "oslo.message": {}}).encode(), JSON, "oslo.message is not a string", False),
    (_wrap("{not json"), JSON, "oslo.message is not valid JSON", False),
    (_wrap("[1, 2]"), JSON, "oslo.message is not a mapping", False),
    (_wrap("{" + CALL + '"args": {}}'), JSON, "missing method", True),
    (_wrap("{" + CALL + '"method": 5}'), JSON, "method is not a non-empty string", True),
    (_wrap("{" + CALL + '"method": "m", "args": [1]}'), JSON, "args is not a mapping", True),
    (_wrap("{" + CALL + '"method": "m", "args": null}'), JSON, "args is not a mapping", True),
    (_wrap("{" + CALL + '"method": "m", "namespace": 1}'), JSON, "namespace is not a string", True),
    (_wrap("{" + CALL + '"method": "m", "_timeout": "x"}'), JSON, "_timeout is not a number", True),
    (_wrap('{"_msg_id": 5, "method": "m"}'), JSON, "_msg_id is not a string", False),
    (_wrap('{"_msg_id": "m", "method": "m"}'), JSON, "call without _reply_q", False),
])
def test_bad_requests(env, body, ctype, reason, knows_caller):
    with pytest.raises(EnvelopeError, match=reason) as info:
        env.decode_request(body, ctype)
    err = info.value
    assert isinstance(err, ValueError)
    if knows_caller:
        assert (err.msg_id, err.reply_q) == ("m1", "rq")
    else:
        assert err.reply_q is None


@pytest.mark.parametrize("ctype, binary", [
    ("application/json; charset=utf-8", False),
    ("Application/JSON", False),
    (" application/json ;charset=UTF-8", False),
    ("application/msgpack; v=1", True),
    ("application/x-msgpack", True),
    (None, False),
    ("", False),
])
def test_content_type_parameters_and_case_do_not_count(env, ctype, binary):
    msg = {"method": "m", "args": {"a": 1}}
    body = env.encode_request(msg, {"user": "u"}, "uid", binary=binary)
    req = env.decode_request(body, ctype)
    assert req.message == msg and req.binary is binary


@pytest.mark.parametrize("ctype", ["text/plain", "application/jsonx", "application/json-seq; x=1", ";"])
def test_other_content_types_still_rejected(env, ctype):
    body = env.encode_request({"method": "m", "args": {}}, {}, "uid")
    with pytest.raises(EnvelopeError, match="unsupported content type"):
        env.decode_request(body, ctype)


def test_msgpack_non_string_keys_rejected(env):
    body = msgpack.packb({"oslo.version": "2.0", "oslo.message": {"method": "m", "args": {1: 2},
                                                                    "_msg_id": "m1", "_reply_q": "rq"}})
    with pytest.raises(EnvelopeError, match="args has a non-string key") as info:
        env.decode_request(body, MSGPACK)
    assert info.value.binary is True and info.value.reply_q == "rq"


def test_msgpack_ext_types_rejected(env):
    body = msgpack.packb({"oslo.version": "2.0", "oslo.message": msgpack.ExtType(5, b"x")})
    with pytest.raises(EnvelopeError, match="not valid msgpack"):
        env.decode_request(body, MSGPACK)


def test_size_limit(env):
    body = env.encode_request({"method": "m", "args": {"x": "y" * 1000}}, {}, "u")
    with pytest.raises(EnvelopeError, match="exceeds the limit of 100 bytes"):
        env.decode_request(body, JSON, max_size=100)
    assert env.decode_request(body, JSON, max_size=len(body)).message["args"]["x"] == "y" * 1000


def test_reason_never_contains_body(env):
    secret = "s3cr3t-password"
    for body in (_wrap('{"args": {"password": "' + secret + '"}}'),
                 ('{"password": "' + secret + '"').encode()):
        with pytest.raises(EnvelopeError) as info:
            env.decode_request(body, JSON)
        assert secret not in str(info.value)


def test_deep_nesting_is_an_error_not_a_crash(env):
    body = _wrap("[" * 100000 + "]" * 100000)
    with pytest.raises(EnvelopeError):
        env.decode_request(body, JSON)


# ---- property tests --------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(args=st.dictionaries(st.text(), _json_values, max_size=5),
       ctxt=st.dictionaries(st.text(), _json_values, max_size=4),
       binary=st.booleans())
def test_round_trip_property(args, ctxt, binary):
    for impl in [p.values[0] for p in IMPLS]:
        body = impl.encode_request({"method": "m", "args": args}, ctxt, "u", msg_id="i", reply_q="q",
                                   binary=binary)
        req = impl.decode_request(body, MSGPACK if binary else JSON)
        assert req.message["args"] == args
        assert req.ctxt == ctxt
        if not binary:
            assert oslo_common.deserialize_msg(json.loads(body))["args"] == args


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200), binary=st.booleans())
def test_random_bytes_only_raise_envelope_error(body, binary):
    for impl in [p.values[0] for p in IMPLS]:
        try:
            impl.decode_request(body, MSGPACK if binary else JSON)
        except EnvelopeError:
            pass


# ---- one-parse path for the usual JSON layouts -------------------------------------
# The compiled codec reads a body laid out exactly as oslo or fastrpc write it
# with one JSON parse; everything else takes the general path. Whatever the path,
# the result (or the error) must be the pure-Python module's.

needs_ext = pytest.mark.skipif(envelope_ext is None, reason="compiled envelope not built")


def _outcome(fn, body, ctype=JSON):
    try:
        result = fn(body, ctype)
    except EnvelopeError as exc:
        return ("error", exc.reason, exc.msg_id, exc.reply_q, exc.binary)
    # repr: key order and value types count, not only equality
    return ("ok", type(result), repr(result))


def _assert_same(body, ctype=JSON):
    for name in ("decode_request", "decode_reply"):
        expected = _outcome(getattr(envelope_py, name), body, ctype)
        assert _outcome(getattr(envelope_ext, name), body, ctype) == expected, (name, body)
    fast = envelope_ext._one_parse(body)
    if fast is not None:
        # taken only by bodies the general path reads, to the same mapping
        assert repr(fast) == repr(envelope_py._load(body, JSON, len(body))[0]), body
    return fast


TRICKY = 'q"uo\\te \\" \\\\ / \\/ \\u0041 \n\t\x01 \x7f \u00e9 \u2028 \u20ac \U0001f600 {"a": [1]}'
RAW_CALL = {"method": "echo", "args": {"s": TRICKY, "n": [1, 2.5, None, True], "d": {"k": TRICKY}},
            "namespace": "ns", "version": "1.2", "_unique_id": "u1", "_msg_id": "m1", "_reply_q": "reply_1",
            "_timeout": 30, "_context_user": "bob", "_context_roles": ["admin", TRICKY]}
RAW_REPLY = {"result": {"r": TRICKY}, "failure": None, "ending": True, "_msg_id": "m1", "_unique_id": "u1"}


def _layouts(raw):
    """The same message as the writers in the field lay it out, each with
    whether it should take the one-parse path."""
    yield json.dumps(oslo_common.serialize_msg(raw)).encode(), True  # oslo + kombu
    for inner_ascii in (True, False):
        inner = json.dumps(raw, ensure_ascii=inner_ascii)
        # an ASCII-only outer layer writes \u escapes for all but " " to "~"
        plain = all(" " <= ch <= "~" for ch in inner)
        for outer_ascii in (True, False):
            envelope = {"oslo.version": "2.0", "oslo.message": inner}
            one_parse = plain or not outer_ascii
            yield json.dumps(envelope, ensure_ascii=outer_ascii).encode("utf-8"), one_parse
            yield json.dumps(envelope, ensure_ascii=outer_ascii, separators=(",", ":")).encode("utf-8"), one_parse
    # fastrpc's own compact writer
    if "method" in raw:
        message = {k: v for k, v in raw.items() if not k.startswith("_")}
        ctxt = {k[9:]: v for k, v in raw.items() if k.startswith("_context_")}
        yield envelope_py.encode_request(message, ctxt, raw["_unique_id"], msg_id=raw["_msg_id"],
                                         reply_q=raw["_reply_q"], timeout=raw["_timeout"]), True
    else:
        yield envelope_py.encode_reply(raw["_msg_id"], raw["_unique_id"], result=raw["result"]), True


@needs_ext
@pytest.mark.parametrize("raw", [RAW_CALL, RAW_REPLY], ids=["call", "reply"])
def test_fast_path_reads_every_writer_like_the_general_path(raw):
    for body, one_parse in _layouts(raw):
        assert (_assert_same(body) is not None) is one_parse, body
        assert _assert_same(bytearray(body)) is None  # not bytes: general path
        assert _assert_same(memoryview(body)) is None


@needs_ext
def test_fast_path_result_types():
    body = json.dumps(oslo_common.serialize_msg(RAW_CALL)).encode()
    for impl in (envelope_ext, envelope_py):
        req = impl.decode_request(body, JSON)
        assert type(req) is envelope_py.Request
        assert req == envelope_py.Request(*req) and req._fields == envelope_py.Request._fields
        assert req.message["args"]["s"] == TRICKY and req.ctxt["roles"] == ["admin", TRICKY]
        assert (req.unique_id, req.msg_id, req.reply_q, req.timeout, req.binary) == ("u1", "m1", "reply_1", 30,
                                                                                    False)
        rep = impl.decode_reply(json.dumps(oslo_common.serialize_msg(RAW_REPLY)).encode(), JSON)
        assert type(rep) is envelope_py.Reply
        assert rep == envelope_py.Reply("m1", "u1", {"r": TRICKY}, None, True)
        assert rep._asdict() == {"msg_id": "m1", "unique_id": "u1", "result": {"r": TRICKY}, "failure": None,
                                 "ending": True}


COMPACT = b'{"oslo.version":"2.0","oslo.message":"'
SPACED = b'{"oslo.version": "2.0", "oslo.message": "'
INNER = b'{\\"method\\": \\"m\\", \\"_msg_id\\": \\"m1\\", \\"_reply_q\\": \\"rq\\", \\"result\\": 1}'


def _variants():
    for prefix in (COMPACT, SPACED):
        good = prefix + INNER + b'"}'
        yield good
        # after the closing brace
        for tail in (b" ", b"\n", b"x", b"}", b'"', b",", b"\x00", b"\xff"):
            yield good + tail
        for end in (b'" }', b'"]', b'" ', b'"x', b'""', b'"\\', b'"}}', b'"'):
            yield prefix + INNER + end
        # truncated, and with a byte dropped
        for cut in range(1, len(good)):
            yield good[:cut]
        for pos in range(len(good)):
            yield good[:pos] + good[pos + 1:]
        # content of the string
        for content in (b"", b"{}", b"[1, 2]", b"null", b"{", b'{\\"a\\": 1', b"{}  ", b"  {}", b"{} x",
                        b'{\\"method\\": \\"m\\"} \\"',  # escaped quote after the object
                        b'{"method": "m"}',  # unescaped quotes
                        b'{\\"method\\": \\"m"}',
                        b'{\\"method\\": \\"a\\\\\\"b\\"}',  # escaped backslash then escaped quote
                        b'{\\"method\\": \\"a\\\\\\\\b\\"}',
                        b'{\\"method\\": \\"a\\/b\\"}',
                        b'{\\"method\\": \\"a\\u0041\\"}',  # \u escape in the outer string
                        b'{\\"method\\": \\"\\\\u00e9\\\\n\\"}',  # \u escape in the inner string
                        b'{\\"method\\": \\"a\\nb\\"}', b'{\\"method\\": \\"a\\tb\\"}',
                        b'{\\"method\\": \\"a\\x\\"}', b'{\\"method\\": \\"a\\',
                        b'{\\"method\\": \\"a\nb\\"}', b'{\\"method\\": \\"a\x01b\\"}',
                        b'{\\"method\\": \\"a\x1fb\\"}', b'{\\"method\\": \\"a\x7fb\\"}',
                        b'{\\"method\\": \\"a\tb\\"}', b'{\\"method\\": \\"a\x00b\\"}',
                        # raw control characters between the inner tokens, where
                        # the inner JSON would take \t \n \r as whitespace
                        b'{\\"method\\":\t\\"m\\"}', b'{\n\\"method\\": \\"m\\"}',
                        b'{\\"method\\": \\"m\\"\r}', b'{\\"method\\": \\"m\\"}\n',
                        b'{\\"method\\":\x0b\\"m\\"}', b'{\\"method\\":\x1f\\"m\\"}',
                        '{\\"method\\": \\"\u00e9\u20ac\U0001f600\\"}'.encode(),
                        b'{\\"method\\": \\"\xff\\"}', b'{\\"method\\": \\"\xc3\\"}',
                        b'{\\"method\\": \\"\xed\xa0\x80\\"}', b'{\\"method\\": \\"\xc0\xaf\\"}',
                        b'{\\"method\\": \\"m\\", \\"method\\": \\"n\\"}',  # duplicate key: the last wins
                        b'{\\"method\\": \\"m\\", \\"_context_\\": 1, \\"_context_a\\": 2}',
                        b"{}\\"):  # a backslash that escapes the closing quote
            yield prefix + content + b'"}'
        # a third key, or the message twice: only the general parser decides
        yield prefix + b'{}", "x": "y"}'
        yield prefix + b'{}", "oslo.message": "{\\"method\\": \\"n\\"}"}'
        yield prefix + b'{}", "oslo.version": "3.0"}'
    # near misses of the layout: other spacing, key order, versions
    yield b' {"oslo.version":"2.0","oslo.message":"{}"}'
    yield b'{"oslo.version" : "2.0", "oslo.message" : "{}"}'
    yield b'{\n  "oslo.version": "2.0",\n  "oslo.message": "{\\"method\\": \\"m\\"}"\n}'
    yield b'{"oslo.message": "{\\"method\\": \\"m\\"}", "oslo.version": "2.0"}'
    yield b'{"oslo.message":"{\\"method\\":\\"m\\"}","oslo.version":"2.0"}'
    for version in (b"2.1", b"3.0", b"2", b"2.0.0", b"02.0", b"2.0 ", b"", b"2.0\\u0000"):
        yield b'{"oslo.version": "' + version + b'", "oslo.message": "{\\"method\\": \\"m\\"}"}'
    yield b'{"oslo.version": 2.0, "oslo.message": "{\\"method\\": \\"m\\"}"}'
    yield b'{"oslo.version": "2.0", "oslo.message": {"method": "m"}}'
    yield b'{"oslo.version": "2.0", "oslo.message": "{\\"method\\": \\"m\\"}"}' * 2
    yield b'{"oslo.version":"2.0","oslo.message":"}'
    yield b'{"oslo.version":"2.0","oslo.message":"'
    yield b'"}'


@needs_ext
def test_fast_path_edge_cases_match_general_path():
    bodies = list(_variants())
    assert len(bodies) > 500
    for body in bodies:
        _assert_same(body)
        _assert_same(body, None)
        _assert_same(body, "")


@needs_ext
@pytest.mark.parametrize("content, one_parse", [
    (b'{\\"method\\": \\"a\\\\\\\\b\\"}', True),  # \\ in the inner string
    (b'{\\"method\\": \\"a\\/b\\"}', True),
    (b'{\\"method\\": \\"a/b\\"}', True),
    ('{\\"method\\": \\"\u00e9\\"}'.encode(), True),
    (b'{\\"method\\": \\"\\u00e9\\"}', False),  # any other escape: general path
    (b'{\\"method\\": \\"a\\nb\\"}', False),
    (b'{\\"method\\":\t\\"m\\"}', False),  # raw control character: invalid, general path
    (b'{\\"method\\": \\"m\\"} x', False),  # valid outer, invalid inner
])
def test_which_bodies_take_one_parse(content, one_parse):
    for prefix in (COMPACT, SPACED):
        assert (_assert_same(prefix + content + b'"}') is not None) is one_parse
    assert _assert_same(COMPACT + content + b'"} ') is None  # valid, but not the exact layout


@needs_ext
def test_block_boundaries():
    # escapes and rejected bytes at every offset around the 16-byte blocks
    for special in ('"', "\\", "\\\\", '\\"', "\u00e9", "\n"):
        for offset in range(40):
            s = "a" * offset + special + "b" * (40 - offset)
            for impl in (envelope_ext, envelope_py):
                assert impl.decode_reply(impl.encode_reply("m", "u", result=s), JSON).result == s
            assert envelope_ext.encode_reply("m", "u", result=s) == envelope_py.encode_reply("m", "u", result=s)
            body = json.dumps(oslo_common.serialize_msg(dict(RAW_REPLY, result=s))).encode()
            _assert_same(body)
    base = COMPACT + b'{\\"_msg_id\\": \\"m\\", \\"result\\": \\"' + b"x" * 40 + b'\\"}"}'
    for pos in range(len(COMPACT), len(base) - 2):
        for byte in (b'"', b"\\", b"\x00", b"\x1f", b" ", b"\x80", b"\xff"):
            _assert_same(base[:pos] + byte + base[pos:])
            _assert_same(base[:pos] + byte + base[pos + 1:])


_text = st.text(alphabet=st.sampled_from(['"', "\\", "/", "u", "n", "a", " ", "\n", "\x00", "\x1f", "\x7f",
                                          "\u00e9", "\u2028", "\U0001f600", "{", "}", ":", ","]), max_size=40)
_mutation = st.tuples(st.integers(0, 10**6), st.integers(0, 2),
                      st.sampled_from([b'"', b"\\", b"\x01", b"\n", b" ", b"}", b"\xff", b"\xc3", b"\\u0041",
                                       b"\\/", b'\\"', b"\\\\"]))


@needs_ext
@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(_text, _json_values | _text, max_size=4),
       ctxt=st.dictionaries(_text, _text, max_size=3),
       result=_json_values | _text,
       mutations=st.lists(_mutation, max_size=3))
def test_fast_path_property(args, ctxt, result, mutations):
    raw_call = {"method": "m", "args": args, "_unique_id": "u", "_msg_id": "i", "_reply_q": "q", "_timeout": None}
    raw_call.update({"_context_" + k: v for k, v in ctxt.items()})
    raw_reply = dict(RAW_REPLY, result=result)
    ours = envelope_ext.encode_request({"method": "m", "args": args}, ctxt, "u", msg_id="i", reply_q="q")
    assert ours == envelope_py.encode_request({"method": "m", "args": args}, ctxt, "u", msg_id="i", reply_q="q")
    reply = envelope_ext.encode_reply("i", "u", result=result)
    assert reply == envelope_py.encode_reply("i", "u", result=result)
    for body, one_parse in [(ours, True), (reply, True), *_layouts(raw_call), *_layouts(raw_reply)]:
        assert (_assert_same(body) is not None) is one_parse
        mutated = bytearray(body)
        for pos, op, data in mutations:
            pos %= len(mutated) + 1
            if op == 0:
                del mutated[pos:pos + 1]
            elif op == 1:
                mutated[pos:pos] = data
            else:
                mutated[pos:pos + len(data)] = data
        _assert_same(bytes(mutated))


def test_nan_and_infinity_from_python_json_are_read_as_oslo_reads_them(env):
    # oslo's peers write with Python's json module, which emits NaN and
    # Infinity; orjson refuses them, so the decoders fall back to json.
    inner = {"method": "m", "args": {"v": float("nan"), "w": float("inf")}, "_unique_id": "u",
             "_context_user": "x"}
    for body in (json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode(),
                 json.dumps(inner).encode()):
        req = env.decode_request(body)
        assert req.message["args"]["v"] != req.message["args"]["v"]  # NaN
        assert req.message["args"]["w"] == float("inf") and req.ctxt == {"user": "x"}


def test_nan_and_infinity_are_written_as_oslo_writes_them(env):
    # orjson would write null; oslo's peers (Python's json) write NaN and
    # Infinity and read them back as floats, so fastrpc writes them so too.
    args = {"v": float("nan"), "w": [float("inf"), (1, -float("inf"))], "n": None, "s": "null"}
    for body in (env.encode_request({"method": "m", "args": args}, {"user": None}, "u"),
                 env.encode_reply("id", "u", result={"deep": [[{"x": float("nan")}]]})):
        outer = json.loads(body)  # as oslo's jsonutils reads it
        assert set(outer) == {"oslo.version", "oslo.message"}
        inner = json.loads(outer["oslo.message"])
        if "args" in inner:
            got = inner["args"]
            assert got["v"] != got["v"]  # NaN
            assert got["w"] == [float("inf"), [1, float("-inf")]]
            assert got["n"] is None and got["s"] == "null" and inner["_context_user"] is None
            req = env.decode_request(body)  # and fastrpc reads its own
            assert req.message["args"]["w"][0] == float("inf") and req.ctxt == {"user": None}
        else:
            x = inner["result"]["deep"][0][0]["x"]
            assert x != x
            reply = env.decode_reply(body)
            assert reply.result["deep"][0][0]["x"] != reply.result["deep"][0][0]["x"]
    # In dict and tuple subclasses too, and beside what orjson writes natively
    # (a UUID, a date key) and what only to_primitive converts.
    Point = collections.namedtuple("Point", "x y")
    args = {"od": collections.OrderedDict(a=float("inf")), "p": Point(1, float("-inf")),
            "id": uuid.UUID(int=5), "when": {datetime.date(2026, 1, 2): float("nan")}}
    inner = json.loads(json.loads(env.encode_request({"method": "m", "args": args}, {}, "u"))["oslo.message"])
    got = inner["args"]
    assert got["od"] == {"a": float("inf")} and got["p"] == [1, float("-inf")]
    assert got["id"] == str(uuid.UUID(int=5)) and got["when"]["2026-01-02"] != got["when"]["2026-01-02"]
    # Without a NaN or an infinity the text is orjson's, nulls and all.
    plain = env.encode_request({"method": "m", "args": {"n": None, "f": 1.5}}, {}, "u")
    assert b"NaN" not in plain and b"Infinity" not in plain
    assert json.loads(json.loads(plain)["oslo.message"])["args"] == {"n": None, "f": 1.5}


def test_nan_found_wherever_the_null_stands(env):
    # The null scan must see a null at either end of the text and after
    # many other n's; without a NaN nothing changes.
    nan_last = env.encode_request({"method": "m", "args": {}}, {"z": float("nan")}, "u")
    assert nan_last.endswith(b'_context_z\\":NaN}"}')  # the context comes last
    nan_first = env.encode_reply("id", "u", result=float("nan"))
    assert json.loads(nan_first)["oslo.message"].startswith('{"result":NaN,')
    many_n = env.encode_request({"method": "n" * 50, "args": {"nnn": "nul", "x": [None, float("inf")]}}, {}, "u")
    assert json.loads(json.loads(many_n)["oslo.message"])["args"]["x"] == [None, float("inf")]
    no_null = env.encode_request({"method": "nul", "args": {"n": "nu"}}, {}, "nnnn")
    assert b"NaN" not in no_null and b"null" not in no_null


def test_new_id_unique_hex_and_fresh_after_fork(env):
    ids = [env.new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    assert len({i[:20] for i in ids}) == 1  # one random prefix per process, then the counter
    assert [int(i[20:], 16) for i in ids[:3]] == [(int(ids[0][20:], 16) + k) & 0xFFFFFFFFFFFF for k in range(3)]
    # A forked child must not repeat the parent's ids (peers drop duplicates).
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write_end, env.new_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child_id) == 32 and child_id[:20] != ids[0][:20]


def test_json_nested_too_deeply_is_malformed_not_a_crash(env):
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        env.decode_request(deep)
    inner = "[" * 100_000 + "]" * 100_000
    with pytest.raises(EnvelopeError, match="oslo.message is not valid JSON"):
        env.decode_request(json.dumps({"oslo.version": "2.0", "oslo.message": inner}).encode())


# ---- the compiled encoders' shortcut for the usual message -------------------------
# Without a context, with plain ids and a whole-number timeout (or none), the
# compiled codec writes a request's or a reply's added fields as text after
# orjson's JSON of the message or result, without the inner dict; a message
# whose own keys look like those fields, or anything unusual, takes the inner
# dict's path. The bytes (or the error) must be the pure-Python module's.

_ids = st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=130),
                 _text, st.sampled_from(["", "u", "0" * 32, "x" * 128, "x" * 129]))
_field_keys = st.sampled_from(["_msg_id", "_reply_q", "_timeout", "_unique_id", "_context_x", "_", "method",
                               "args", "namespace", "version", "result", "failure", "ending"])
_timeouts = st.one_of(st.none(), st.integers(-(2**60), 2**60), st.floats(allow_nan=True), st.booleans())


def _encode_outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except EnvelopeError as exc:
        return ("error", type(exc.__cause__), str(exc))


@needs_ext
@settings(max_examples=400, deadline=None)
@given(extra=st.dictionaries(_field_keys | _text, _json_values | _text, max_size=4),
       args=st.dictionaries(_text, _json_values | _text | st.floats(), max_size=3),
       unique_id=_ids, msg_id=st.none() | _ids, reply_q=_ids, timeout=_timeouts,
       ctxt=st.sampled_from([None, {}, {"user": "bob"}]))
def test_request_shortcut_writes_the_pure_modules_bytes(extra, args, unique_id, msg_id, reply_q, timeout, ctxt):
    message = {"method": "m", "args": args, **extra}
    call = (message, ctxt, unique_id, msg_id, reply_q, timeout)
    expected = _encode_outcome(envelope_py.encode_request, *call)
    assert _encode_outcome(envelope_ext.encode_request, *call) == expected
    if expected[0] == "ok":
        _assert_same(expected[1])


@needs_ext
@settings(max_examples=300, deadline=None)
@given(result=_json_values | _text | st.floats() | st.tuples(st.floats(), _text),
       msg_id=_ids, unique_id=_ids, failure=st.none() | _text, ending=st.booleans())
def test_reply_shortcut_writes_the_pure_modules_bytes(result, msg_id, unique_id, failure, ending):
    reply = (msg_id, unique_id, result, failure, ending)
    expected = _encode_outcome(envelope_py.encode_reply, *reply)
    assert _encode_outcome(envelope_ext.encode_reply, *reply) == expected
    if expected[0] == "ok":
        _assert_same(expected[1])
