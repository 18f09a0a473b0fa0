# cython: language_level=3
"""Compiled oslo.messaging envelope codec (twin of fastrpc.envelope_py).

Same functions, same results and the same exception classes as the pure-Python
module; the shared types (EnvelopeError, Request, Reply) live there so callers
can catch one class whichever codec is loaded.
"""

import msgpack
import orjson

from fastrpc.envelope_py import (
    CONTEXT_PREFIX,
    DEFAULT_MAX_BODY,
    ENVELOPE_VERSION,
    JSON,
    MESSAGE_KEY,
    MSGPACK,
    VERSION_KEY,
    EnvelopeError,
    Reply,
    Request,
    to_primitive,
)

cdef bytes _JSON_PREFIX = b'{"oslo.version":"2.0","oslo.message":"'
cdef bytes _JSON_SUFFIX = b'"}'
cdef int _OPT_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS
cdef object _dumps = orjson.dumps
cdef object _loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _JSONEncodeError = orjson.JSONEncodeError
cdef object _packb = msgpack.packb
cdef object _unpackb = msgpack.unpackb


def content_type(bint binary):
    return MSGPACK if binary else JSON


cdef bytes _dump(dict inner, bint binary):
    cdef bytes text
    try:
        if binary:
            return _packb({VERSION_KEY: ENVELOPE_VERSION, MESSAGE_KEY: inner},
                          default=to_primitive, use_bin_type=True, datetime=False)
        text = _dumps(inner, default=to_primitive, option=_OPT_NON_STR_KEYS)
    except (TypeError, ValueError, OverflowError, _JSONEncodeError) as exc:
        raise EnvelopeError(f"cannot encode message: {exc}") from None
    # orjson never emits raw control characters: quoting its output as a JSON
    # string only needs backslashes and double quotes escaped.
    if b"\\" in text:
        text = text.replace(b"\\", b"\\\\")
    return _JSON_PREFIX + text.replace(b'"', b'\\"') + _JSON_SUFFIX


def encode_request(message, ctxt, unique_id, msg_id=None, reply_q=None, timeout=None,
                   bint binary=False):
    cdef dict inner = dict(message)
    if msg_id is not None:
        inner["_msg_id"] = msg_id
        inner["_reply_q"] = reply_q
        inner["_timeout"] = timeout
    inner["_unique_id"] = unique_id
    if ctxt:
        for key, value in ctxt.items():
            inner[CONTEXT_PREFIX + str(key)] = value
    return _dump(inner, binary)


def encode_reply(msg_id, unique_id, result=None, failure=None, bint ending=True,
                 bint binary=False):
    cdef dict inner = {"result": result, "failure": failure, "ending": ending,
                       "_msg_id": msg_id, "_unique_id": unique_id}
    return _dump(inner, binary)


def _reject_ext(code, data):
    raise ValueError(f"msgpack extension type {code} is not accepted")


cdef _check_version(object version):
    cdef list parts
    if isinstance(version, str):
        parts = version.split(".")
        if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
            if int(parts[0]) == 2 and all(int(p) == 0 for p in parts[1:]):
                return
        raise EnvelopeError(f"unsupported oslo.version {version[:20]!r}")
    raise EnvelopeError(f"oslo.version is not a string ({type(version).__name__})")


