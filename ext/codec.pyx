# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, annotation_typing=False
"""Compiled AMQP 0-9-1 frame codec: the same contract as ``fastrpc.amqp.codec_py``
(both are behind ``fastrpc.amqp.codec``).

``FrameReader`` keeps one growable byte buffer with a read and a write offset;
frames are parsed in place through a bounds-checked cursor, so the stream is
never copied per frame. basic.deliver + header + one body frame, basic.ack,
basic.nack and heartbeats have fast paths; every other method is decoded from
the method table in ``fastrpc.amqp.spec``, loaded at import into small C-friendly
objects.

``FrameWriter`` appends frames to a ``WriteBuffer`` and fills in each frame's
size once its payload is written, so several publishes and acks accumulate in
one buffer and leave in one send.

Why one file of about 1500 lines: the fast paths and the table-driven decode
and encode share the cursor, the byte-order helpers and the value mapping as
``cdef inline`` functions and module-level C tables (method info, property
types), which Cython inlines only within one module. Split into modules, they
would call each other through Python-level (or at best cimported, never
inlined) functions for every field: the cost this codec exists to avoid. The
pure twin ``fastrpc/amqp/codec_py.py`` follows it function for function.
"""

import calendar
import copy as _copy
import datetime as _dt
import decimal as _decimal

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Copy
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memmove

from fastrpc.amqp import spec as _spec

FrameError = _spec.FrameError
Delivery = _spec.Delivery
Returned = _spec.Returned
ContentMethod = _spec.ContentMethod
Method = _spec.Method
Heartbeat = _spec.Heartbeat

cdef object _FrameError = _spec.FrameError
cdef object _Delivery = _spec.Delivery
cdef object _Returned = _spec.Returned
cdef object _ContentMethod = _spec.ContentMethod
cdef object _Method = _spec.Method
cdef object _Heartbeat = _spec.Heartbeat
cdef object _HEARTBEAT0 = _spec.Heartbeat(0)

cdef object _Decimal = _decimal.Decimal
cdef object _datetime = _dt.datetime
cdef object _EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
cdef object _timedelta = _dt.timedelta
cdef object _timegm = calendar.timegm

cdef int MAX_TABLE_DEPTH = _spec.MAX_TABLE_DEPTH

DEF FRAME_METHOD = 1
DEF FRAME_HEADER = 2
DEF FRAME_BODY = 3
DEF FRAME_HEARTBEAT = 8
DEF FRAME_END = 0xCE

# Field type codes of the method table (see spec.BIT ... spec.TIMESTAMP).
DEF T_BIT = 1
DEF T_OCTET = 2
DEF T_SHORT = 3
DEF T_LONG = 4
DEF T_LONGLONG = 5
DEF T_SHORTSTR = 6
DEF T_LONGSTR = 7
DEF T_TABLE = 8
DEF T_TIMESTAMP = 9

# What a content method becomes once complete.
DEF KIND_GENERIC = 0
DEF KIND_DELIVER = 1
DEF KIND_RETURN = 2

cdef dict _TYPE_CODES = {
    _spec.BIT: T_BIT,
    _spec.OCTET: T_OCTET,
    _spec.SHORT: T_SHORT,
    _spec.LONG: T_LONG,
    _spec.LONGLONG: T_LONGLONG,
    _spec.SHORTSTR: T_SHORTSTR,
    _spec.LONGSTR: T_LONGSTR,
    _spec.TABLE: T_TABLE,
    _spec.TIMESTAMP: T_TIMESTAMP,
}


# ---- big-endian helpers ------------------------------------------------------

cdef inline uint16_t _u16(const unsigned char* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t _u32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3])


cdef inline uint64_t _u64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>_u32(p) << 32) | _u32(p + 4)


cdef inline void _p16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef inline void _p32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline void _p64(unsigned char* p, uint64_t v) noexcept nogil:
    _p32(p, <uint32_t>(v >> 32))
    _p32(p + 4, <uint32_t>v)


# ---- method table, loaded once ----------------------------------------------

cdef class _MethodInfo:
    cdef readonly int class_id
    cdef readonly int method_id
    cdef readonly str name
    cdef readonly tuple names       # field names in wire order
    cdef bytes _types               # one type code per field
    cdef const unsigned char* types
    cdef readonly int nfields
    cdef readonly bint has_content
    cdef readonly int kind
    cdef dict index                 # field name -> position
    cdef bytes frame_head           # class id + method id, big-endian


cdef dict _BY_KEY = {}
cdef dict _BY_NAME = {}


cdef _load_methods():
    cdef _MethodInfo mi
    for ms in _spec.METHODS.values():
        mi = _MethodInfo.__new__(_MethodInfo)
        mi.class_id = ms.class_id
        mi.method_id = ms.method_id
        mi.name = ms.name
        mi.names = tuple([f[0] for f in ms.fields])
        mi._types = bytes([_TYPE_CODES[f[1]] for f in ms.fields])
        mi.types = <const unsigned char*>PyBytes_AS_STRING(mi._types)
        mi.nfields = len(ms.fields)
        mi.has_content = ms.has_content
        if ms.name == "basic.deliver":
            mi.kind = KIND_DELIVER
        elif ms.name == "basic.return":
            mi.kind = KIND_RETURN
        else:
            mi.kind = KIND_GENERIC
        mi.index = {n: i for i, n in enumerate(mi.names)}
        mi.frame_head = bytes([ms.class_id >> 8, ms.class_id & 0xFF, ms.method_id >> 8, ms.method_id & 0xFF])
        _BY_KEY[(ms.class_id << 16) | ms.method_id] = mi
        _BY_NAME[ms.name] = mi


_load_methods()

cdef _MethodInfo _MI_DELIVER = _BY_NAME["basic.deliver"]

# Basic properties: names and type codes in wire order.
cdef int NPROPS = len(_spec.BASIC_PROPERTIES)
cdef tuple _PROP_NAMES = tuple([p[0] for p in _spec.BASIC_PROPERTIES])
cdef bytes _PROP_TYPES_B = bytes([_TYPE_CODES[p[1]] for p in _spec.BASIC_PROPERTIES])
cdef const unsigned char* _PROP_TYPES = <const unsigned char*>PyBytes_AS_STRING(_PROP_TYPES_B)
cdef dict _PROP_INDEX = {p[0]: i for i, p in enumerate(_spec.BASIC_PROPERTIES)}
# Properties holding a table (headers): never reused from the read cache,
# whose copies are shallow.
cdef uint16_t _TABLE_FLAGS = sum([1 << (15 - i) for i, p in enumerate(_spec.BASIC_PROPERTIES)
                                  if p[1] == _spec.TABLE])
# Longest property block (flags included) the read cache keeps.
DEF PROPS_CACHE_MAX = 128
cdef uint16_t _UNKNOWN_FLAGS = 0xFFFF & ~sum([1 << (15 - i) for i in range(len(_spec.BASIC_PROPERTIES))])


# ---- errors ------------------------------------------------------------------

cdef object _frame_error(str reason, object channel, long long offset):
    return _FrameError(reason, channel, offset)


# ---- bounds-checked read cursor ---------------------------------------------
# Every read states how many bytes it needs first; a read that would run past
# the end of the frame (or of the enclosing table) raises FrameError naming the
# field and the absolute stream offset of the read.

cdef struct Cursor:
    const unsigned char* p      # next byte to read
    const unsigned char* end    # end of the frame payload (or enclosing table)
    const unsigned char* origin # the byte at absolute offset `base`
    long long base
    int channel


cdef inline long long _offset_of(Cursor* c, const unsigned char* at) noexcept:
    return c.base + (at - c.origin)


cdef int _truncated(Cursor* c, str what) except -1:
    raise _frame_error("truncated " + what, c.channel, _offset_of(c, c.p))


