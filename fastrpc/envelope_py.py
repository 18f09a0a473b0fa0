"""oslo.messaging envelope codec in pure Python: requests and replies to bytes and back.

One of the two implementations behind :mod:`fastrpc.envelope` (the other is
ext/envelope.pyx); import that, not this. The format, the shared types and
the decoding rules are in :mod:`fastrpc.envelope_common`. No I/O here.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import msgpack

from fastrpc.envelope_common import (
    CONTEXT_PREFIX,
    DEFAULT_MAX_BODY,
    ENVELOPE_VERSION,
    ID_COUNTER_MASK,
    JSON,
    MESSAGE_KEY,
    MSGPACK,
    VERSION_KEY,
    EnvelopeError,
    Reply,
    Request,
    content_type,
    decode_notification,
    dumps_json,
    encode_bare,
    encode_failed,
    id_seed,
    is_msgpack_type,
    reply_from_inner,
    request_from_inner,
    request_inner,
    to_primitive,
)
from fastrpc.envelope_common import load as _load

# The public names of fastrpc.envelope: the compiled twin has every one of them.
__all__ = [
    "CONTEXT_PREFIX", "DEFAULT_MAX_BODY", "ENVELOPE_VERSION", "JSON", "MESSAGE_KEY", "MSGPACK", "VERSION_KEY",
    "EnvelopeError", "Reply", "Request", "content_type", "decode_notification", "decode_reply", "decode_request",
    "encode_bare", "encode_reply", "encode_request", "is_msgpack_type", "new_id", "to_primitive",
]

_JSON_PREFIX = b'{"oslo.version":"2.0","oslo.message":"'
_JSON_SUFFIX = b'"}'

_id_prefix = ""
_id_counter = itertools.count()


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix, first = id_seed()
    _id_counter = itertools.count(first)


_reseed_ids()
# A forked child must not repeat its parent's ids (peers drop duplicates).
os.register_at_fork(after_in_child=_reseed_ids)


def new_id() -> str:
    """A unique 32-hex-digit id for ``_unique_id`` / ``_msg_id``, as
    uuid4().hex is on the wire, at a fraction of its cost: 80 random bits
    per process, then a 48-bit counter."""
    return f"{_id_prefix}{next(_id_counter) & ID_COUNTER_MASK:012x}"


def _dump(inner: dict[str, Any], binary: bool) -> bytes:
    if binary:
        try:
            return msgpack.packb({VERSION_KEY: ENVELOPE_VERSION, MESSAGE_KEY: inner},
                                 default=to_primitive, use_bin_type=True, datetime=False)
        except (TypeError, ValueError, OverflowError) as exc:
            raise encode_failed(exc) from None
    text = dumps_json(inner)
    # orjson never emits raw control characters, so quoting a JSON text as a
    # JSON string only needs backslashes and double quotes escaped.
    if text.find(b"\\") >= 0:
        text = text.replace(b"\\", b"\\\\")
    return _JSON_PREFIX + text.replace(b'"', b'\\"') + _JSON_SUFFIX


def encode_request(message: dict[str, Any], ctxt: dict[str, Any] | None, unique_id: str,
                   msg_id: str | None = None, reply_q: str | None = None,
                   timeout: float | None = None, binary: bool = False) -> bytes:
    """Build a request body. ``msg_id``/``reply_q`` mark a call; ``timeout`` is
    the call-monitor timeout sent as ``_timeout``."""
    return _dump(request_inner(message, ctxt, unique_id, msg_id, reply_q, timeout), binary)


def encode_reply(msg_id: str, unique_id: str, result: Any = None, failure: str | None = None,
                 ending: bool = True, binary: bool = False) -> bytes:
    """Build a reply body (``ending=False`` is a call-monitor keepalive).
    ``ending`` is written as a JSON boolean whatever its type, as the
    compiled twin does."""
    inner = {"result": result, "failure": failure, "ending": bool(ending),
             "_msg_id": msg_id, "_unique_id": unique_id}
    return _dump(inner, binary)


def decode_request(body: Any, ctype: str | None = JSON, max_size: int = DEFAULT_MAX_BODY) -> Request:
    """Parse and validate a request body."""
    return request_from_inner(*_load(body, ctype, max_size))


def decode_reply(body: Any, ctype: str | None = JSON, max_size: int = DEFAULT_MAX_BODY) -> Reply:
    """Parse and validate a reply body."""
    return reply_from_inner(_load(body, ctype, max_size)[0])
