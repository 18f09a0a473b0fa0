# cython: language_level=3
"""Compiled oslo.messaging envelope codec, one of the two implementations
behind fastrpc.envelope (the other is fastrpc.envelope_py).

Same functions and results as the pure-Python module. Both take the format's
constants, types (EnvelopeError, Request, Reply) and rules from
fastrpc.envelope_common, and so does every caller through fastrpc.envelope.

This module keeps only fast paths. A JSON body laid out exactly as
oslo.messaging or fastrpc write it is read with one JSON parse (the quoted
inner message is unescaped in C); a request or reply in the shape senders
write is accepted with checks of exact types. Everything else (other
layouts, every invalid body, unusual types) goes to the shared rules, which
give the result or the error.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport (
    PyUnicode_1BYTE_KIND,
    PyUnicode_DATA,
    PyUnicode_DecodeASCII,
    PyUnicode_GET_LENGTH,
    PyUnicode_CheckExact,
    PyUnicode_KIND,
)
from cpython.dict cimport PyDict_Check, PyDict_DelItem, PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.bool cimport PyBool_Check
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.list cimport PyList_Check, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.math cimport isfinite
from libc.stdio cimport snprintf
from libc.string cimport memchr, memcmp, memcpy

import os

import msgpack
import orjson

# Imported here, these are also this module's names, as fastrpc.envelope's
# callers expect of either implementation.
from fastrpc.envelope_common import (
    CONTEXT_PREFIX,
    DEFAULT_MAX_BODY,
    ENVELOPE_VERSION,
    ID_COUNTER_MASK,
    ID_PREFIX_BYTES,
    JSON,
    MESSAGE_KEY,
    MSGPACK,
    NONFINITE_SCAN_DEPTH,
    VERSION_KEY,
    EnvelopeError,
    Reply,
    Request,
    content_type,
    decode_notification,
    dumps_nonfinite,
    encode_bare,
    encode_failed,
    id_seed,
    invalid_msgpack,
    is_msgpack_type,
    load,
    reply_from_inner,
    request_from_inner,
    to_primitive,
    unwrap,
)

cdef bytes _JSON_PREFIX = b'{"oslo.version":"2.0","oslo.message":"'
# The same envelope as Python's json.dumps writes it (oslo.messaging, kombu).
cdef bytes _JSON_PREFIX_SPACED = b'{"oslo.version": "2.0", "oslo.message": "'
cdef bytes _JSON_SUFFIX = b'"}'
cdef str _JSON_TYPE = JSON
assert JSON == "application/json"  # _is_json_type() compares with this literal
cdef str _MSGPACK_TYPE = MSGPACK
assert MSGPACK == "application/msgpack"  # _is_msgpack_type() compares with this literal
cdef type _Request = Request
cdef type _Reply = Reply
cdef Py_ssize_t _CONTEXT_PREFIX_LEN = len(CONTEXT_PREFIX)
assert CONTEXT_PREFIX == "_context_"  # _field() compares keys with this literal
cdef object _dumps = orjson.dumps
# orjson.dumps(inner, default=to_primitive[, option=OPT_NON_STR_KEYS]) by
# vectorcall: a keyword call made from Cython builds a dict on every message.
cdef tuple _DUMPS_KWNAMES = ("default", "option")
cdef tuple _DUMPS_KWNAMES_STR_KEYS = ("default",)
cdef object _DUMPS_OPTION = orjson.OPT_NON_STR_KEYS
cdef object _to_primitive = to_primitive
cdef object _loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _JSONEncodeError = orjson.JSONEncodeError
cdef int _SCAN_DEPTH = NONFINITE_SCAN_DEPTH
# The shared rules, for whatever the fast paths do not accept.
cdef object _load_general = load
cdef object _unwrap = unwrap
cdef object _request_from_inner = request_from_inner
cdef object _reply_from_inner = reply_from_inner


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
    """A unique 32-hex-digit id for ``_unique_id`` / ``_msg_id`` (see fastrpc.envelope_py.new_id)."""
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
        if (i < n && n >= 16) {
            /* the last n - i bytes: the top bits of the last 16 bytes' mask */
            for (m = envelope_quote_mask(s + n - 16) >> (16 - (n - i)); m; m &= m - 1) extra++;
            i = n;
        }
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
# msgpack bodies: _mp_dump_envelope, _mp_load_body.
include "msgpack_codec.pxi"
# the inner JSON of the usual envelope: _js_load_object, _js_load_fields.
include "json_reader.pxi"
# JSON written into the envelope's string: _jw_dump.
include "json_writer.pxi"

include "msgpack_fields.pxi"


cdef inline bint _nonfinite_item(PyObject* item, int depth) except -1:
    cdef object value = <object>item
    # The usual values first, by exact type: PyFloat_Check on them would
    # walk their type's bases to rule out a float subclass.
    if (item == <PyObject*>None or PyUnicode_CheckExact(value) or PyLong_CheckExact(value)
            or PyBool_Check(value)):
        return False
    if PyFloat_Check(value):
        return not isfinite(PyFloat_AS_DOUBLE(value))
    if PyDict_Check(value) or PyList_Check(value) or PyTuple_Check(value):
        return _has_nonfinite(value, depth + 1)
    return False  # str, int, None, ...: the usual values, no call


cdef bint _has_nonfinite(object value, int depth) except -1:
    """envelope_common.has_nonfinite for a dict, list or tuple, compiled
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


cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, object kwnames)
    Py_ssize_t PyDict_GET_SIZE(object d)
    # the same, called without keywords (kwnames NULL)
    object _vectorcall_positional "PyObject_Vectorcall" (object callable, PyObject** args, size_t nargsf, PyObject* kwnames)


cdef inline object _dumps_json(object inner):
    # As envelope_common.dumps_json: keys that are all str first (orjson's
    # faster path), then, if it refused the message, with keys of other types.
    cdef PyObject* args[3]
    args[0] = <PyObject*>inner
    args[1] = <PyObject*>_to_primitive
    args[2] = <PyObject*>_DUMPS_OPTION
    try:
        return PyObject_Vectorcall(_dumps, args, 1, _DUMPS_KWNAMES_STR_KEYS)
    except _JSONEncodeError:
        return PyObject_Vectorcall(_dumps, args, 1, _DUMPS_KWNAMES)


cdef bytes _dump(dict inner, bint binary, object scanned, int depth):
    """``scanned``: the part of ``inner`` that may hold a float, at ``depth``
    (all of it at -1, or a reply's result, an item of it, at 0)."""
    cdef bytes text
    try:
        if binary:
            return _mp_dump_envelope(inner, _to_primitive)
        text = _dumps_json(inner)
        # orjson writes NaN and the infinities as null; oslo's peers write and
        # read them as NaN / Infinity. Only a text with a null can hold one.
        if _has_null(text) and _nonfinite_item(<PyObject*>scanned, depth):
            text = dumps_nonfinite(inner)
    except (TypeError, ValueError, OverflowError, _JSONEncodeError) as exc:
        raise encode_failed(exc) from None
    # orjson never emits raw control characters: quoting its output as a JSON
    # string only needs backslashes and double quotes escaped.
    return _quote(PyBytes_AS_STRING(_JSON_PREFIX), PyBytes_GET_SIZE(_JSON_PREFIX),
                  PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text),
                  PyBytes_AS_STRING(_JSON_SUFFIX), PyBytes_GET_SIZE(_JSON_SUFFIX))


# ---- encoding without the inner dict -----------------------------------------------
# The usual request (a dict message, no context, plain ids) and reply (no
# failure, plain ids): orjson writes only the message or the result, and the
# fields that encode_request / encode_reply would add to the inner dict are
# written after it, already quoted. orjson writes the same keys and values
# in the same order without spaces, so the bytes are those of the inner dict;
# anything else takes the inner dict.

cdef enum:
    _PLAIN_ID_MAX = 128  # longer ids take the inner dict
cdef bytes _REPLY_HEAD = _JSON_PREFIX + b'{\\"result\\":'
cdef bytes _REPLY_ENDING_TRUE = b',\\"failure\\":null,\\"ending\\":true,\\"_msg_id\\":\\"'
cdef bytes _REPLY_ENDING_FALSE = b',\\"failure\\":null,\\"ending\\":false,\\"_msg_id\\":\\"'
cdef bytes _REQUEST_MSG_ID = b',\\"_msg_id\\":\\"'
cdef bytes _REQUEST_REPLY_Q = b'\\",\\"_reply_q\\":\\"'
cdef bytes _REQUEST_TIMEOUT = b'\\",\\"_timeout\\":'
cdef bytes _REQUEST_UNIQUE_ID = b',\\"_unique_id\\":\\"'  # after the timeout, or first
cdef bytes _ID_UNIQUE_ID = b'\\",\\"_unique_id\\":\\"'  # after the reply's msg id
cdef bytes _TAIL_END = b'\\"}"}'
cdef long long _TIMEOUT_INT_MAX = 1LL << 53