cdef inline int _need(Cursor* c, Py_ssize_t n, str what) except -1:
    if c.end - c.p < n:
        _truncated(c, what)
    return 0


# Names repeat on every frame (consumer tags, exchanges, routing keys, header
# keys, content types). A small direct-mapped cache of short ASCII strings
# returns the same str object for the same bytes: no allocation, no decode, and
# its hash is already computed when it becomes a dict key.
cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object s)
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)

DEF STR_CACHE_SLOTS = 512
DEF STR_CACHE_MAX_LEN = 40
cdef list _STR_CACHE = [None] * STR_CACHE_SLOTS


cdef inline str _decode_str(const unsigned char* p, Py_ssize_t n, const char* errors):
    """utf-8 -> str (errors as for bytes.decode), through the string cache."""
    cdef uint64_t h
    cdef uint64_t a, b
    cdef Py_ssize_t i
    cdef str s
    if n > STR_CACHE_MAX_LEN:
        return PyUnicode_DecodeUTF8(<const char*>p, n, errors)
    # Slot from the length and the first and last 8 bytes: cheap, and a
    # collision only costs a decode.
    if n >= 8:
        memcpy(&a, p, 8)
        memcpy(&b, p + n - 8, 8)
        h = (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL) ^ <uint64_t>n
    else:
        h = <uint64_t>n
        for i in range(n):
            h = h * 31 + p[i]
        h *= 0x9E3779B97F4A7C15ULL
    h = (h >> 40) % STR_CACHE_SLOTS
    s = <str>_STR_CACHE[h]
    if (s is not None and PyUnicode_GET_LENGTH(s) == n
            and memcmp(PyUnicode_DATA(s), p, n) == 0):
        return s
    s = PyUnicode_DecodeUTF8(<const char*>p, n, errors)
    if PyUnicode_IS_ASCII(s):
        _STR_CACHE[h] = s
    return s


cdef inline str _read_shortstr(Cursor* c, str what):
    cdef Py_ssize_t n
    _need(c, 1, what)
    n = c.p[0]
    c.p += 1
    _need(c, n, what)
    s = _decode_str(c.p, n, "surrogateescape")
    c.p += n
    return s


cdef inline bytes _read_longstr(Cursor* c, str what):
    cdef Py_ssize_t n
    _need(c, 4, what)
    n = _u32(c.p)
    c.p += 4
    _need(c, n, what)
    b = PyBytes_FromStringAndSize(<const char*>c.p, n)
    c.p += n
    return b


cdef object _read_timestamp(Cursor* c, str what):
    cdef uint64_t secs
    _need(c, 8, what)
    secs = _u64(c.p)
    # datetime stops at 9999-12-31T23:59:59.
    if secs > 253402300799ULL:
        raise _frame_error("%s %d out of range" % (what, secs), c.channel, _offset_of(c, c.p))
    c.p += 8
    return _EPOCH + _timedelta(0, <long long>secs)


cdef object _read_value(Cursor* c, int depth, str what):
    """One tagged field value (type octet + value) of a table or array."""
    cdef unsigned char t
    cdef Py_ssize_t n
    cdef uint32_t u32
    cdef uint64_t u64
    cdef float f
    cdef double d
    cdef const unsigned char* tpos = c.p
    _need(c, 1, what)
    t = c.p[0]
    c.p += 1
    if t == b'S':
        _need(c, 4, "long string")
        n = _u32(c.p)
        c.p += 4
        _need(c, n, "long string")
        raw = <const char*>c.p
        c.p += n
        try:
            return _decode_str(<const unsigned char*>raw, n, NULL)
        except UnicodeDecodeError:
            return PyBytes_FromStringAndSize(raw, n)
    elif t == b'I':
        _need(c, 4, "long-int")
        u32 = _u32(c.p)
        c.p += 4
        return <int32_t>u32
    elif t == b't':
        _need(c, 1, "boolean")
        c.p += 1
        return (c.p - 1)[0] != 0
    elif t == b'F':
        if depth >= MAX_TABLE_DEPTH:
            raise _frame_error("table nesting deeper than %d levels" % MAX_TABLE_DEPTH, c.channel, _offset_of(c, tpos))
        return _read_table(c, depth + 1)
    elif t == b'l':
        _need(c, 8, "long-long-int")
        u64 = _u64(c.p)
        c.p += 8
        return <int64_t>u64
    elif t == b'V':
        return None
    elif t == b'A':
        if depth >= MAX_TABLE_DEPTH:
            raise _frame_error("table nesting deeper than %d levels" % MAX_TABLE_DEPTH, c.channel, _offset_of(c, tpos))
        return _read_array(c, depth + 1)
    elif t == b'T':
        return _read_timestamp(c, "timestamp")
    elif t == b'x':
        return _read_longstr(c, "byte array")
    elif t == b'b':
        _need(c, 1, "short-short-int")
        c.p += 1
        return <int8_t>(c.p - 1)[0]
    elif t == b'B':
        _need(c, 1, "short-short-uint")
        c.p += 1
        return <uint8_t>(c.p - 1)[0]
    elif t == b's':
        _need(c, 2, "short-int")
        c.p += 2
        return <int16_t>_u16(c.p - 2)
    elif t == b'u':
        _need(c, 2, "short-uint")
        c.p += 2
        return _u16(c.p - 2)
    elif t == b'i':
        _need(c, 4, "long-uint")
        c.p += 4
        return _u32(c.p - 4)
    elif t == b'f':
        _need(c, 4, "float")
        u32 = _u32(c.p)
        c.p += 4
        memcpy(&f, &u32, 4)
        return <double>f
    elif t == b'd':
        _need(c, 8, "double")
        u64 = _u64(c.p)
        c.p += 8
        memcpy(&d, &u64, 8)
        return d
    elif t == b'D':
        _need(c, 5, "decimal")
        n = c.p[0]
        u32 = _u32(c.p + 1)
        c.p += 5
        return _Decimal(<int32_t>u32).scaleb(-n)
    raise _frame_error("bad field type %r (0x%02x)" % (chr(t), t), c.channel, _offset_of(c, tpos))


cdef dict _read_table(Cursor* c, int depth):
    cdef Py_ssize_t n
    cdef Cursor sub
    cdef dict result = {}
    _need(c, 4, "table length")
    n = _u32(c.p)
    c.p += 4
    _need(c, n, "table")
    # Entries are read through a cursor that ends with the table.
    sub = c[0]
    sub.end = c.p + n
    while sub.p < sub.end:
        key = _read_shortstr(&sub, "table key")
        result[key] = _read_value(&sub, depth, "table value")
    c.p = sub.end
    return result


cdef list _read_array(Cursor* c, int depth):
    cdef Py_ssize_t n
    cdef Cursor sub
    cdef list result = []
    _need(c, 4, "array length")
    n = _u32(c.p)
    c.p += 4
    _need(c, n, "array")
    sub = c[0]
    sub.end = c.p + n
    while sub.p < sub.end:
        result.append(_read_value(&sub, depth, "array value"))
    c.p = sub.end
    return result


