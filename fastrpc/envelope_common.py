"""What both envelope implementations share: the format, its types, its rules.

The oslo.messaging envelope, JSON (what oslo speaks)::

    {"oslo.version": "2.0", "oslo.message": "<inner object as a JSON string>"}

msgpack (between fastrpc peers, ``application/msgpack``): one map
``{"oslo.version": "2.0", "oslo.message": {inner map}}`` so the body is encoded
once. The inner object of a request holds ``method``, ``args``, optional
``namespace``/``version``, ``_unique_id``, for calls ``_msg_id``, ``_reply_q``
and ``_timeout``, and the context flattened to ``_context_<key>``. A reply holds
``result``, ``failure`` (JSON string or null), ``ending``, ``_msg_id`` and
``_unique_id``.

Decoding is strict about what the dispatcher relies on and raises
:class:`EnvelopeError` with a short reason that never quotes the body. The
rules are written once, here (:func:`load`, :func:`request_from_inner`,
:func:`reply_from_inner`): the pure-Python codec applies them to every body,
the compiled one to whatever its fast paths do not accept as plainly valid.
Notifications are not on a hot path and have one implementation, here too.

Import these names from :mod:`fastrpc.envelope`. No I/O here.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
from typing import Any, NamedTuple

import msgpack
import orjson

JSON = "application/json"
MSGPACK = "application/msgpack"
ENVELOPE_VERSION = "2.0"
VERSION_KEY = "oslo.version"
MESSAGE_KEY = "oslo.message"
CONTEXT_PREFIX = "_context_"
DEFAULT_MAX_BODY = 64 * 1024 * 1024

# new_id(): random bytes per process, then a counter of 12 hex digits.
ID_PREFIX_BYTES = 10
ID_COUNTER_MASK = 0xFFFFFFFFFFFF
# Deeper than this, has_nonfinite() stops looking (orjson refuses nesting past 254).
NONFINITE_SCAN_DEPTH = 256

_MSGPACK_TYPES = frozenset((MSGPACK, "application/x-msgpack"))

__all__ = [
    "CONTEXT_PREFIX", "DEFAULT_MAX_BODY", "ENVELOPE_VERSION", "JSON", "MESSAGE_KEY", "MSGPACK", "VERSION_KEY",
    "EnvelopeError", "Reply", "Request", "content_type", "decode_notification", "encode_bare", "is_msgpack_type",
    "to_primitive",
]


class EnvelopeError(ValueError):
    """A body that is not a valid oslo request or reply.

    ``reason`` is safe to log (it never contains the body). ``msg_id`` and
    ``reply_q`` are set when the inner message was readable far enough to know
    who is waiting, so the receiver can send an error reply instead of letting
    the caller time out; ``binary`` says the request came as msgpack.
    """

    def __init__(self, reason: str, msg_id: str | None = None, reply_q: str | None = None,
                 binary: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.msg_id = msg_id
        self.reply_q = reply_q
        self.binary = binary

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.msg_id, self.reply_q, self.binary))


class Request(NamedTuple):
    ctxt: dict[str, Any]
    message: dict[str, Any]
    unique_id: str | None
    msg_id: str | None
    reply_q: str | None
    timeout: float | None  # the caller's call-monitor timeout
    binary: bool  # True when the request came as msgpack


class Reply(NamedTuple):
    msg_id: str
    unique_id: str | None
    result: Any
    failure: str | None
    ending: bool


# Named after the module callers import them from (tracebacks, pickles, the
# "module" of a remote error), not after this one.
for _shared in (EnvelopeError, Request, Reply):
    _shared.__module__ = "fastrpc.envelope"
del _shared


def content_type(binary: bool) -> str:
    return MSGPACK if binary else JSON


def id_seed() -> tuple[str, int]:
    """A fresh start for new_id(): the hex prefix and the counter's first value
    (both codecs draw theirs here, per process and again after fork)."""
    return os.urandom(ID_PREFIX_BYTES).hex(), int.from_bytes(os.urandom(5), "big")


# ---- encoding ----------------------------------------------------------------------


def to_primitive(obj: Any) -> Any:
    """Fallback for values orjson/msgpack cannot encode natively."""
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if hasattr(obj, "items"):
        return dict(obj.items())
    if hasattr(obj, "__iter__"):
        return list(obj)
    raise TypeError(f"cannot serialize object of type {type(obj).__name__}")


def encode_failed(exc: Exception) -> EnvelopeError:
    """The error for a message the JSON or msgpack encoder refused."""
    return EnvelopeError(f"cannot encode message: {exc}")


_NONFINITE_TEXT = {math.inf: orjson.Fragment(b"Infinity"), -math.inf: orjson.Fragment(b"-Infinity")}
_NAN_TEXT = orjson.Fragment(b"NaN")


def has_nonfinite(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a NaN or infinite float in its dicts, lists and tuples."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth >= NONFINITE_SCAN_DEPTH:
        return False
    if isinstance(value, dict):
        return any(has_nonfinite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_nonfinite(v, depth + 1) for v in value)
    return False


def _as_written_by_python(value: Any, depth: int) -> Any:
    """``value`` with its non-finite floats replaced by the text Python's json writes for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _NONFINITE_TEXT.get(value, _NAN_TEXT)
    if depth >= NONFINITE_SCAN_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _as_written_by_python(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_written_by_python(v, depth + 1) for v in value]
    return value