cdef tuple _load(object body, object ctype, Py_ssize_t max_size):
    cdef Py_ssize_t size = len(body)
    cdef bint binary = False
    if size > max_size:
        raise EnvelopeError(f"body of {size} bytes exceeds the limit of {max_size} bytes")
    if ctype == MSGPACK or ctype == "application/x-msgpack":
        binary = True
    elif ctype is not None and ctype != JSON and ctype != "":
        raise EnvelopeError(f"unsupported content type {ctype[:60]!r}")
    if binary:
        try:
            outer = _unpackb(body, raw=False, strict_map_key=False, ext_hook=_reject_ext, timestamp=0)
        except Exception as exc:
            raise EnvelopeError(f"body is not valid msgpack ({type(exc).__name__})", binary=True) from None
    else:
        try:
            outer = _loads(body)
        except _JSONDecodeError:
            raise EnvelopeError("body is not valid JSON") from None
    if type(outer) is not dict:
        raise EnvelopeError(f"envelope is not a mapping ({type(outer).__name__})", binary=binary)
    if VERSION_KEY not in outer or MESSAGE_KEY not in outer:
        return outer, binary
    _check_version(outer[VERSION_KEY])
    raw = outer[MESSAGE_KEY]
    if binary:
        inner = raw
    else:
        if not isinstance(raw, str):
            raise EnvelopeError("oslo.message is not a string")
        try:
            inner = _loads(raw)
        except _JSONDecodeError:
            raise EnvelopeError("oslo.message is not valid JSON") from None
    if type(inner) is not dict:
        raise EnvelopeError(f"oslo.message is not a mapping ({type(inner).__name__})", binary=binary)
    return inner, binary


def decode_request(body, ctype=JSON, Py_ssize_t max_size=DEFAULT_MAX_BODY):
    cdef dict inner
    cdef bint binary
    cdef dict ctxt = {}
    cdef dict message = {}
    inner, binary = _load(body, ctype, max_size)
    msg_id = inner.pop("_msg_id", None)
    reply_q = inner.pop("_reply_q", None)
    if not isinstance(msg_id, str) or not isinstance(reply_q, str) or not msg_id or not reply_q:
        if msg_id is not None and not isinstance(msg_id, str):
            raise EnvelopeError("_msg_id is not a string", binary=binary)
        if reply_q is not None and not isinstance(reply_q, str):
            raise EnvelopeError("_reply_q is not a string", binary=binary)
        if msg_id and not reply_q:
            raise EnvelopeError("call without _reply_q", binary=binary)
        msg_id = msg_id or None
        reply_q = None if msg_id is None else reply_q
    for key, value in inner.items():
        if type(key) is not str:
            raise EnvelopeError("message has a non-string key", msg_id, reply_q, binary)
        if (<str>key).startswith(CONTEXT_PREFIX):
            ctxt[(<str>key)[9:]] = value
        else:
            message[key] = value
    timeout = message.pop("_timeout", None)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise EnvelopeError("_timeout is not a number", msg_id, reply_q, binary)
    unique_id = message.pop("_unique_id", None)
    if unique_id is not None and not isinstance(unique_id, str):
        raise EnvelopeError("_unique_id is not a string", msg_id, reply_q, binary)
    method = message.get("method")
    if not isinstance(method, str) or not method:
        reason = "missing method" if method is None else "method is not a non-empty string"
        raise EnvelopeError(reason, msg_id, reply_q, binary)
    args = message.get("args")
    if args is None:
        if "args" in message:
            raise EnvelopeError("args is not a mapping (null)", msg_id, reply_q, binary)
        message["args"] = {}
    elif type(args) is not dict:
        raise EnvelopeError(f"args is not a mapping ({type(args).__name__})", msg_id, reply_q, binary)
    else:
        for key in <dict>args:
            if type(key) is not str:
                raise EnvelopeError("args has a non-string key", msg_id, reply_q, binary)
    for key in ("namespace", "version"):
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise EnvelopeError(f"{key} is not a string", msg_id, reply_q, binary)
    return Request(ctxt, message, unique_id, msg_id, reply_q, timeout, binary)


def decode_reply(body, ctype=JSON, Py_ssize_t max_size=DEFAULT_MAX_BODY):
    cdef dict inner
    inner, _binary = _load(body, ctype, max_size)
    msg_id = inner.get("_msg_id")
    if not isinstance(msg_id, str) or not msg_id:
        raise EnvelopeError("reply without a valid _msg_id")
    unique_id = inner.get("_unique_id")
    if unique_id is not None and not isinstance(unique_id, str):
        raise EnvelopeError("_unique_id is not a string")
    failure = inner.get("failure")
    if failure is not None and not isinstance(failure, str):
        raise EnvelopeError("failure is not a string")
    return Reply(msg_id, unique_id, inner.get("result"), failure, bool(inner.get("ending", False)))