cdef list _read_args(Cursor* c, _MethodInfo mi):
    """Method arguments in wire order; up to 8 consecutive bits share one octet."""
    cdef int i
    cdef int bit = 8
    cdef unsigned char bits = 0
    cdef unsigned char t
    cdef list values = []
    for i in range(mi.nfields):
        t = mi.types[i]
        if t == T_BIT:
            if bit >= 8:
                _need(c, 1, <str>mi.names[i])
                bits = c.p[0]
                c.p += 1
                bit = 0
            values.append((bits >> bit) & 1 == 1)
            bit += 1
            continue
        bit = 8
        if t == T_SHORTSTR:
            values.append(_read_shortstr(c, <str>mi.names[i]))
        elif t == T_OCTET:
            _need(c, 1, <str>mi.names[i])
            c.p += 1
            values.append((c.p - 1)[0])
        elif t == T_SHORT:
            _need(c, 2, <str>mi.names[i])
            c.p += 2
            values.append(_u16(c.p - 2))
        elif t == T_LONG:
            _need(c, 4, <str>mi.names[i])
            c.p += 4
            values.append(_u32(c.p - 4))
        elif t == T_LONGLONG:
            _need(c, 8, <str>mi.names[i])
            c.p += 8
            values.append(_u64(c.p - 8))
        elif t == T_LONGSTR:
            values.append(_read_longstr(c, <str>mi.names[i]))
        elif t == T_TABLE:
            values.append(_read_table(c, 1))
        elif t == T_TIMESTAMP:
            values.append(_read_timestamp(c, <str>mi.names[i]))
    return values


cdef dict _read_properties(Cursor* c, uint16_t flags):
    """Basic properties; ``c`` is just past the property-flags word."""
    cdef int i
    cdef unsigned char t
    cdef dict props = {}
    if flags == 0:
        return props
    if flags & 1:
        # Continuation words belong to properties class basic does not have.
        raise _frame_error("property flags continuation is not valid for class basic", c.channel,
                           _offset_of(c, c.p - 2))
    if flags & _UNKNOWN_FLAGS:
        raise _frame_error("unknown property flags 0x%04x" % flags, c.channel, _offset_of(c, c.p - 2))
    for i in range(NPROPS):
        if not (flags >> (15 - i)) & 1:
            continue
        t = _PROP_TYPES[i]
        if t == T_SHORTSTR:
            v = _read_shortstr(c, <str>_PROP_NAMES[i])
        elif t == T_TABLE:
            v = _read_table(c, 1)
        elif t == T_OCTET:
            _need(c, 1, <str>_PROP_NAMES[i])
            c.p += 1
            v = (c.p - 1)[0]
        else:
            v = _read_timestamp(c, <str>_PROP_NAMES[i])
        props[_PROP_NAMES[i]] = v
    return props


# ---- event construction ------------------------------------------------------
# Events are NamedTuples, built by _ev3 ... _ev8 (tuple_build.pxi).

include "tuple_build.pxi"


cdef inline object _method_event(int channel, _MethodInfo mi, list values):
    cdef dict args = {}
    cdef int i
    for i in range(mi.nfields):
        args[mi.names[i]] = values[i]
    return _ev3(_Method, channel, mi.name, args)


cdef object _content_event(int channel, _MethodInfo mi, list values, dict props, bytes body):
    cdef dict args
    cdef int i
    if mi.kind == KIND_DELIVER:
        return _ev8(_Delivery, channel, values[0], values[1], values[2], values[3], values[4], props, body)
    if mi.kind == KIND_RETURN:
        return _ev7(_Returned, channel, values[0], values[1], values[2], values[3], props, body)
    args = {}
    for i in range(mi.nfields):
        args[mi.names[i]] = values[i]
    return _ev5(_ContentMethod, channel, mi.name, args, props, body)


cdef class _Partial:
    """A content method on one channel waiting for its header and body."""
    cdef _MethodInfo mi
    cdef list values
    cdef dict props
    cdef bint have_header
    cdef long long body_size
    cdef long long received
    cdef list chunks


# ---- reader ------------------------------------------------------------------

# Bytes of a frame split between two reads are carried over in a buffer of at
# least _CARRY_MIN. One larger than _CARRY_KEEP is freed once drained, when
# the traffic no longer needs it: after _CARRY_IDLE_FEEDS feeds in a row that
# carried nothing, or at a feed of heartbeats only (an idle connection). Not
# at once: during a stream of large messages it drains often, and allocating
# it again each time costs more than the copies it is there for.
DEF _CARRY_MIN = 16 * 1024
DEF _CARRY_KEEP = 32 * 1024
DEF _CARRY_IDLE_FEEDS = 64

cdef bint _heartbeats_only(list events):
    if not events:
        return False
    for e in events:
        if type(e) is not _Heartbeat:
            return False
    return True


