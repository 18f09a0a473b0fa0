"""Type stub for the compiled envelope codec (ext/envelope.pyx).

It has the names of ``fastrpc.envelope_py.__all__``: the shared ones are
imported from fastrpc.envelope_common, the codec functions are its own.
"""

from typing import Any

from fastrpc.envelope_common import CONTEXT_PREFIX as CONTEXT_PREFIX
from fastrpc.envelope_common import DEFAULT_MAX_BODY as DEFAULT_MAX_BODY
from fastrpc.envelope_common import ENVELOPE_VERSION as ENVELOPE_VERSION
from fastrpc.envelope_common import JSON as JSON
from fastrpc.envelope_common import MESSAGE_KEY as MESSAGE_KEY
from fastrpc.envelope_common import MSGPACK as MSGPACK
from fastrpc.envelope_common import VERSION_KEY as VERSION_KEY
from fastrpc.envelope_common import EnvelopeError as EnvelopeError
from fastrpc.envelope_common import Reply as Reply
from fastrpc.envelope_common import Request as Request
from fastrpc.envelope_common import content_type as content_type
from fastrpc.envelope_common import decode_notification as decode_notification
from fastrpc.envelope_common import encode_bare as encode_bare
from fastrpc.envelope_common import is_msgpack_type as is_msgpack_type
from fastrpc.envelope_common import to_primitive as to_primitive

def new_id() -> str: ...
def encode_request(message: dict[str, Any], ctxt: dict[str, Any] | None, unique_id: str,
                   msg_id: str | None = ..., reply_q: str | None = ...,
                   timeout: float | None = ..., binary: bool = ...) -> bytes: ...
def encode_reply(msg_id: str, unique_id: str, result: Any = ..., failure: str | None = ...,
                 ending: bool = ..., binary: bool = ...) -> bytes: ...
def decode_request(body: Any, ctype: str | None = ..., max_size: int = ...) -> Request: ...
def decode_reply(body: Any, ctype: str | None = ..., max_size: int = ...) -> Reply: ...
def _one_parse(body: Any) -> dict[str, Any] | None: ...
def _fields_read(body: Any, reply: bool) -> str | None: ...
def _msgpack_fields_read(body: Any, reply: bool) -> bool: ...
def _json_read(text: bytes) -> dict[str, Any] | None: ...
def _json_written(value: Any) -> bytes | None: ...
