"""Envelope codec: both implementations, and byte-level agreement with oslo."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_messaging._drivers import common as oslo_common

from fastrpc import envelope_py
from fastrpc.envelope_py import JSON, MSGPACK, EnvelopeError

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
    from fastrpc import _impl

    if _impl.NO_EXTENSIONS:
        assert _impl.envelope is envelope_py
        return
    assert envelope_ext is not None, "fastrpc._ext.envelope is not built (setup.py build_ext --inplace)"
    assert _impl.ENVELOPE_COMPILED is True
    assert _impl.envelope is envelope_ext


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