cdef extern from *:
    """
    /* Whether s[0:n] is printable ASCII without '"' or backslash: orjson
       writes it unchanged inside a string, and quoting for the envelope
       leaves it so too. */
    static inline int envelope_plain_byte(unsigned char c) {
        return c >= 0x20 && c < 0x7f && c != '"' && c != ENVELOPE_BACKSLASH;
    }

    #if defined(__SSE2__)
    /* Nonzero when one of the 16 bytes at p is not plain. */
    static inline unsigned envelope_not_plain_mask(const char* p) {
        __m128i v = _mm_loadu_si128((const __m128i*)p);
        /* signed: below 0x20, or 0x80 and above */
        __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                   _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
        return (unsigned)_mm_movemask_epi8(_mm_or_si128(bad, envelope_quote_bytes(v)));
    }

    static inline int envelope_plain(const char* s, Py_ssize_t n) {
        Py_ssize_t i = 0;
        if (n < 16) {
            for (; i < n; i++)
                if (!envelope_plain_byte((unsigned char)s[i])) return 0;
            return 1;
        }
        for (; n - i > 16; i += 16)
            if (envelope_not_plain_mask(s + i)) return 0;
        /* the last 16 bytes, overlapping what was looked at */
        return envelope_not_plain_mask(s + n - 16) == 0;
    }
    #else
    static inline int envelope_plain(const char* s, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++)
            if (!envelope_plain_byte((unsigned char)s[i])) return 0;
        return 1;
    }
    #endif

    /* Whether '"' followed by '_' occurs in p[0:n]. */
    static inline int envelope_quote_underscore(const char* p, Py_ssize_t n) {
        const char* end = p + n;
        const char* q = p + 1;
        while (q < end && (q = (const char*)memchr(q, '_', end - q)) != NULL) {
            if (q[-1] == '"') return 1;
            q++;
        }
        return 0;
    }

    static inline char* envelope_put(char* o, const char* s, Py_ssize_t n) {
        memcpy(o, s, n);
        return o + n;
    }
    """
    bint _plain_text "envelope_plain" (const char* s, Py_ssize_t n)
    char* _put "envelope_put" (char* o, const char* s, Py_ssize_t n)
    bint _quote_underscore "envelope_quote_underscore" (const char* p, Py_ssize_t n)


cdef inline bint _plain_id(object value):
    # an exact str written as is both by orjson and by the quoting
    return (type(value) is str and PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND
            and PyUnicode_GET_LENGTH(value) <= _PLAIN_ID_MAX
            and _plain_text(<const char*>PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value)))


cdef inline char* _put_id(char* o, object value):
    # a _plain_id: its one-byte text is its JSON text
    return _put(o, <const char*>PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value))


cdef inline char* _put_bytes(char* o, bytes text):
    return _put(o, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))


cdef object _plain_request_body(dict message, object unique_id, object msg_id, object reply_q,
                                object timeout):
    """The JSON body of encode_request for a non-empty dict message without
    context, or None when the inner dict is needed."""
    cdef char tail[3 * _PLAIN_ID_MAX + 160]  # three ids and the added fields' names
    cdef char* o = tail
    cdef bytes text
    cdef long long t = 0
    cdef char digits[24]
    cdef int ndigits = 0
    cdef int overflow = 0
    if not _plain_id(unique_id):
        return None
    if msg_id is not None:
        if not _plain_id(msg_id) or not _plain_id(reply_q):
            return None
        if timeout is not None:
            if type(timeout) is not int:
                return None
            t = PyLong_AsLongLongAndOverflow(timeout, &overflow)
            if overflow or t >= _TIMEOUT_INT_MAX or t <= -_TIMEOUT_INT_MAX:
                return None
            ndigits = snprintf(digits, sizeof(digits), "%lld", t)
    if msg_id is not None:
        o = _put_bytes(o, _REQUEST_MSG_ID)
        o = _put_id(o, msg_id)
        o = _put_bytes(o, _REQUEST_REPLY_Q)
        o = _put_id(o, reply_q)
        o = _put_bytes(o, _REQUEST_TIMEOUT)
        if timeout is None:
            o = _put(o, "null", 4)
        else:
            o = _put(o, digits, ndigits)
    o = _put_bytes(o, _REQUEST_UNIQUE_ID)
    o = _put_id(o, unique_id)
    o = _put_bytes(o, _TAIL_END)
    # the message's members, then the added fields: written here, or by orjson
    cdef int underscore = 0
    body = _jw_dump(message, True, PyBytes_AS_STRING(_JSON_PREFIX), PyBytes_GET_SIZE(_JSON_PREFIX),
                    tail, o - tail, &underscore)
    if body is None:
        try:
            text = _dumps_json(message)
        except Exception:
            # The inner dict's path gives the error, or none: an added field
            # may replace the value that failed.
            return None
        # orjson writes every key it accepts that can equal one of the added
        # fields' names as a string starting "_
        underscore = _quote_underscore(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
        # as in _dump; the added fields hold no float
        if _has_null(text) and _nonfinite_item(<PyObject*>message, -1):
            return None
        body = _quote(PyBytes_AS_STRING(_JSON_PREFIX), PyBytes_GET_SIZE(_JSON_PREFIX),
                      PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text) - 1, tail, o - tail)
    # A message key that an added field would replace: only a key starting
    # with "_" can, so most messages need no look-up.
    if underscore and (
            "_unique_id" in message
            or (msg_id is not None and ("_msg_id" in message or "_reply_q" in message or "_timeout" in message))):
        return None
    return body