cdef class FrameReader:
    """Bytes in, events out. See docs/architecture.md, "Codec contract"."""

    cdef unsigned char* _buf        # partial frames carried over between feeds
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _pos            # first unparsed byte of _buf
    cdef Py_ssize_t _end            # end of buffered data
    cdef long long _offset          # stream offset of the first unparsed byte
    cdef const unsigned char* _limit  # end of the bytes being parsed right now
    cdef public long long frame_max
    cdef public long long max_message_size
    cdef dict _partial              # channel -> _Partial
    cdef object _error              # the FrameError that killed this reader
    cdef int _clean_feeds           # feeds in a row that carried nothing
    cdef bytes _props_raw           # the last property block read (flags first), if cacheable...
    cdef dict _props_last           # ... and what it read as (handed out as copies)

    def __cinit__(self):
        self._buf = NULL
        self._cap = 0
        self._clean_feeds = 0
        self._pos = 0
        self._end = 0
        self._offset = 0
        self._partial = {}
        self._error = None

    def __init__(self, frame_max: int = _spec.DEFAULT_FRAME_MAX,
                 max_message_size: int = _spec.DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.frame_max = frame_max
        self.max_message_size = max_message_size

    def __dealloc__(self):
        if self._buf is not NULL:
            PyMem_Free(self._buf)
            self._buf = NULL

    def __repr__(self) -> str:
        return "<FrameReader buffered=%d frame_max=%d>" % (self._end - self._pos, self.frame_max)

    cdef dict _properties(self, Cursor* c, uint16_t flags):
        """_read_properties (``c`` just past the flags, up to the header's end)
        through a one-entry cache: a connection's messages mostly carry the
        same properties (a peer's content type, encoding, delivery mode,
        priority, expiration), and a copy of the dict read last costs a tenth
        of reading them again."""
        cdef const unsigned char* raw = c.p - 2
        cdef Py_ssize_t n = c.end - raw
        cdef bytes cached = self._props_raw
        cdef dict props
        if (cached is not None and PyBytes_GET_SIZE(cached) == n
                and memcmp(PyBytes_AS_STRING(cached), raw, n) == 0):
            c.p = c.end
            return PyDict_Copy(self._props_last)
        props = _read_properties(c, flags)
        if n <= PROPS_CACHE_MAX and not (flags & _TABLE_FLAGS) and c.p == c.end:
            # Only values that cannot change (no table) are shared by the copies.
            self._props_raw = PyBytes_FromStringAndSize(<const char*>raw, n)
            self._props_last = PyDict_Copy(props)
        return props

    cdef int _append(self, const unsigned char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self._end - self._pos
        cdef Py_ssize_t need
        cdef unsigned char* nb
        if self._cap - self._end < n:
            # Compact first: the consumed prefix is dead weight.
            if self._pos:
                memmove(self._buf, self._buf + self._pos, live)
                self._pos = 0
                self._end = live
            need = live + n
            if self._cap < need:
                need = max(need, self._cap * 2, _CARRY_MIN)
                nb = <unsigned char*>PyMem_Realloc(self._buf, need)
                if nb is NULL:
                    raise MemoryError()
                self._buf = nb
                self._cap = need
        memcpy(self._buf + self._end, data, n)
        self._end += n
        return 0

    def feed(self, data) -> list:
        """Append ``data`` and return the events of every complete frame."""
        cdef Py_buffer view
        cdef list events = []
        cdef Py_ssize_t used
        cdef bint clean = False
        cdef object err = self._error
        if err is not None:
            raise _FrameError("reader unusable after earlier error: %s" % (err.reason,), err.channel, err.offset)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._pos == self._end:
                # Nothing carried over: parse the caller's bytes in place and
                # keep only the incomplete tail.
                self._pos = self._end = 0
                used = self._parse(<const unsigned char*>view.buf, view.len, events)
                if used < view.len:
                    self._append((<const unsigned char*>view.buf) + used, view.len - used)
                else:
                    clean = True
            else:
                self._append(<const unsigned char*>view.buf, view.len)
                used = self._parse(self._buf + self._pos, self._end - self._pos, events)
                self._pos += used
                if self._pos == self._end:
                    self._pos = self._end = 0
        except _FrameError as exc:
            self._error = exc
            raise
        finally:
            self._limit = NULL
            PyBuffer_Release(&view)
        if not clean:
            self._clean_feeds = 0
        elif self._cap > _CARRY_KEEP:
            # Give back the memory large messages needed (see _CARRY_IDLE_FEEDS).
            self._clean_feeds += 1
            if self._clean_feeds >= _CARRY_IDLE_FEEDS or _heartbeats_only(events):
                PyMem_Free(self._buf)
                self._buf = NULL
                self._cap = 0
                self._clean_feeds = 0
        return events

    cdef Py_ssize_t _parse(self, const unsigned char* data, Py_ssize_t n, list events) except -1:
        """Parse every complete frame of data[:n]; returns the bytes consumed."""
        cdef const unsigned char* p = data
        cdef const unsigned char* limit = data + n
        cdef Py_ssize_t consumed
        cdef unsigned char ftype
        cdef int channel
        cdef uint32_t size
        cdef long long fpos
        cdef Cursor c
        self._limit = limit
        c.origin = data
        c.base = self._offset
        while limit - p >= 7:
            ftype = p[0]
            channel = _u16(p + 1)
            size = _u32(p + 3)
            fpos = c.base + (p - data)
            if ftype != FRAME_METHOD and ftype != FRAME_HEADER and ftype != FRAME_BODY and ftype != FRAME_HEARTBEAT:
                if memcmp(p, b"AMQP", 4) == 0:
                    # Only the 7 header bytes are sure to be here; the reason
                    # must not depend on how the stream was split.
                    raise _frame_error(
                        "broker answered with a protocol header (protocol %d, version %d-%d): "
                        "it does not speak AMQP 0-9-1" % (p[4], p[5], p[6]), None, fpos)
                raise _frame_error("unknown frame type %d" % ftype, channel, fpos)
            if <long long>size > self.frame_max - 8:
                raise _frame_error("frame of %d bytes exceeds frame_max %d" % (<long long>size + 8, self.frame_max),
                                   channel, fpos)
            if limit - p <= <Py_ssize_t>size + 7:
                break
            if p[7 + size] != FRAME_END:
                raise _frame_error("bad frame-end octet 0x%02x (expected 0xce)" % p[7 + size], channel,
                                   fpos + 7 + size)
            c.p = p + 7
            c.end = p + 7 + size
            c.channel = channel
            consumed = 0
            if ftype == FRAME_METHOD:
                consumed = self._method(&c, events)
            elif ftype == FRAME_BODY:
                self._body(&c, events)
            elif ftype == FRAME_HEADER:
                self._header(&c, events)
            else:
                events.append(_HEARTBEAT0 if channel == 0 else _Heartbeat(channel))
            # A fast-path delivery consumes its header and body frames too.
            p += size + 8 + consumed
        self._offset += p - data
        return p - data

    cdef Py_ssize_t _method(self, Cursor* c, list events) except -1:
        """Decode one method frame; returns extra bytes consumed by a fast path."""
        cdef uint32_t key
        cdef _MethodInfo mi
        cdef _Partial part
        cdef list values
        cdef const unsigned char* start = c.p
        if self._partial and c.channel in self._partial:
            raise _frame_error("method frame in the middle of content on channel %d" % c.channel, c.channel,
                               _offset_of(c, start - 7))
        if c.end - start < 4:
            raise _frame_error("truncated method id", c.channel,
                               _offset_of(c, start if c.end - start < 2 else start + 2))
        key = _u32(start)
        c.p += 4
        if key == 0x003C0050:  # basic.ack
            if c.end - c.p >= 9:
                events.append(_ev3(_Method, c.channel, "basic.ack", {
                    "delivery_tag": _u64(c.p), "multiple": (c.p[8] & 1) == 1}))
                return 0
        elif key == 0x003C0078:  # basic.nack
            if c.end - c.p >= 9:
                events.append(_ev3(_Method, c.channel, "basic.nack", {
                    "delivery_tag": _u64(c.p), "multiple": (c.p[8] & 1) == 1, "requeue": (c.p[8] & 2) == 2}))
                return 0
        elif key == 0x003C003C:  # basic.deliver
            return self._deliver(c, events)
        mi = _BY_KEY.get(key)
        if mi is None:
            raise _frame_error("unknown method (class %d, method %d)" % (key >> 16, key & 0xFFFF), c.channel,
                               _offset_of(c, start))
        values = _read_args(c, mi)
        if not mi.has_content:
            events.append(_method_event(c.channel, mi, values))
            return 0
        part = _Partial.__new__(_Partial)
        part.mi = mi
        part.values = values
        self._partial[c.channel] = part
        return 0

    cdef Py_ssize_t _deliver(self, Cursor* c, list events) except -1:
        """basic.deliver; when its header and single body frame are already here, finish it now."""
        cdef _Partial part
        cdef str consumer_tag, exchange, routing_key
        cdef object delivery_tag
        cdef object redelivered
        cdef const unsigned char* h = c.end + 1    # the frame after this one
        cdef const unsigned char* b
        cdef const unsigned char* limit = self._limit
        cdef uint32_t hsize, bsize
        cdef uint64_t body_size
        cdef Cursor hc
        cdef dict props
        cdef bytes body
        # Field reads and their errors are the same as _read_args would do.
        consumer_tag = _read_shortstr(c, "consumer_tag")
        _need(c, 8, "delivery_tag")
        delivery_tag = _u64(c.p)
        c.p += 8
        _need(c, 1, "redelivered")
        redelivered = (c.p[0] & 1) == 1
        c.p += 1
        exchange = _read_shortstr(c, "exchange")
        routing_key = _read_shortstr(c, "routing_key")
        # The fast path only takes input the generic path would accept without
        # complaint; anything unusual goes the slow way and fails there.
        if limit - h >= 7 + 14 and h[0] == FRAME_HEADER and _u16(h + 1) == c.channel:
            hsize = _u32(h + 3)
            if (hsize >= 14 and limit - h > <Py_ssize_t>hsize + 7 and h[7 + hsize] == FRAME_END
                    and <long long>hsize <= self.frame_max - 8 and _u16(h + 7) == 60):
                body_size = _u64(h + 11)
                b = h + hsize + 8
                if body_size <= <uint64_t>self.max_message_size:
                    hc.p = h + 7 + 14
                    hc.end = h + 7 + hsize
                    hc.origin = c.origin
                    hc.base = c.base
                    hc.channel = c.channel
                    if body_size == 0:
                        props = self._properties(&hc, _u16(h + 19))
                        events.append(_ev8(_Delivery, c.channel, consumer_tag, delivery_tag, redelivered,
                                           exchange, routing_key, props, b""))
                        return hsize + 8
                    if limit - b >= 7 and b[0] == FRAME_BODY and _u16(b + 1) == c.channel:
                        bsize = _u32(b + 3)
                        if (bsize == body_size and limit - b > <Py_ssize_t>bsize + 7 and b[7 + bsize] == FRAME_END
                                and <long long>bsize <= self.frame_max - 8):
                            props = self._properties(&hc, _u16(h + 19))
                            body = PyBytes_FromStringAndSize(<const char*>b + 7, bsize)
                            events.append(_ev8(_Delivery, c.channel, consumer_tag, delivery_tag, redelivered,
                                               exchange, routing_key, props, body))
                            return hsize + 8 + bsize + 8
        part = _Partial.__new__(_Partial)
        part.mi = _MI_DELIVER
        part.values = [consumer_tag, delivery_tag, redelivered, exchange, routing_key]
        self._partial[c.channel] = part
        return 0

    cdef int _orphan(self, str what, _Partial part, Cursor* c) except -1:
        if part is None:
            reason = "%s frame without a preceding content method" % what
        elif part.have_header:
            reason = "unexpected %s frame: content body expected" % what
        else:
            reason = "unexpected %s frame: content header expected" % what
        raise _frame_error(reason, c.channel, _offset_of(c, c.p - 7))

    cdef int _header(self, Cursor* c, list events) except -1:
        cdef _Partial part = self._partial.get(c.channel)
        cdef const unsigned char* start = c.p
        cdef Py_ssize_t size = c.end - c.p
        cdef uint64_t body_size
        cdef int class_id
        if part is None or part.have_header:
            return self._orphan("content header", part, c)
        if size < 14:
            # Name the first of class id, weight, body size, flags that overruns.
            if size < 2:
                what, at = "class id", 0
            elif size < 4:
                what, at = "weight", 2
            elif size < 12:
                what, at = "body size", 4
            else:
                what, at = "property flags", 12
            raise _frame_error("truncated content header " + what, c.channel, _offset_of(c, start + <int>at))
        class_id = _u16(start)
        if class_id != part.mi.class_id:
            raise _frame_error("content header class %d does not match method class %d" % (class_id, part.mi.class_id),
                               c.channel, _offset_of(c, start))
        body_size = _u64(start + 4)
        if body_size > <uint64_t>self.max_message_size:
            raise _frame_error("body size %d exceeds max_message_size %d" % (body_size, self.max_message_size),
                               c.channel, _offset_of(c, start + 4))
        c.p += 14
        part.props = self._properties(c, _u16(start + 12))
        part.body_size = body_size
        part.received = 0
        part.have_header = True
        if body_size == 0:
            self._complete(c.channel, part, b"", events)
        return 0

    cdef int _body(self, Cursor* c, list events) except -1:
        cdef _Partial part = self._partial.get(c.channel)
        cdef Py_ssize_t n = c.end - c.p
        if part is None or not part.have_header:
            return self._orphan("content body", part, c)
        part.received += n
        if part.received > part.body_size:
            raise _frame_error("content body of %d bytes exceeds the header's body size %d"
                               % (part.received, part.body_size), c.channel, _offset_of(c, c.p - 7))
        chunk = PyBytes_FromStringAndSize(<const char*>c.p, n)
        if part.received == part.body_size:
            if part.chunks is None:
                self._complete(c.channel, part, chunk, events)
            else:
                part.chunks.append(chunk)
                self._complete(c.channel, part, b"".join(part.chunks), events)
        elif part.chunks is None:
            part.chunks = [chunk]
        else:
            part.chunks.append(chunk)
        return 0

    cdef int _complete(self, int channel, _Partial part, bytes body, list events) except -1:
        del self._partial[channel]
        events.append(_content_event(channel, part.mi, part.values, part.props, body))
        return 0


# ---- writer ------------------------------------------------------------------

cdef object _MISSING = object()
cdef Py_ssize_t _U32_MAX = 0xFFFFFFFF

cdef extern from *:
    """
    /* int -> C integer without a Python-level comparison: 1 = fits,
       0 = out of range, -1 = error set (not an int). */
    static int fastrpc_as_u64(PyObject* v, unsigned long long* out) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) return -1;
        if (overflow == 0) {
            if (x < 0) return 0;
            *out = (unsigned long long)x;
            return 1;
        }
        if (overflow < 0) return 0;
        *out = PyLong_AsUnsignedLongLong(v);
        if (*out == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    static int fastrpc_as_i64(PyObject* v, long long* out) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) return -1;
        if (overflow) return 0;
        *out = x;
        return 1;
    }
    """
    int _as_u64 "fastrpc_as_u64" (object v, unsigned long long* out) except -1
    int _as_i64 "fastrpc_as_i64" (object v, long long* out) except -1
cdef bytes _HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
cdef bytes _PROTOCOL_HEADER = _spec.PROTOCOL_HEADER
cdef object _INT32_MIN = -(2 ** 31)
cdef object _INT32_MAX = 2 ** 31 - 1
cdef object _UINT64_MAX = 2 ** 64 - 1


# Largest buffer a WriteBuffer keeps between take() calls (a connection keeps
# a few spare writers: fastrpc.amqp.connection's SPARE_WRITERS).
DEF _KEEP_CAPACITY = 64 * 1024
# A bytes body at least this long is not copied into the buffer: its frames
# refer to it, and take() copies it once, straight into the bytes it returns.
DEF _REFER_MIN = 16 * 1024


cdef class WriteBuffer:
    """Growable output buffer; a frame's size is filled in when it ends.

    The bytes of large bytes bodies stay where they are until take(): the
    buffer holds their frames' headers and ends, and ``segments`` where each
    body piece goes. So a large message costs one copy, not two, and the
    buffer stays small.
    """

    cdef unsigned char* buf
    cdef Py_ssize_t cap
    cdef Py_ssize_t len
    cdef Py_ssize_t frame_start     # offset of the open frame's type byte
    cdef list segments              # (offset in buf, bytes, start, size), by offset; None when empty
    cdef Py_ssize_t segment_bytes   # their sizes added up

    def __cinit__(self):
        self.buf = NULL
        self.cap = 0
        self.len = 0
        self.frame_start = -1
        self.segments = None
        self.segment_bytes = 0

    def __dealloc__(self):
        if self.buf is not NULL:
            PyMem_Free(self.buf)
            self.buf = NULL

    def __len__(self) -> int:
        return self.len + self.segment_bytes

    cdef int _grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t need = self.len + n
        cdef Py_ssize_t cap = self.cap * 2 if self.cap else 4096
        cdef unsigned char* nb
        while cap < need:
            cap *= 2
        nb = <unsigned char*>PyMem_Realloc(self.buf, cap)
        if nb is NULL:
            raise MemoryError()
        self.buf = nb
        self.cap = cap
        return 0

    cdef inline int ensure(self, Py_ssize_t n) except -1:
        if self.cap - self.len < n:
            self._grow(n)
        return 0

    cdef inline int w8(self, unsigned char v) except -1:
        self.ensure(1)
        self.buf[self.len] = v
        self.len += 1
        return 0

    cdef inline int w16(self, uint16_t v) except -1:
        self.ensure(2)
        _p16(self.buf + self.len, v)
        self.len += 2
        return 0

    cdef inline int w32(self, uint32_t v) except -1:
        self.ensure(4)
        _p32(self.buf + self.len, v)
        self.len += 4
        return 0

    cdef inline int w64(self, uint64_t v) except -1:
        self.ensure(8)
        _p64(self.buf + self.len, v)
        self.len += 8
        return 0

    cdef inline int wraw(self, const void* data, Py_ssize_t n) except -1:
        self.ensure(n)
        memcpy(self.buf + self.len, data, n)
        self.len += n
        return 0

    cdef int start_frame(self, unsigned char ftype, uint16_t channel) except -1:
        self.ensure(7)
        self.frame_start = self.len
        self.buf[self.len] = ftype
        _p16(self.buf + self.len + 1, channel)
        self.len += 7   # size is filled in by end_frame
        return 0

    cdef Py_ssize_t end_frame(self) except -1:
        """Close the open frame; returns its payload size."""
        cdef Py_ssize_t size = self.len - self.frame_start - 7
        if size > _U32_MAX:
            raise ValueError("frame payload too large")
        _p32(self.buf + self.frame_start + 3, <uint32_t>size)
        self.w8(FRAME_END)
        self.frame_start = -1
        return size

    cdef int refer(self, bytes body, Py_ssize_t start, Py_ssize_t n) except -1:
        """body[start:start + n] goes here, copied only by take()."""
        if self.segments is None:
            self.segments = []
        self.segments.append((self.len, body, start, n))
        self.segment_bytes += n
        return 0

    cdef int truncate(self, Py_ssize_t mark) except -1:
        cdef tuple last
        self.len = mark
        self.frame_start = -1
        while self.segments:
            last = self.segments.pop()
            if <Py_ssize_t>last[0] < mark:
                self.segments.append(last)
                break
            self.segment_bytes -= <Py_ssize_t>last[3]
        return 0

    cdef bytes _joined(self):
        """The buffer with the segments put in."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.len + self.segment_bytes)
        cdef char* dst = PyBytes_AS_STRING(out)
        cdef Py_ssize_t done = 0, at, n
        cdef tuple seg
        for seg in self.segments:
            at = seg[0]
            n = seg[3]
            memcpy(dst, self.buf + done, at - done)
            dst += at - done
            done = at
            memcpy(dst, PyBytes_AS_STRING(<bytes>seg[1]) + <Py_ssize_t>seg[2], n)
            dst += n
        memcpy(dst, self.buf + done, self.len - done)
        self.segments = None
        self.segment_bytes = 0
        return out

    cdef bytes take(self):
        cdef bytes out
        if self.segments:
            out = self._joined()
        else:
            out = PyBytes_FromStringAndSize(<const char*>self.buf, self.len)
            self.segments = None
            self.segment_bytes = 0
        self.len = 0
        # After a big message, give the memory back instead of keeping it
        # for the next one.
        if self.cap > _KEEP_CAPACITY:
            PyMem_Free(self.buf)
            self.buf = NULL
            self.cap = 0
        return out


cdef inline int _w_utf8(WriteBuffer wb, object s, bint short, str what) except -1:
    """str -> utf-8 (shortstr: surrogateescape so decoded names round-trip)."""
    cdef const char* data
    cdef Py_ssize_t n
    encoded = None
    if PyUnicode_IS_COMPACT_ASCII(s):
        # ASCII is its own utf-8: copy straight from the str.
        data = <const char*>PyUnicode_DATA(s)
        n = PyUnicode_GET_LENGTH(s)
    elif short:
        encoded = (<str>s).encode("utf-8", "surrogateescape")
        data = PyBytes_AS_STRING(encoded)
        n = len(encoded)
    else:
        data = PyUnicode_AsUTF8AndSize(s, &n)
    if short:
        if n > 255:
            raise ValueError("%s: shortstr is %d bytes, the limit is 255" % (what, n))
        wb.w8(<unsigned char>n)
    else:
        if n > _U32_MAX:
            raise ValueError("%s too long" % what)
        wb.w32(<uint32_t>n)
    wb.wraw(data, n)
    return 0


cdef int _w_shortstr(WriteBuffer wb, object s, str what) except -1:
    cdef Py_buffer view
    if isinstance(s, str):
        return _w_utf8(wb, s, True, what)
    if not isinstance(s, (bytes, bytearray, memoryview)):
        raise TypeError("%s: shortstr needs str, got %s" % (what, type(s).__name__))
    PyObject_GetBuffer(s, &view, PyBUF_SIMPLE)
    try:
        if view.len > 255:
            raise ValueError("%s: shortstr is %d bytes, the limit is 255" % (what, view.len))
        wb.w8(<unsigned char>view.len)
        wb.wraw(view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _w_bytes32(WriteBuffer wb, object b) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
    try:
        if view.len > _U32_MAX:
            raise ValueError("longstr too long")
        wb.w32(<uint32_t>view.len)
        wb.wraw(view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _w_longstr(WriteBuffer wb, object v, str what) except -1:
    if isinstance(v, str):
        return _w_utf8(wb, v, False, what)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _w_bytes32(wb, v)
    raise TypeError("%s: longstr needs bytes or str, got %s" % (what, type(v).__name__))


cdef uint64_t _timestamp_seconds(object v, str what) except? 0:
    """datetime (naive = UTC) or int seconds -> seconds since the epoch, floored."""
    if isinstance(v, _datetime):
        if v.tzinfo is None or v.utcoffset() is None:
            secs = _timegm(v.timetuple())
        else:
            secs = _timegm(v.utctimetuple())
    elif isinstance(v, int) and not isinstance(v, bool):
        secs = v
    else:
        raise TypeError("%s: timestamp needs datetime, got %s" % (what, type(v).__name__))
    if secs < 0 or secs > _UINT64_MAX:
        raise ValueError("%s: timestamp %r is before 1970 or out of range" % (what, v))
    return <uint64_t>secs


cdef int _w_decimal(WriteBuffer wb, object v) except -1:
    sign, digits, exponent = v.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError("decimal value must be finite")
    if exponent > 0:
        scale = 0
        value = int(v)
    else:
        scale = -exponent
        value = int(v.scaleb(scale))
    if scale > 255 or not (_INT32_MIN <= value <= _INT32_MAX):
        raise ValueError("decimal value does not fit AMQP decimal (scale octet, int32)")
    wb.w8(<unsigned char>scale)
    wb.w32(<uint32_t><int32_t>value)
    return 0


cdef int _w_value(WriteBuffer wb, object v, int depth) except -1:
    """One tagged value of a table or array."""
    cdef type t = type(v)
    if t is str:
        wb.w8(b'S')
        return _w_utf8(wb, v, False, "table value")
    if t is bool:
        wb.w8(b't')
        return wb.w8(1 if v else 0)
    if t is int:
        return _w_int(wb, v)
    if v is None:
        return wb.w8(b'V')
    if t is dict:
        return _w_nested_table(wb, v, depth)
    if t is float:
        return _w_double(wb, v)
    if t is list or t is tuple:
        return _w_array(wb, v, depth)
    if t is bytes or t is bytearray or t is memoryview:
        wb.w8(b'x')
        return _w_bytes32(wb, v)
    # Subclasses and the rarer types: str, bool, int, dict, float, list/tuple,
    # bytes-like, datetime, Decimal (the pure-Python codec's order).
    if isinstance(v, str):
        wb.w8(b'S')
        return _w_utf8(wb, v, False, "table value")
    if isinstance(v, bool):
        wb.w8(b't')
        return wb.w8(1 if v else 0)
    if isinstance(v, int):
        return _w_int(wb, v)
    if isinstance(v, dict):
        return _w_nested_table(wb, v, depth)
    if isinstance(v, float):
        return _w_double(wb, v)
    if isinstance(v, (list, tuple)):
        return _w_array(wb, v, depth)
    if isinstance(v, (bytes, bytearray, memoryview)):
        wb.w8(b'x')
        return _w_bytes32(wb, v)
    if isinstance(v, _datetime):
        wb.w8(b'T')
        return wb.w64(_timestamp_seconds(v, "timestamp"))
    if isinstance(v, _Decimal):
        wb.w8(b'D')
        return _w_decimal(wb, v)
    raise TypeError("cannot encode %s in a field table" % type(v).__name__)


cdef int _w_int(WriteBuffer wb, object v) except -1:
    cdef long long x
    if _as_i64(v, &x) == 1:
        if -2147483648 <= x <= 2147483647:
            wb.w8(b'I')
            return wb.w32(<uint32_t><int32_t>x)
        wb.w8(b'l')
        return wb.w64(<uint64_t>x)
    raise ValueError("integer %d does not fit a signed 64-bit table value" % v)


cdef int _w_double(WriteBuffer wb, double d) except -1:
    cdef uint64_t u
    memcpy(&u, &d, 8)
    wb.w8(b'd')
    return wb.w64(u)


# The writer encodes whatever nesting it is given (the reader enforces
# MAX_TABLE_DEPTH); this bound only keeps a cyclic or absurd value from
# exhausting the C stack.
DEF MAX_ENCODE_DEPTH = 500


cdef int _check_depth(int depth) except -1:
    if depth >= MAX_ENCODE_DEPTH:
        raise ValueError("field table nested more than %d levels deep (or cyclic)" % MAX_ENCODE_DEPTH)
    return 0


cdef int _w_nested_table(WriteBuffer wb, object v, int depth) except -1:
    _check_depth(depth)
    wb.w8(b'F')
    return _w_table(wb, v, depth + 1)


cdef int _w_array(WriteBuffer wb, object v, int depth) except -1:
    cdef Py_ssize_t start
    _check_depth(depth)
    wb.w8(b'A')
    start = wb.len
    wb.w32(0)
    for item in v:
        _w_value(wb, item, depth + 1)
    if wb.len - start - 4 > _U32_MAX:
        raise ValueError("array too large")
    _p32(wb.buf + start, <uint32_t>(wb.len - start - 4))
    return 0


cdef int _w_table(WriteBuffer wb, object table, int depth) except -1:
    cdef Py_ssize_t start
    if table is None:
        return wb.w32(0)
    if not isinstance(table, dict):
        raise TypeError("field table needs dict, got %s" % type(table).__name__)
    start = wb.len
    wb.w32(0)
    for key, value in (<dict>table).items():
        if not isinstance(key, str):
            raise TypeError("table key %r is not a str" % (key,))
        _w_utf8(wb, key, True, "table key")
        _w_value(wb, value, depth)
    if wb.len - start - 4 > _U32_MAX:
        raise ValueError("table too large")
    _p32(wb.buf + start, <uint32_t>(wb.len - start - 4))
    return 0


cdef int _w_uint(WriteBuffer wb, object v, int t, str name) except -1:
    cdef unsigned long long u
    cdef unsigned long long limit
    if not isinstance(v, int):
        raise TypeError("%s: needs int, got %s" % (name, type(v).__name__))
    if t == T_OCTET:
        limit = 0xFF
    elif t == T_SHORT:
        limit = 0xFFFF
    elif t == T_LONG:
        limit = (<unsigned long long>1 << 32) - 1
    else:
        limit = <unsigned long long>(-1)
    if _as_u64(v, &u) != 1 or u > limit:
        raise ValueError("%s out of range for an AMQP %s" % (name, _spec_type_name(t)))
    if t == T_OCTET:
        return wb.w8(<unsigned char>u)
    if t == T_SHORT:
        return wb.w16(<uint16_t>u)
    if t == T_LONG:
        return wb.w32(<uint32_t>u)
    return wb.w64(<uint64_t>u)


cdef str _spec_type_name(int t):
    for name, code in _TYPE_CODES.items():
        if code == t:
            return name
    return "?"


cdef int _w_args(WriteBuffer wb, _MethodInfo mi, dict fields) except -1:
    """Method arguments by name, defaults for those not given."""
    cdef int i
    cdef int bit = 8
    cdef Py_ssize_t bitpos = 0
    cdef unsigned char t
    for k in fields:
        if k not in mi.index:
            raise TypeError("%s has no field %r" % (mi.name, k))
    for i in range(mi.nfields):
        t = mi.types[i]
        name = mi.names[i]
        v = fields.get(name, _MISSING)
        if t == T_BIT:
            if bit >= 8:
                bitpos = wb.len
                wb.w8(0)
                bit = 0
            if v is not _MISSING and v:
                wb.buf[bitpos] |= <unsigned char>(1 << bit)
            bit += 1
            continue
        bit = 8
        if v is _MISSING:
            if t == T_SHORTSTR:
                wb.w8(0)
            elif t == T_LONGSTR or t == T_TABLE:
                wb.w32(0)
            elif t == T_OCTET:
                wb.w8(0)
            elif t == T_SHORT:
                wb.w16(0)
            elif t == T_LONG:
                wb.w32(0)
            else:
                wb.w64(0)
        elif t == T_SHORTSTR:
            _w_shortstr(wb, v, name)
        elif t == T_LONGSTR:
            _w_longstr(wb, v, name)
        elif t == T_TABLE:
            _w_table(wb, v, 0)
        elif t == T_TIMESTAMP:
            wb.w64(_timestamp_seconds(v, name))
        else:
            _w_uint(wb, v, t, name)
    return 0


cdef inline int _w_property(WriteBuffer wb, int i, object v) except -1:
    cdef unsigned char t = _PROP_TYPES[i]
    if t == T_SHORTSTR:
        return _w_shortstr(wb, v, <str>_PROP_NAMES[i])
    if t == T_TABLE:
        return _w_table(wb, v, 0)
    if t == T_OCTET:
        return _w_uint(wb, v, T_OCTET, <str>_PROP_NAMES[i])
    return wb.w64(_timestamp_seconds(v, <str>_PROP_NAMES[i]))


cdef int _w_properties(WriteBuffer wb, object properties) except -1:
    """Property flags + the properties present (None = absent), in wire order."""
    cdef Py_ssize_t flags_pos
    cdef uint16_t flags = 0
    cdef int i, j, n
    cdef int last = -1
    cdef bint in_order = True
    cdef unsigned char order[32]
    cdef list slots
    cdef bytes packed
    if type(properties) is PackedProperties:
        packed = (<PackedProperties>properties).data
        return wb.wraw(PyBytes_AS_STRING(packed), len(packed))
    if not properties:
        return wb.w16(0)
    if not isinstance(properties, dict):
        raise TypeError("properties must be a dict, not %s" % type(properties).__name__)
    # Pass 1: reject unknown names before writing anything, note each key's
    # wire position and whether the dict already lists them in wire order.
    n = 0
    for key, value in (<dict>properties).items():
        idx = _PROP_INDEX.get(key)
        if idx is None:
            raise ValueError("unknown basic properties: %s" % ", ".join(sorted([
                str(k) for k in properties if k not in _PROP_INDEX])))
        i = idx
        order[n] = <unsigned char>i
        n += 1
        if value is not None:
            if i <= last:
                in_order = False
            last = i
    flags_pos = wb.len
    wb.w16(0)
    if in_order:
        # Usual case: encode straight from the dict, no reordering.
        j = 0
        for value in (<dict>properties).values():
            i = order[j]
            j += 1
            if value is None:
                continue
            flags |= <uint16_t>(1 << (15 - i))
            _w_property(wb, i, value)
    else:
        slots = [None] * NPROPS
        for key, value in (<dict>properties).items():
            slots[<int>_PROP_INDEX[key]] = value
        for i in range(NPROPS):
            v = slots[i]
            if v is None:
                continue
            flags |= <uint16_t>(1 << (15 - i))
            _w_property(wb, i, v)
    _p16(wb.buf + flags_pos, flags)
    return 0


@cython.final
cdef class PackedProperties:
    """Basic properties encoded once, for the messages that are all published
    with the same ones (an RPC driver's requests, replies and casts): a
    publish copies their bytes instead of reading the dict again (about 3k
    instructions per publish for five properties). Immutable, and shared by
    every thread that publishes with it; not to be subclassed."""

    cdef readonly bytes data  # the property flags and values, as a content header carries them
    cdef dict _fields

    def __init__(self, properties: dict) -> None:
        cdef WriteBuffer wb = WriteBuffer.__new__(WriteBuffer)
        if self.data is not None:
            raise TypeError("PackedProperties cannot be changed")
        if not isinstance(properties, dict):
            raise TypeError("properties must be a dict, not %s" % type(properties).__name__)
        _w_properties(wb, properties)
        self._fields = _copy.deepcopy(properties)  # tables (headers) included
        self.data = wb.take()

    @property
    def properties(self) -> dict:
        """A copy of the properties these bytes encode."""
        return _copy.deepcopy(self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not PackedProperties:
            return NotImplemented
        return self.data == (<PackedProperties>other).data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return "PackedProperties(%r)" % (self._fields,)


cdef class FrameWriter:
    """Requests in, bytes out. See docs/architecture.md, "Codec contract"."""

    # Its attributes and the methods declared cpdef are in
    # fastrpc/_ext/codec.pxi (``_wb`` is declared an object there: cast back).

    def __cinit__(self):
        self._wb = WriteBuffer.__new__(WriteBuffer)

    def __init__(self, frame_max: int = _spec.DEFAULT_FRAME_MAX) -> None:
        self.frame_max = frame_max

    def __len__(self) -> int:
        cdef WriteBuffer wb = <WriteBuffer>self._wb
        return wb.len + wb.segment_bytes

    def __repr__(self) -> str:
        return "<FrameWriter pending=%d frame_max=%d>" % (len(self), self.frame_max)

    cpdef bytes take(self):
        """Return every pending byte and clear the buffer."""
        return (<WriteBuffer>self._wb).take()

    def protocol_header(self) -> None:
        (<WriteBuffer>self._wb).wraw(PyBytes_AS_STRING(_PROTOCOL_HEADER), 8)

    def heartbeat(self) -> None:
        (<WriteBuffer>self._wb).wraw(PyBytes_AS_STRING(_HEARTBEAT_FRAME), 8)

    cdef int _end_checked(self, Py_ssize_t mark) except -1:
        cdef WriteBuffer wb = <WriteBuffer>self._wb
        cdef Py_ssize_t size = wb.end_frame()
        if size + 8 > self.frame_max:
            wb.truncate(mark)
            raise ValueError("frame of %d bytes exceeds frame_max %d" % (size + 8, self.frame_max))
        return 0

    def method(self, channel: int, name: str, **fields) -> None:
        """Any method of spec.METHODS_BY_NAME, fields by name (missing -> 0/""/False/{})."""
        cdef _MethodInfo mi = _BY_NAME.get(name)
        cdef WriteBuffer wb = <WriteBuffer>self._wb
        cdef Py_ssize_t mark = wb.len
        if mi is None:
            raise ValueError("unknown AMQP method %r" % (name,))
        _check_channel(channel)
        try:
            wb.start_frame(FRAME_METHOD, channel)
            wb.wraw(PyBytes_AS_STRING(mi.frame_head), 4)
            _w_args(wb, mi, fields)
            self._end_checked(mark)
        except BaseException:
            wb.truncate(mark)
            raise

    cdef int _content_frames(self, uint16_t channel, object properties, object body) except -1:
        """Content header and body frames, the body split by frame_max - 8."""
        cdef WriteBuffer wb = <WriteBuffer>self._wb
        cdef Py_buffer view
        cdef Py_ssize_t chunk, off, n
        cdef Py_ssize_t mark = wb.len
        cdef bint refer
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError("body must be bytes, got %s" % type(body).__name__)
        # Only bytes: a bytearray could change before take().
        refer = type(body) is bytes and len(<bytes>body) >= _REFER_MIN
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            wb.start_frame(FRAME_HEADER, channel)
            wb.w32(0x003C0000)              # class basic, weight 0
            wb.w64(<uint64_t>view.len)
            _w_properties(wb, properties)
            self._end_checked(mark)
            chunk = self.frame_max - 8
            if chunk <= 0:
                raise ValueError("frame_max %d leaves no room for a body" % self.frame_max)
            off = 0
            while off < view.len:
                n = view.len - off
                if n > chunk:
                    n = chunk
                if refer:
                    wb.start_frame(FRAME_BODY, channel)
                    _p32(wb.buf + wb.frame_start + 3, <uint32_t>n)
                    wb.refer(<bytes>body, off, n)
                    wb.w8(FRAME_END)
                    wb.frame_start = -1
                else:
                    wb.ensure(n + 8)
                    wb.start_frame(FRAME_BODY, channel)
                    wb.wraw(<const char*>view.buf + off, n)
                    wb.end_frame()
                off += n
        finally:
            PyBuffer_Release(&view)
        return 0

    cpdef publish(self, channel, exchange, routing_key, body, properties=None, mandatory=False,
                  immediate=False):
        """basic.publish + content header + body frames, appended in one go."""
        cdef WriteBuffer wb = <WriteBuffer>self._wb
        cdef Py_ssize_t mark = wb.len
        cdef int ch = _check_channel(channel)
        try:
            wb.start_frame(FRAME_METHOD, ch)
            wb.w32(0x003C0028)              # basic.publish
            wb.w16(0)                       # ticket
            _w_shortstr(wb, exchange, "exchange")
            _w_shortstr(wb, routing_key, "routing_key")
            wb.w8((1 if mandatory else 0) | (2 if immediate else 0))
            self._end_checked(mark)
            self._content_frames(ch, properties, body)
        except BaseException:
            wb.truncate(mark)
            raise

    def content(self, channel: int, name: str, args: dict | None, properties: dict | None, body) -> None:
        """Any content method (basic.deliver, basic.return, basic.get-ok ...) with its content."""
        cdef _MethodInfo mi = _BY_NAME.get(name)
        cdef WriteBuffer wb = <WriteBuffer>self._wb
        cdef Py_ssize_t mark = wb.len
        if mi is None:
            raise ValueError("unknown AMQP method %r" % (name,))
        if not mi.has_content:
            raise ValueError("%s does not carry content" % name)
        _check_channel(channel)
        try:
            wb.start_frame(FRAME_METHOD, channel)
            wb.wraw(PyBytes_AS_STRING(mi.frame_head), 4)
            _w_args(wb, mi, {} if args is None else args)
            self._end_checked(mark)
            self._content_frames(channel, properties, body)
        except BaseException:
            wb.truncate(mark)
            raise

    cdef int _tag_method(self, object channel, uint32_t key, object delivery_tag, unsigned char bits) except -1:
        cdef WriteBuffer wb = <WriteBuffer>self._wb
        cdef unsigned char* p
        cdef unsigned long long tag
        cdef int ch = _check_channel(channel)
        if not isinstance(delivery_tag, int) or _as_u64(delivery_tag, &tag) != 1:
            raise ValueError("delivery_tag %r is not in 0..2**64-1" % (delivery_tag,))
        wb.ensure(21)
        p = wb.buf + wb.len
        p[0] = FRAME_METHOD
        _p16(p + 1, <uint16_t>ch)
        _p32(p + 3, 13)
        _p32(p + 7, key)
        _p64(p + 11, <uint64_t>tag)
        p[19] = bits
        p[20] = FRAME_END
        wb.len += 21
        return 0

    cpdef ack(self, channel, delivery_tag, multiple=False):
        self._tag_method(channel, 0x003C0050, delivery_tag, 1 if multiple else 0)

    def nack(self, channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._tag_method(channel, 0x003C0078, delivery_tag, (1 if multiple else 0) | (2 if requeue else 0))

    def reject(self, channel: int, delivery_tag: int, requeue: bool = True) -> None:
        self._tag_method(channel, 0x003C005A, delivery_tag, 1 if requeue else 0)


cdef int _check_channel(object channel) except -1:
    """Validate a channel number; returns it as a C int."""
    cdef unsigned long long u
    if not isinstance(channel, int) or _as_u64(channel, &u) != 1 or u > 0xFFFF:
        raise ValueError("channel %r is not in 0..65535" % (channel,))
    return <int>u
