# cython: language_level=3
"""Compiled oslo.messaging envelope codec (twin of fastrpc.envelope_py).

Same functions, same results and the same exception classes as the pure-Python
module; the shared types (EnvelopeError, Request, Reply) live there so callers
can catch one class whichever codec is loaded.

A JSON body laid out exactly as oslo.messaging or fastrpc write it is read with
one JSON parse (the quoted inner message is unescaped in C); any other body
takes the general two-parse path, which also reports every error.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport (
    PyUnicode_1BYTE_KIND,
    PyUnicode_DATA,
    PyUnicode_DecodeASCII,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
)
from cpython.dict cimport PyDict_Check, PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.list cimport PyList_Check, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.math cimport isfinite
from libc.string cimport memchr, memcmp, memcpy

import os

import msgpack
import orjson

from fastrpc.envelope_py import (
    CONTEXT_PREFIX,
    DEFAULT_MAX_BODY,
    ENVELOPE_VERSION,
    NONFINITE_SCAN_DEPTH,
    JSON,
    MESSAGE_KEY,
    MSGPACK,
    VERSION_KEY,
    EnvelopeError,
    ID_COUNTER_MASK,
    ID_PREFIX_BYTES,
    id_seed,
    dumps_nonfinite,
    is_msgpack_type,
    loads_lenient,
    Reply,
    Request,
    to_primitive,
)

cdef bytes _JSON_PREFIX = b'{"oslo.version":"2.0","oslo.message":"'
# The same envelope as Python's json.dumps writes it (oslo.messaging, kombu).
cdef bytes _JSON_PREFIX_SPACED = b'{"oslo.version": "2.0", "oslo.message": "'
cdef bytes _JSON_SUFFIX = b'"}'
cdef str _JSON_TYPE = JSON
cdef str _ENVELOPE_VERSION = ENVELOPE_VERSION
cdef type _Request = Request
cdef type _Reply = Reply
cdef bytes _CONTEXT_PREFIX_LATIN1 = CONTEXT_PREFIX.encode("latin-1")
cdef Py_ssize_t _CONTEXT_PREFIX_LEN = len(CONTEXT_PREFIX)
cdef int _OPT_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS
cdef object _dumps = orjson.dumps
cdef object _loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError
# What orjson refuses but Python's json (oslo's peers) writes, NaN say: the
# slow path only, after orjson failed.
cdef object _loads_lenient = loads_lenient
cdef object _JSONEncodeError = orjson.JSONEncodeError
cdef int _SCAN_DEPTH = NONFINITE_SCAN_DEPTH
cdef object _packb = msgpack.packb
cdef object _unpackb = msgpack.unpackb


# ---- ids -------------------------------------------------------------------------
# new_id() as the pure module makes them (random hex prefix, 12-hex-digit
# counter), written into one buffer: no int formatting call per id. Callers
# hold the GIL and nothing here releases it, so ids never repeat.

cdef char _id_text[32]
cdef Py_ssize_t _ID_PREFIX_LEN = 2 * ID_PREFIX_BYTES  # hex digits; the counter's 12 follow
cdef unsigned long long _ID_MASK = ID_COUNTER_MASK
cdef unsigned long long _id_next = 0
assert _ID_PREFIX_LEN + 12 == 32
cdef const char* _HEX_DIGITS = b"0123456789abcdef"


def _reseed_ids():
    global _id_next
    prefix, _id_next = id_seed()
    cdef bytes text = prefix.encode("ascii")
    memcpy(_id_text, PyBytes_AS_STRING(text), _ID_PREFIX_LEN)


_reseed_ids()
# A forked child must not repeat its parent's ids (peers drop duplicates).
os.register_at_fork(after_in_child=_reseed_ids)


def new_id():
    """A unique 32-hex-digit id for ``_unique_id`` / ``_msg_id`` (see envelope_py.new_id)."""
    global _id_next
    cdef unsigned long long n = _id_next & _ID_MASK
    _id_next += 1
    cdef Py_ssize_t i
    for i in range(31, _ID_PREFIX_LEN - 1, -1):
        _id_text[i] = _HEX_DIGITS[n & 15]
        n >>= 4
    return PyUnicode_DecodeASCII(_id_text, 32, NULL)


cdef inline bint _has_null(bytes text):
    # Not ``b"null" in text``: bytes.__contains__ first tries its argument as
    # an int, raising and clearing a TypeError on every message.
    cdef const char* p = PyBytes_AS_STRING(text)
    cdef const char* end = p + PyBytes_GET_SIZE(text)
    while end - p >= 4:
        p = <const char*>memchr(p, b'n', end - p - 3)
        if p == NULL:
            return False
        if memcmp(p, b"null", 4) == 0:
            return True
        p += 1
    return False


# ---- byte loops ------------------------------------------------------------------
# Quoting a JSON text as a JSON string and back, 16 bytes at a time: a bit mask
# marks the bytes that need attention, and the bytes before the first marked
# one are copied as a block.

cdef extern from *:
    """
    #include <string.h>

    #define ENVELOPE_BACKSLASH 0x5C

    static inline int envelope_is_quote(unsigned char c) {
        return c == '"' || c == ENVELOPE_BACKSLASH;
    }

    #if defined(__SSE2__)
    #include <emmintrin.h>

    /* 0xFF in each byte of v that is '"' or backslash. */
    static inline __m128i envelope_quote_bytes(__m128i v) {
        return _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                            _mm_cmpeq_epi8(v, _mm_set1_epi8(ENVELOPE_BACKSLASH)));
    }

    /* Bit k set when byte k of p[0:16] is '"' or backslash. */
    static inline unsigned envelope_quote_mask(const char* p) {
        return (unsigned)_mm_movemask_epi8(envelope_quote_bytes(_mm_loadu_si128((const __m128i*)p)));
    }

    /* ... or below 0x20 (a control character, which a JSON string may not
       hold raw): the unsigned minimum with 0x1F equals the byte. */
    static inline unsigned envelope_special_mask(const char* p) {
        __m128i v = _mm_loadu_si128((const __m128i*)p);
        __m128i c = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);
        return (unsigned)_mm_movemask_epi8(_mm_or_si128(envelope_quote_bytes(v), c));
    }
    #else
    static inline unsigned envelope_quote_mask(const char* p) {
        unsigned m = 0;
        for (int k = 0; k < 16; k++)
            m |= (unsigned)envelope_is_quote((unsigned char)p[k]) << k;
        return m;
    }

    static inline unsigned envelope_special_mask(const char* p) {
        unsigned m = envelope_quote_mask(p);
        for (int k = 0; k < 16; k++)
            m |= (unsigned)((unsigned char)p[k] < 0x20) << k;
        return m;
    }
    #endif

    /* prefix + s with a backslash put before every '"' and backslash + suffix,
       as one bytes object built in one allocation. */
    static PyObject* envelope_quote(const char* prefix, Py_ssize_t plen, const char* s, Py_ssize_t n,
                                    const char* suffix, Py_ssize_t slen) {
        Py_ssize_t extra = 0, i = 0, k;
        unsigned m;
        for (; n - i >= 16; i += 16)
            for (m = envelope_quote_mask(s + i); m; m &= m - 1) extra++;
        for (; i < n; i++) extra += envelope_is_quote(s[i]);
        PyObject* out = PyBytes_FromStringAndSize(NULL, plen + n + extra + slen);
        if (out == NULL) return NULL;
        char* o = PyBytes_AS_STRING(out);
        memcpy(o, prefix, plen);
        o += plen;
        i = 0;
        while (n - i >= 16) {
            /* room for 16: the rest of s takes at least n - i bytes */
            memcpy(o, s + i, 16);
            m = envelope_quote_mask(s + i);
            if (m == 0) {
                o += 16;
                i += 16;
                continue;
            }
            k = __builtin_ctz(m);
            o += k;
            i += k;
            *o++ = ENVELOPE_BACKSLASH;
            *o++ = s[i++];
        }
        for (; i < n; i++) {
            if (envelope_is_quote(s[i])) *o++ = ENVELOPE_BACKSLASH;
            *o++ = s[i];
        }
        memcpy(o, suffix, slen);
        return out;
    }

    /* The content s[0:n] of a JSON string (without its quotes), unescaped, as
       bytes. Only a backslash before '"', '/' or another backslash is handled:
       on any other escape (u, n, t, ...), a raw quote or a control character
       this returns None and the caller uses the general parser, which either
       handles it or reports the error. */
    static PyObject* envelope_unescape(const char* s, Py_ssize_t n) {
        PyObject* out = PyBytes_FromStringAndSize(NULL, n);
        if (out == NULL) return NULL;
        char* o = PyBytes_AS_STRING(out);
        Py_ssize_t i = 0, j = 0, k;
        unsigned m;
        unsigned char c;
        while (i < n) {
            if (n - i >= 16) {
                /* room for 16: j <= i */
                memcpy(o + j, s + i, 16);
                m = envelope_special_mask(s + i);
                if (m == 0) {
                    i += 16;
                    j += 16;
                    continue;
                }
                k = __builtin_ctz(m);
                i += k;
                j += k;
            }
            c = (unsigned char)s[i];
            if (c == ENVELOPE_BACKSLASH) {
                /* a backslash right before the closing quote escapes it: the
                   string does not end there */
                if (i + 1 >= n) goto general;
                c = (unsigned char)s[i + 1];
                if (c != '"' && c != ENVELOPE_BACKSLASH && c != '/') goto general;
                i += 2;
            } else if (c == '"' || c < 0x20) {
                goto general;
            } else {
                i += 1;
            }
            o[j++] = (char)c;
        }
        if (j != n && _PyBytes_Resize(&out, j) < 0) return NULL;
        return out;
    general:
        Py_DECREF(out);
        Py_RETURN_NONE;
    }

    """
    object _quote "envelope_quote" (const char* prefix, Py_ssize_t plen, const char* s, Py_ssize_t n,
                                    const char* suffix, Py_ssize_t slen)
    object _unescape "envelope_unescape" (const char* s, Py_ssize_t n)


# Requests and replies are NamedTuples, built by _ev5 / _ev7.
include "tuple_build.pxi"


cdef inline bint _nonfinite_item(PyObject* item, int depth) except -1:
    cdef object value = <object>item
    if PyFloat_Check(value):
        return not isfinite(PyFloat_AS_DOUBLE(value))
    if PyDict_Check(value) or PyList_Check(value) or PyTuple_Check(value):
        return _has_nonfinite(value, depth + 1)
    return False  # str, int, None, ...: the usual values, no call


cdef bint _has_nonfinite(object value, int depth) except -1:
    """envelope_py.has_nonfinite for a dict, list or tuple, compiled
    (subclasses included, as there); floats are looked at by the caller."""
    cdef Py_ssize_t pos = 0, i
    cdef PyObject* key
    cdef PyObject* item
    if depth >= _SCAN_DEPTH:
        return False
    if PyDict_Check(value):
        while PyDict_Next(value, &pos, &key, &item):
            if _nonfinite_item(item, depth):
                return True
    elif PyList_Check(value):
        for i in range(PyList_GET_SIZE(value)):
            if _nonfinite_item(PyList_GET_ITEM(value, i), depth):
                return True
    elif PyTuple_Check(value):
        for i in range(PyTuple_GET_SIZE(value)):
            if _nonfinite_item(PyTuple_GET_ITEM(value, i), depth):
                return True
    return False


def content_type(bint binary):
    return MSGPACK if binary else JSON


cdef bytes _dump(dict inner, bint binary):
    cdef bytes text
    try:
        if binary:
            return _packb({VERSION_KEY: ENVELOPE_VERSION, MESSAGE_KEY: inner},
                          default=to_primitive, use_bin_type=True, datetime=False)
        text = _dumps(inner, default=to_primitive, option=_OPT_NON_STR_KEYS)
        # orjson writes NaN and the infinities as null; oslo's peers write and
        # read them as NaN / Infinity. Only a text with a null can hold one.
        if _has_null(text) and _has_nonfinite(inner, 0):
            text = dumps_nonfinite(inner)
    except (TypeError, ValueError, OverflowError, _JSONEncodeError) as exc:
        raise EnvelopeError(f"cannot encode message: {exc}") from None
    # orjson never emits raw control characters: quoting its output as a JSON
    # string only needs backslashes and double quotes escaped.
    return _quote(PyBytes_AS_STRING(_JSON_PREFIX), PyBytes_GET_SIZE(_JSON_PREFIX),
                  PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text),
                  PyBytes_AS_STRING(_JSON_SUFFIX), PyBytes_GET_SIZE(_JSON_SUFFIX))


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
    if type(version) is str and <str>version == _ENVELOPE_VERSION:
        return  # what every sender writes; no need to parse it
    if isinstance(version, str):
        parts = version.split(".")
        if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
            if int(parts[0]) == 2 and all(int(p) == 0 for p in parts[1:]):
                return
        raise EnvelopeError(f"unsupported oslo.version {version[:20]!r}")
    raise EnvelopeError(f"oslo.version is not a string ({type(version).__name__})")


cdef object _load_oslo_json(bytes body):
    """The inner mapping of a JSON body laid out exactly as oslo and fastrpc
    write it, with one parse instead of two; None for anything else.

    Accepts only ``{"oslo.version": "2.0", "oslo.message": "<string>"}`` in the
    compact or the json.dumps spacing, nothing after the closing brace, and a
    string that unescapes without help. Whatever is accepted is therefore a
    valid envelope that the general path would read to the same mapping; every
    other body, including every invalid one, goes to the general path, which
    gives the result or the error.
    """
    cdef const char* p = PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t start
    if n < 2 or p[n - 1] != b"}" or p[n - 2] != b'"':
        return None
    start = PyBytes_GET_SIZE(_JSON_PREFIX)
    if n < start + 2 or memcmp(p, PyBytes_AS_STRING(_JSON_PREFIX), start) != 0:
        start = PyBytes_GET_SIZE(_JSON_PREFIX_SPACED)
        if n < start + 2 or memcmp(p, PyBytes_AS_STRING(_JSON_PREFIX_SPACED), start) != 0:
            return None
    text = _unescape(p + start, n - 2 - start)
    if text is None:
        return None
    try:
        # also rejects invalid UTF-8, which would make the whole body invalid
        inner = _loads(text)
    except _JSONDecodeError:
        return None
    if type(inner) is not dict:
        return None
    return inner


def _one_parse(body):
    """The inner mapping when *body* takes the one-parse path, else None.

    Lets the tests check which bodies take that path; not part of the API.
    """
    return _load_oslo_json(<bytes>body) if type(body) is bytes else None


cdef dict _load(object body, object ctype, Py_ssize_t max_size, bint* binary_out):
    """Parse the outer envelope; return the inner mapping, set whether msgpack."""
    cdef Py_ssize_t size = len(body)
    cdef bint binary = False
    if size > max_size:
        raise EnvelopeError(f"body of {size} bytes exceeds the limit of {max_size} bytes")
    if ctype is not None and not (type(ctype) is str and <str>ctype == _JSON_TYPE):
        binary = is_msgpack_type(ctype)
    binary_out[0] = binary
    if binary:
        try:
            outer = _unpackb(body, raw=False, strict_map_key=False, ext_hook=_reject_ext, timestamp=0)
        except Exception as exc:
            raise EnvelopeError(f"body is not valid msgpack ({type(exc).__name__})", binary=True) from None
    else:
        if type(body) is bytes:
            inner = _load_oslo_json(<bytes>body)
            if inner is not None:
                return <dict>inner
        try:
            outer = _loads_lenient(body)
        except ValueError:
            raise EnvelopeError("body is not valid JSON") from None
    if type(outer) is not dict:
        raise EnvelopeError(f"envelope is not a mapping ({type(outer).__name__})", binary=binary)
    if VERSION_KEY not in outer or MESSAGE_KEY not in outer:
        return outer
    _check_version(outer[VERSION_KEY])
    raw = outer[MESSAGE_KEY]
    if binary:
        inner = raw
    else:
        if not isinstance(raw, str):
            raise EnvelopeError("oslo.message is not a string")
        try:
            inner = _loads_lenient(raw)
        except ValueError:
            raise EnvelopeError("oslo.message is not valid JSON") from None
    if type(inner) is not dict:
        raise EnvelopeError(f"oslo.message is not a mapping ({type(inner).__name__})", binary=binary)
    return inner


cdef inline bint _is_context_key(str key) except -1:
    # Compared in place for the usual one-byte strings: str.startswith costs
    # several times more, once per key of every request.
    if PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND:
        return (PyUnicode_GET_LENGTH(key) >= _CONTEXT_PREFIX_LEN
                and memcmp(PyUnicode_DATA(key), PyBytes_AS_STRING(_CONTEXT_PREFIX_LATIN1), _CONTEXT_PREFIX_LEN) == 0)
    return key.startswith(CONTEXT_PREFIX)


def decode_request(body, ctype=JSON, Py_ssize_t max_size=DEFAULT_MAX_BODY):
    cdef dict inner
    cdef bint binary
    cdef dict ctxt = {}
    cdef dict message
    cdef list context_keys = None
    inner = _load(body, ctype, max_size, &binary)
    msg_id = inner.pop("_msg_id", None)
    reply_q = inner.pop("_reply_q", None)
    if not isinstance(msg_id, str) or not isinstance(reply_q, str) or not <str>msg_id or not <str>reply_q:
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
        if _is_context_key(<str>key):
            ctxt[(<str>key)[_CONTEXT_PREFIX_LEN:]] = value
            if context_keys is None:
                context_keys = []
            context_keys.append(key)
    if context_keys is not None:
        for key in context_keys:
            del inner[key]
    # What is left of the parsed mapping, which nothing else holds, is the message.
    message = inner
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
    return _ev7(_Request, ctxt, message, unique_id, msg_id, reply_q, timeout, binary)


def decode_reply(body, ctype=JSON, Py_ssize_t max_size=DEFAULT_MAX_BODY):
    cdef dict inner
    cdef bint binary
    inner = _load(body, ctype, max_size, &binary)
    msg_id = inner.get("_msg_id")
    if not isinstance(msg_id, str) or not msg_id:
        raise EnvelopeError("reply without a valid _msg_id")
    unique_id = inner.get("_unique_id")
    if unique_id is not None and not isinstance(unique_id, str):
        raise EnvelopeError("_unique_id is not a string")
    failure = inner.get("failure")
    if failure is not None and not isinstance(failure, str):
        raise EnvelopeError("failure is not a string")
    return _ev5(_Reply, msg_id, unique_id, inner.get("result"), failure, bool(inner.get("ending", False)))