# msgpack: the fields a request or reply adds, written after the message
# (or alone) without an inner dict; names in the order the inner dict has them.
cdef str _K_MSG_ID = "_msg_id"
cdef str _K_REPLY_Q = "_reply_q"
cdef str _K_TIMEOUT = "_timeout"
cdef str _K_UNIQUE_ID = "_unique_id"
cdef str _K_RESULT = "result"
cdef str _K_FAILURE = "failure"
cdef str _K_ENDING = "ending"


cdef object _msgpack_fields(dict message, PyObject** names, PyObject** values, Py_ssize_t n):
    try:
        return _mp_dump_fields(<PyObject*>message if message is not None else NULL, names, values, n,
                               _to_primitive)
    except (TypeError, ValueError, OverflowError) as exc:
        raise encode_failed(exc) from None


cdef object _msgpack_request_body(dict message, object unique_id, object msg_id, object reply_q,
                                  object timeout):
    """The msgpack body of encode_request for a message without context,
    or None when a message key is one of the added fields' names."""
    cdef PyObject* names[4]
    cdef PyObject* values[4]
    if msg_id is None:
        if _K_UNIQUE_ID in message:
            return None
        names[0] = <PyObject*>_K_UNIQUE_ID
        values[0] = <PyObject*>unique_id
        return _msgpack_fields(message, names, values, 1)
    if _K_MSG_ID in message or _K_REPLY_Q in message or _K_TIMEOUT in message or _K_UNIQUE_ID in message:
        return None
    names[0] = <PyObject*>_K_MSG_ID
    values[0] = <PyObject*>msg_id
    names[1] = <PyObject*>_K_REPLY_Q
    values[1] = <PyObject*>reply_q
    names[2] = <PyObject*>_K_TIMEOUT
    values[2] = <PyObject*>timeout
    names[3] = <PyObject*>_K_UNIQUE_ID
    values[3] = <PyObject*>unique_id
    return _msgpack_fields(message, names, values, 4)


def encode_request(message, ctxt, unique_id, msg_id=None, reply_q=None, timeout=None,
                   bint binary=False):
    if type(message) is dict and (ctxt is None or (type(ctxt) is dict and not PyDict_GET_SIZE(ctxt))):
        if binary:
            body = _msgpack_request_body(<dict>message, unique_id, msg_id, reply_q, timeout)
        elif PyDict_GET_SIZE(message):
            body = _plain_request_body(<dict>message, unique_id, msg_id, reply_q, timeout)
        else:
            body = None
        if body is not None:
            return body
    # envelope_common.request_inner, compiled: a call into Python per request
    # would cost more than these lines.
    cdef dict inner = dict(message)
    if msg_id is not None:
        inner["_msg_id"] = msg_id
        inner["_reply_q"] = reply_q
        inner["_timeout"] = timeout
    inner["_unique_id"] = unique_id
    if ctxt:
        for key, value in ctxt.items():
            inner[CONTEXT_PREFIX + str(key)] = value
    return _dump(inner, binary, inner, -1)


def encode_reply(msg_id, unique_id, result=None, failure=None, bint ending=True,
                 bint binary=False):
    cdef char tail[2 * _PLAIN_ID_MAX + 160]  # two ids and the added fields' names
    cdef char* o = tail
    cdef bytes text
    cdef PyObject* names[5]
    cdef PyObject* values[5]
    cdef object ending_value
    if binary:
        ending_value = True if ending else False
        names[0] = <PyObject*>_K_RESULT
        values[0] = <PyObject*>result
        names[1] = <PyObject*>_K_FAILURE
        values[1] = <PyObject*>failure
        names[2] = <PyObject*>_K_ENDING
        values[2] = <PyObject*>ending_value
        names[3] = <PyObject*>_K_MSG_ID
        values[3] = <PyObject*>msg_id
        names[4] = <PyObject*>_K_UNIQUE_ID
        values[4] = <PyObject*>unique_id
        return _msgpack_fields(None, names, values, 5)
    if failure is None and _plain_id(msg_id) and _plain_id(unique_id):
        o = _put_bytes(o, _REPLY_ENDING_TRUE if ending else _REPLY_ENDING_FALSE)
        o = _put_id(o, msg_id)
        o = _put_bytes(o, _ID_UNIQUE_ID)
        o = _put_id(o, unique_id)
        o = _put_bytes(o, _TAIL_END)
        body = _jw_dump(result, False, PyBytes_AS_STRING(_REPLY_HEAD), PyBytes_GET_SIZE(_REPLY_HEAD),
                        tail, o - tail, NULL)
        if body is not None:
            return body
        try:
            # in a tuple (an array to orjson), the result sits as deep as in
            # the inner dict (orjson's nesting limit), and its text is the
            # array's without the brackets
            text = _dumps_json((result,))
            if _has_null(text) and _nonfinite_item(<PyObject*>result, 0):
                text = None
        except (TypeError, ValueError, OverflowError, _JSONEncodeError) as exc:
            raise encode_failed(exc) from None
        if text is not None:
            return _quote(PyBytes_AS_STRING(_REPLY_HEAD), PyBytes_GET_SIZE(_REPLY_HEAD),
                          PyBytes_AS_STRING(text) + 1, PyBytes_GET_SIZE(text) - 2, tail, o - tail)
    cdef dict inner = {"result": result, "failure": failure, "ending": ending,
                       "_msg_id": msg_id, "_unique_id": unique_id}
    # Only the result can hold a float: the failure is a JSON text, the rest
    # str and bool.
    return _dump(inner, binary, result, 0)


