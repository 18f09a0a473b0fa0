"""Envelope codec micro-benchmarks: compiled vs pure-Python, side by side.

Run with::

    .venv/bin/python -m pytest bench/bench_envelope.py --benchmark-only -q

One RPC's worth of envelope work on a typical message: a call to ``echo`` with a
150-character string, empty context, and its reply. Each group
(encode-request, decode-request, decode-request-oslo, encode-reply,
decode-reply) measures the same work with both implementations; the oslo group
decodes the body as oslo.messaging writes it (``json.dumps`` spacing). Every
benchmark first checks that its implementation gives the pure-Python result.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from fastrpc import envelope_py

IMPLS: dict[str, ModuleType] = {"pure": envelope_py}
try:
    from fastrpc._ext import envelope as envelope_ext
except ImportError:  # only the pure-Python rows then
    pass
else:
    IMPLS["compiled"] = envelope_ext

PAYLOAD = ("The quick brown fox jumps over the lazy dog; " * 4)[:150]
MSG_ID = uuid.UUID(int=1).hex
UNIQUE_ID = uuid.UUID(int=2).hex
REPLY_Q = "reply_" + uuid.UUID(int=3).hex
MESSAGE: dict[str, Any] = {"method": "echo", "args": {"s": PAYLOAD}}

REQUEST = envelope_py.encode_request(MESSAGE, {}, UNIQUE_ID, msg_id=MSG_ID, reply_q=REPLY_Q, timeout=60)
REPLY = envelope_py.encode_reply(MSG_ID, UNIQUE_ID, result=PAYLOAD)
# oslo.messaging: jsonutils.dumps for the inner message, kombu's json.dumps outside
OSLO_REQUEST = json.dumps({
    "oslo.version": "2.0",
    "oslo.message": json.dumps(dict(MESSAGE, _msg_id=MSG_ID, _reply_q=REPLY_Q, _timeout=60, _unique_id=UNIQUE_ID)),
}).encode()


def _encode_request(impl: ModuleType) -> Callable[[], bytes]:
    encode = impl.encode_request
    return lambda: encode(MESSAGE, {}, UNIQUE_ID, msg_id=MSG_ID, reply_q=REPLY_Q, timeout=60)


def _encode_reply(impl: ModuleType) -> Callable[[], bytes]:
    encode = impl.encode_reply
    return lambda: encode(MSG_ID, UNIQUE_ID, result=PAYLOAD)


def _decode_request(impl: ModuleType, body: bytes = REQUEST) -> Callable[[], Any]:
    decode = impl.decode_request
    return lambda: decode(body)


def _decode_reply(impl: ModuleType) -> Callable[[], Any]:
    decode = impl.decode_reply
    return lambda: decode(REPLY)


CASES: dict[str, Callable[[ModuleType], Callable[[], Any]]] = {
    "encode-request": _encode_request,
    "decode-request": _decode_request,
    "decode-request-oslo": lambda impl: _decode_request(impl, OSLO_REQUEST),
    "encode-reply": _encode_reply,
    "decode-reply": _decode_reply,
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def test_envelope(benchmark: Any, case: str, impl: str) -> None:
    benchmark.group = case
    run = CASES[case](IMPLS[impl])
    result = run()
    assert type(result) is type(CASES[case](envelope_py)())
    assert result == CASES[case](envelope_py)()
    if case.startswith("decode-request"):
        assert result.message == MESSAGE and result.msg_id == MSG_ID and result.timeout == 60
    benchmark(run)