def dumps_nonfinite(inner: dict[str, Any]) -> bytes:
    """orjson's JSON of ``inner`` with NaN and the infinities written as
    Python's json writes them (NaN, Infinity, -Infinity), not as null: the
    slow path for the rare message that holds one."""
    return orjson.dumps(_as_written_by_python(inner, 0), default=to_primitive, option=orjson.OPT_NON_STR_KEYS)


def dumps_json(inner: dict[str, Any]) -> bytes:
    """The JSON text of an inner message, as oslo's peers read it."""
    try:
        try:
            # Keys that are all str take orjson's faster path (the usual
            # message); a key of another type (oslo's peers write 7 as "7")
            # makes it refuse, and the message is written again allowing them.
            text = orjson.dumps(inner, default=to_primitive)
        except orjson.JSONEncodeError:
            text = orjson.dumps(inner, default=to_primitive, option=orjson.OPT_NON_STR_KEYS)
        # orjson writes NaN and the infinities as null; oslo's peers write and
        # read them as NaN / Infinity. Only a text with a null can hold one.
        # find(), not ``in``: bytes.__contains__ first tries its argument as an
        # int, raising and clearing a TypeError on every message.
        if text.find(b"null") >= 0 and has_nonfinite(inner):
            return dumps_nonfinite(inner)
        return text
    except (TypeError, ValueError, OverflowError, orjson.JSONEncodeError) as exc:
        raise encode_failed(exc) from None


def request_inner(message: dict[str, Any], ctxt: dict[str, Any] | None, unique_id: str,
                  msg_id: str | None = None, reply_q: str | None = None,
                  timeout: float | None = None) -> dict[str, Any]:
    """The inner object of a request: the message, the call's fields and the flattened context."""
    inner = dict(message)
    if msg_id is not None:
        inner["_msg_id"] = msg_id
        inner["_reply_q"] = reply_q
        inner["_timeout"] = timeout
    inner["_unique_id"] = unique_id
    if ctxt:
        for key, value in ctxt.items():
            inner[CONTEXT_PREFIX + str(key)] = value
    return inner


def encode_bare(message: dict[str, Any], ctxt: dict[str, Any] | None, unique_id: str) -> bytes:
    """The inner JSON object of a request without the envelope around it:
    what oslo sends for notifications of version 1.0."""
    return dumps_json(request_inner(message, ctxt, unique_id))


# ---- decoding ----------------------------------------------------------------------


def reject_ext(code: int, data: bytes) -> Any:
    """msgpack ext_hook: extension types are not part of the format."""
    raise ValueError(f"msgpack extension type {code} is not accepted")


def check_version(version: Any) -> None:
    if type(version) is str and version == ENVELOPE_VERSION:
        return  # what every sender writes; no need to parse it
    if isinstance(version, str):
        parts = version.split(".")
        if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
            # oslo's rule: same major, minor not above ours (2.0).
            if int(parts[0]) == 2 and all(int(p) == 0 for p in parts[1:]):
                return
        raise EnvelopeError(f"unsupported oslo.version {version[:20]!r}")
    raise EnvelopeError(f"oslo.version is not a string ({type(version).__name__})")


def is_msgpack_type(ctype: Any) -> bool:
    """Whether a body of content type ``ctype`` is msgpack (else JSON).

    None or "" means JSON (a peer may leave the type out). Parameters and case
    do not count (``application/json; charset=utf-8`` is JSON); any other type
    raises EnvelopeError.
    """
    if ctype is None or ctype == "" or ctype == JSON:
        return False
    if isinstance(ctype, str):
        if ctype in _MSGPACK_TYPES:
            return True
        media = ctype.split(";", 1)[0].strip().lower()
        if media == JSON:
            return False
        if media in _MSGPACK_TYPES:
            return True
    raise EnvelopeError(f"unsupported content type {str(ctype)[:60]!r}")