cdef inline object _loads_bytes(object text):
    # orjson.loads(text) by vectorcall, without Cython's generic call path
    cdef PyObject* args[1]
    args[0] = <PyObject*>text
    return _vectorcall_positional(_loads, args, 1, NULL)


cdef Py_ssize_t _oslo_inner_span(bytes body, Py_ssize_t* start_out):
    """Where the quoted inner JSON text of a JSON body laid out exactly as
    oslo and fastrpc write it starts (*start_out) and its length; -1 for
    anything else.

    Accepts only ``{"oslo.version": "2.0", "oslo.message": "<string>"}`` in the
    compact or the json.dumps spacing, nothing after the closing brace.
    Whatever is accepted, with a string that reads as JSON, is therefore a
    valid envelope, which the general path would read to the same mapping;
    every other body, including every invalid one, goes to the general path,
    which gives the result or the error.
    """
    cdef const char* p = PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t start
    if n < 2 or p[n - 1] != b"}" or p[n - 2] != b'"':
        return -1
    start = PyBytes_GET_SIZE(_JSON_PREFIX)
    if n < start + 2 or memcmp(p, PyBytes_AS_STRING(_JSON_PREFIX), start) != 0:
        start = PyBytes_GET_SIZE(_JSON_PREFIX_SPACED)
        if n < start + 2 or memcmp(p, PyBytes_AS_STRING(_JSON_PREFIX_SPACED), start) != 0:
            return -1
    start_out[0] = start
    return n - 2 - start


cdef object _oslo_inner_text(bytes body):
    """The inner JSON text, unescaped, of a body _oslo_inner_span accepts
    (None for others, and for a string that does not unescape without help)."""
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t n = _oslo_inner_span(body, &start)
    if n < 0:
        return None
    return _unescape(PyBytes_AS_STRING(body) + start, n)


cdef enum:
    _FIELDS_LEFT
    _FIELDS_IN_PLACE
    _FIELDS_UNESCAPED


cdef int _load_fields(bytes body, int mode, js_fields* f) except -1:
    """Reads a usual JSON body's inner text into *f (see js_load_fields):
    in place while still quoted, else unescaped first; says which, or
    _FIELDS_LEFT (0) when *f holds nothing."""
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t n = _oslo_inner_span(body, &start)
    if n < 0:
        return _FIELDS_LEFT
    if _js_load_fields(PyBytes_AS_STRING(body) + start, n, True, mode, f):
        return _FIELDS_IN_PLACE
    text = _unescape(PyBytes_AS_STRING(body) + start, n)
    if text is not None and _js_load_fields(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text), False, mode, f):
        return _FIELDS_UNESCAPED
    return _FIELDS_LEFT


cdef object _load_oslo_json(bytes body):
    """The inner mapping of a JSON body laid out as _oslo_inner_text accepts,
    with one parse instead of two; None for anything else."""
    text = _oslo_inner_text(body)
    if text is None:
        return None
    inner = _js_load_object(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
    if inner is not None:
        return inner
    try:
        # also rejects invalid UTF-8, which would make the whole body invalid
        inner = _loads_bytes(text)
    except _JSONDecodeError:
        return None
    if type(inner) is not dict:
        return None
    return inner


cdef inline bint _one_parse_body(object body, object ctype, Py_ssize_t max_size):
    # A body _load would read with _load_oslo_json first.
    return (type(body) is bytes and PyBytes_GET_SIZE(body) <= max_size
            and (ctype is None or (type(ctype) is str and _is_json_type(<str>ctype))))


cdef inline bint _msgpack_body(object body, object ctype, Py_ssize_t max_size):
    # A body _load would read as msgpack.
    return (type(body) is bytes and PyBytes_GET_SIZE(body) <= max_size
            and type(ctype) is str and _is_msgpack_type(<str>ctype))


cdef inline object _field_value(js_fields* f, int i):
    return <object>f.field[i] if f.field[i] != NULL else None


cdef inline bint _plain_call_fields(object msg_id, object reply_q, object timeout, object unique_id,
                                    object method):
    """Whether a request's fields have the types senders write (else the
    general rules judge it)."""
    if msg_id is None:
        if reply_q is not None:
            return False
    elif type(msg_id) is not str or type(reply_q) is not str or not <str>msg_id or not <str>reply_q:
        return False
    if timeout is not None and type(timeout) is not float and type(timeout) is not int:
        return False
    if unique_id is not None and type(unique_id) is not str:
        return False
    return type(method) is str and PyUnicode_GET_LENGTH(method) > 0


cdef inline object _plain_reply(object msg_id, object unique_id, object result, object failure,
                                object ending):
    """The Reply of fields with the types senders write; None for others
    (the general rules judge them)."""
    if (type(msg_id) is str and <str>msg_id and (unique_id is None or type(unique_id) is str)
            and (failure is None or type(failure) is str)):
        return _ev5(_Reply, msg_id, unique_id, result, failure, True if ending else False)
    return None


cdef inline bint _read_fields(bytes body, bint binary, int mode, js_fields* f) except -1:
    """A usual JSON (or, ``binary``, msgpack) body's top level read into *f;
    False when it is left to the general path (*f then holds nothing)."""
    if binary:
        return _mp_load_fields(PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), mode, f) != 0
    return _load_fields(body, mode, f) != _FIELDS_LEFT


cdef object _request_from_fields(bytes body, bint binary):
    """decode_request's result for a usual JSON (or, ``binary``, msgpack)
    request read straight into its parts (no inner mapping); None when the
    body is not such a request, and the general path decides."""
    cdef js_fields f
    if not _read_fields(body, binary, JS_REQUEST, &f):
        return None
    try:
        message = <dict>f.message
        ctxt = <dict>f.context if f.context != NULL else {}
        msg_id = _field_value(&f, JS_MSG_ID)
        reply_q = _field_value(&f, JS_REPLY_Q)
        timeout = _field_value(&f, JS_TIMEOUT)
        unique_id = _field_value(&f, JS_UNIQUE_ID)
    finally:
        _js_fields_clear(&f)
    # the checks _plain_request makes (the top level's keys are str here)
    if not _plain_call_fields(msg_id, reply_q, timeout, unique_id, message.get("method")):
        return None
    for name in ("namespace", "version"):
        value = message.get(name)
        if value is not None and type(value) is not str:
            return None
    if "args" in message:
        args = message["args"]
        if type(args) is not dict:
            return None
        if binary:  # msgpack's argument names may be of any type
            for name in <dict>args:
                if type(name) is not str:
                    return None
    else:
        message["args"] = {}
    return _ev7(_Request, ctxt, message, unique_id, msg_id, reply_q, timeout, binary)


cdef object _reply_from_fields(bytes body, bint binary):
    """decode_reply's result for a usual JSON (or, ``binary``, msgpack) reply
    read straight into its fields; None when the body is not such a reply."""
    cdef js_fields f
    if not _read_fields(body, binary, JS_REPLY, &f):
        return None
    try:
        msg_id = _field_value(&f, JS_MSG_ID)
        unique_id = _field_value(&f, JS_UNIQUE_ID)
        result = _field_value(&f, JS_RESULT)
        failure = _field_value(&f, JS_FAILURE)
        ending = _field_value(&f, JS_ENDING)
    finally:
        _js_fields_clear(&f)
    return _plain_reply(msg_id, unique_id, result, failure, ending)


def _fields_read(body, bint reply):
    """How a usual JSON request (or reply) body is read into its parts:
    "in place" (still quoted), "unescaped" (read again after unescaping), or
    None when it is left to the inner mapping's path.

    Lets the tests check which bodies take which path; not part of the API.
    """
    cdef js_fields f
    if type(body) is not bytes:
        return None
    cdef int path = _load_fields(<bytes>body, JS_REPLY if reply else JS_REQUEST, &f)
    if path == _FIELDS_LEFT:
        return None
    _js_fields_clear(&f)
    return "in place" if path == _FIELDS_IN_PLACE else "unescaped"


def _msgpack_fields_read(body, bint reply):
    """Whether a usual msgpack request (or reply) body is read straight into
    its parts (else it is left to the inner mapping's path).

    Lets the tests check which bodies take which path; not part of the API.
    """
    cdef js_fields f
    if type(body) is not bytes:
        return False
    if not _read_fields(<bytes>body, True, JS_REPLY if reply else JS_REQUEST, &f):
        return False
    _js_fields_clear(&f)
    return True


def _json_written(value):
    """``value``'s JSON as the C writer puts it into the envelope's string
    (quoted), or None when it leaves the value to orjson.

    Lets the tests compare the writer with orjson; not part of the API.
    """
    return _jw_dump(value, False, b"", 0, b"", 0, NULL)


def _json_read(bytes text not None):
    """The dict the C reader makes of a JSON text (bytes), or None when it
    leaves the text to orjson.

    Lets the tests compare the reader with orjson; not part of the API.
    """
    return _js_load_object(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))