def loads_lenient(text: Any) -> Any:
    """JSON as Python's json module reads it (NaN, Infinity, lone surrogates),
    which is how oslo's peers may write it; orjson first, as it is faster.
    Raises ValueError for anything else, too deep nesting included."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def invalid_msgpack(kind: str) -> EnvelopeError:
    """The error for a body msgpack-python refuses with an exception named ``kind``."""
    return EnvelopeError(f"body is not valid msgpack ({kind})", binary=True)


def load(body: Any, ctype: str | None, max_size: int) -> tuple[dict[str, Any], bool]:
    """Parse the outer envelope; return the inner mapping and whether msgpack."""
    size = len(body)
    if size > max_size:
        raise EnvelopeError(f"body of {size} bytes exceeds the limit of {max_size} bytes")
    binary = is_msgpack_type(ctype)
    if binary:
        try:
            outer = msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=reject_ext, timestamp=0)
        except Exception as exc:  # msgpack raises several unrelated types
            raise invalid_msgpack(type(exc).__name__) from None
    else:
        try:
            outer = loads_lenient(body)
        except ValueError:
            raise EnvelopeError("body is not valid JSON") from None
    return unwrap(outer, binary), binary


def unwrap(outer: Any, binary: bool) -> dict[str, Any]:
    """The inner mapping of a parsed body: the envelope's message, or the
    body itself when it is a bare message."""
    if type(outer) is not dict:
        raise EnvelopeError(f"envelope is not a mapping ({type(outer).__name__})", binary=binary)
    if VERSION_KEY not in outer or MESSAGE_KEY not in outer:
        # Like oslo: a mapping without the envelope keys is a bare message.
        return outer
    check_version(outer[VERSION_KEY])
    raw = outer[MESSAGE_KEY]
    if binary:
        inner = raw
    else:
        if not isinstance(raw, str):
            raise EnvelopeError("oslo.message is not a string")
        try:
            inner = loads_lenient(raw)
        except ValueError:
            raise EnvelopeError("oslo.message is not valid JSON") from None
    if type(inner) is not dict:
        raise EnvelopeError(f"oslo.message is not a mapping ({type(inner).__name__})", binary=binary)
    return inner


def split_context(inner: dict[str, Any], msg_id: str | None = None, reply_q: str | None = None,
                  binary: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``_context_<key>`` entries as the context, the others as the message."""
    ctxt: dict[str, Any] = {}
    message: dict[str, Any] = {}
    for key, value in inner.items():
        if type(key) is not str:
            raise EnvelopeError("message has a non-string key", msg_id, reply_q, binary)
        if key.startswith(CONTEXT_PREFIX):
            ctxt[key[9:]] = value
        else:
            message[key] = value
    return ctxt, message


def request_from_inner(inner: dict[str, Any], binary: bool) -> Request:
    """Validate the inner mapping of a request (consumed) and split it."""
    msg_id = inner.pop("_msg_id", None)
    reply_q = inner.pop("_reply_q", None)
    if not isinstance(msg_id, str) or not isinstance(reply_q, str) or not msg_id or not reply_q:
        # Without both a reply cannot be sent; a bad one is a bad call.
        if msg_id is not None and not isinstance(msg_id, str):
            raise EnvelopeError("_msg_id is not a string", binary=binary)
        if reply_q is not None and not isinstance(reply_q, str):
            raise EnvelopeError("_reply_q is not a string", binary=binary)
        if msg_id and not reply_q:
            raise EnvelopeError("call without _reply_q", binary=binary)
        msg_id = msg_id or None
        reply_q = None if msg_id is None else reply_q
    ctxt, message = split_context(inner, msg_id, reply_q, binary)
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
        for key in args:
            if type(key) is not str:
                raise EnvelopeError("args has a non-string key", msg_id, reply_q, binary)
    for key in ("namespace", "version"):
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise EnvelopeError(f"{key} is not a string", msg_id, reply_q, binary)
    # tuple.__new__ is what the NamedTuple's own __new__ calls, minus its Python frame
    return tuple.__new__(Request, (ctxt, message, unique_id, msg_id, reply_q, timeout, binary))


def reply_from_inner(inner: dict[str, Any]) -> Reply:
    """Validate the inner mapping of a reply."""
    msg_id = inner.get("_msg_id")
    if not isinstance(msg_id, str) or not msg_id:
        raise EnvelopeError("reply without a valid _msg_id")
    unique_id = inner.get("_unique_id")
    if unique_id is not None and not isinstance(unique_id, str):
        raise EnvelopeError("_unique_id is not a string")
    failure = inner.get("failure")
    if failure is not None and not isinstance(failure, str):
        raise EnvelopeError("failure is not a string")
    return tuple.__new__(Reply, (msg_id, unique_id, inner.get("result"), failure,
                                 bool(inner.get("ending", False))))


def decode_notification(body: Any, ctype: str | None = JSON,
                        max_size: int = DEFAULT_MAX_BODY) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Parse a notification (enveloped 2.0 or bare 1.0): its context, message and ``_unique_id``.

    No field is required: oslo's notification dispatcher reads what it needs.
    """
    inner, binary = load(body, ctype, max_size)
    ctxt, message = split_context(inner, binary=binary)
    unique_id = message.pop("_unique_id", None)
    return ctxt, message, unique_id if isinstance(unique_id, str) else None