def _one_parse(body):
    """The inner mapping when *body* takes the one-parse path, else None.

    Lets the tests check which bodies take that path; not part of the API.
    """
    return _load_oslo_json(<bytes>body) if type(body) is bytes else None


cdef inline bint _is_json_type(str ctype):
    # ctype == JSON, compared in place: a caller's "application/json" is
    # seldom the very object JSON is
    return ctype is _JSON_TYPE or (
        PyUnicode_KIND(ctype) == PyUnicode_1BYTE_KIND and PyUnicode_GET_LENGTH(ctype) == 16
        and memcmp(PyUnicode_DATA(ctype), b"application/json", 16) == 0)


cdef inline bint _is_msgpack_type(str ctype):
    # ctype == MSGPACK, compared in place as _is_json_type does
    return ctype is _MSGPACK_TYPE or (
        PyUnicode_KIND(ctype) == PyUnicode_1BYTE_KIND and PyUnicode_GET_LENGTH(ctype) == 19
        and memcmp(PyUnicode_DATA(ctype), b"application/msgpack", 19) == 0)


cdef dict _load_msgpack(bytes body):
    """The inner mapping of a msgpack body (read in C, then as the shared
    rules say unless it holds the standard envelope and a map)."""
    cdef int enveloped = 0
    cdef const char* kind = NULL
    try:
        value = _mp_load_body(PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), &enveloped, &kind)
    except Exception as exc:  # as envelope_common.load reports msgpack-python's errors
        raise invalid_msgpack((<bytes>kind).decode("ascii") if kind != NULL else type(exc).__name__) from None
    if enveloped:
        if type(value) is dict:
            return <dict>value
        value = {VERSION_KEY: ENVELOPE_VERSION, MESSAGE_KEY: value}  # for the rules' error
    return <dict>_unwrap(value, True)


cdef dict _load(object body, object ctype, Py_ssize_t max_size, bint* binary_out):
    """The inner mapping of a body; sets whether it came as msgpack."""
    cdef object inner
    if _one_parse_body(body, ctype, max_size):
        inner = _load_oslo_json(<bytes>body)
        if inner is not None:
            binary_out[0] = False
            return <dict>inner
    elif _msgpack_body(body, ctype, max_size):
        binary_out[0] = True
        return _load_msgpack(<bytes>body)
    inner, binary = _load_general(body, ctype, max_size)
    binary_out[0] = binary
    return <dict>inner


# The fields of a request or reply, told apart by _field() in one pass over
# the parsed mapping instead of one dict look-up per field.
cdef enum:
    _F_OTHER
    _F_CONTEXT
    # the call's fields, kept in this order (_plain_request tests the range)
    _F_MSG_ID
    _F_REPLY_Q
    _F_TIMEOUT
    _F_UNIQUE_ID
    _F_METHOD
    _F_ARGS
    _F_NAMESPACE
    _F_VERSION
    _F_RESULT
    _F_FAILURE
    _F_ENDING


cdef inline int _field(str key) except -1:
    """Which field an exact str key names (its text compared in place)."""
    cdef const char* s
    cdef Py_ssize_t n
    if PyUnicode_KIND(key) != PyUnicode_1BYTE_KIND:
        # none of the names below; a context key may still hold any character
        return _F_CONTEXT if key.startswith(CONTEXT_PREFIX) else _F_OTHER
    s = <const char*>PyUnicode_DATA(key)
    n = PyUnicode_GET_LENGTH(key)
    if n >= 9 and memcmp(s, b"_context_", 9) == 0:  # CONTEXT_PREFIX (asserted at the top)
        return _F_CONTEXT
    if n == 4:
        if memcmp(s, b"args", 4) == 0:
            return _F_ARGS
    elif n == 6:
        if memcmp(s, b"method", 6) == 0:
            return _F_METHOD
        if memcmp(s, b"result", 6) == 0:
            return _F_RESULT
        if memcmp(s, b"ending", 6) == 0:
            return _F_ENDING
    elif n == 7:
        if memcmp(s, b"_msg_id", 7) == 0:
            return _F_MSG_ID
        if memcmp(s, b"version", 7) == 0:
            return _F_VERSION
        if memcmp(s, b"failure", 7) == 0:
            return _F_FAILURE
    elif n == 8:
        if memcmp(s, b"_reply_q", 8) == 0:
            return _F_REPLY_Q
        if memcmp(s, b"_timeout", 8) == 0:
            return _F_TIMEOUT
    elif n == 9:
        if memcmp(s, b"namespace", 9) == 0:
            return _F_NAMESPACE
    elif n == 10:
        if memcmp(s, b"_unique_id", 10) == 0:
            return _F_UNIQUE_ID
    return _F_OTHER


cdef enum:
    _REMOVED_MAX = 16  # removed keys remembered for deletion in place


cdef object _plain_request(dict inner, bint binary):
    """The Request of a valid request in the shape senders write it (exact
    str, int and float types, no stray field); None for anything else,
    with ``inner`` left as it was.

    One pass over ``inner``: its keys are all exact str here, so telling
    them apart by their text finds what ``inner.get(name)`` would. The
    message is what is left of ``inner``, which nothing else holds, in its
    order, as the shared rules build it: the call's fields and the context
    deleted from it, or, when they are many, the other entries copied into a
    new dict.
    """
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* item
    cdef PyObject* removed[_REMOVED_MAX]
    cdef Py_ssize_t n_removed = 0, n_kept = 0, i
    cdef int field
    cdef bint has_args = False
    cdef dict ctxt = {}
    cdef dict message
    msg_id = reply_q = timeout = unique_id = method = args = None
    while PyDict_Next(inner, &pos, &key, &item):
        if type(<object>key) is not str:
            return None
        field = _field(<str>key)
        if field == _F_OTHER:
            n_kept += 1
            continue
        if field == _F_CONTEXT:
            ctxt[(<str>key)[_CONTEXT_PREFIX_LEN:]] = <object>item
        elif field == _F_MSG_ID:
            msg_id = <object>item
        elif field == _F_REPLY_Q:
            reply_q = <object>item
        elif field == _F_TIMEOUT:
            timeout = <object>item
        elif field == _F_UNIQUE_ID:
            unique_id = <object>item
        else:
            # method, args, namespace, version (or a reply's names): message fields
            if field == _F_METHOD:
                method = <object>item
            elif field == _F_ARGS:
                args = <object>item
                has_args = True
            elif field == _F_NAMESPACE or field == _F_VERSION:
                if item != <PyObject*>None and type(<object>item) is not str:
                    return None
            n_kept += 1
            continue
        if n_removed < _REMOVED_MAX:
            removed[n_removed] = key
        n_removed += 1
    if not _plain_call_fields(msg_id, reply_q, timeout, unique_id, method):
        return None
    if args is None:
        if has_args:
            return None
    elif type(args) is not dict:
        return None
    else:
        for key_obj in <dict>args:
            if type(key_obj) is not str:
                return None
    # Valid. A deletion costs about half an insertion into a new dict.
    if n_removed <= _REMOVED_MAX and n_removed <= 2 * n_kept + 2:
        # the keys are inner's own objects (found by identity) and still in
        # it until each is deleted
        for i in range(n_removed):
            PyDict_DelItem(inner, <object>removed[i])
        message = inner
    else:
        message = {}
        pos = 0
        while PyDict_Next(inner, &pos, &key, &item):
            field = _field(<str>key)
            if field != _F_CONTEXT and (field < _F_MSG_ID or field > _F_UNIQUE_ID):
                message[<str>key] = <object>item
    if args is None:
        message["args"] = {}
    return _ev7(_Request, ctxt, message, unique_id, msg_id, reply_q, timeout, binary)


def decode_request(body, ctype=JSON, Py_ssize_t max_size=DEFAULT_MAX_BODY):
    cdef bint binary
    if _one_parse_body(body, ctype, max_size):
        request = _request_from_fields(<bytes>body, False)
        if request is not None:
            return request
    elif _msgpack_body(body, ctype, max_size):
        request = _request_from_fields(<bytes>body, True)
        if request is not None:
            return request
    cdef dict inner = _load(body, ctype, max_size, &binary)
    request = _plain_request(inner, binary)
    if request is None:
        return _request_from_inner(inner, binary)
    return request


def decode_reply(body, ctype=JSON, Py_ssize_t max_size=DEFAULT_MAX_BODY):
    cdef bint binary
    if _one_parse_body(body, ctype, max_size):
        reply = _reply_from_fields(<bytes>body, False)
        if reply is not None:
            return reply
    elif _msgpack_body(body, ctype, max_size):
        reply = _reply_from_fields(<bytes>body, True)
        if reply is not None:
            return reply
    cdef dict inner = _load(body, ctype, max_size, &binary)
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* item
    cdef int field
    # One pass over the fields instead of one look-up each: with keys that
    # are all exact str, their text says what inner.get(name) would find.
    msg_id = unique_id = result = failure = None
    ending = False
    while PyDict_Next(inner, &pos, &key, &item):
        if type(<object>key) is not str:
            return _reply_from_inner(inner)
        field = _field(<str>key)
        if field == _F_MSG_ID:
            msg_id = <object>item
        elif field == _F_UNIQUE_ID:
            unique_id = <object>item
        elif field == _F_RESULT:
            result = <object>item
        elif field == _F_FAILURE:
            failure = <object>item
        elif field == _F_ENDING:
            ending = <object>item
    reply = _plain_reply(msg_id, unique_id, result, failure, ending)
    if reply is None:
        return _reply_from_inner(inner)
    return reply
