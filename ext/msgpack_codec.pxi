# msgpack bodies in C, for the compiled envelope (included by envelope.pyx).
#
# The bytes written and the values read are msgpack-python's with the
# options the pure codec passes it (packb: use_bin_type=True,
# datetime=False, default=to_primitive; unpackb: raw=False,
# strict_map_key=False, extensions refused except the timestamp, which
# becomes a msgpack.Timestamp), and an invalid body fails with the name of
# the error msgpack-python raises for it: the two codecs are interchangeable
# on the wire and in their results. Where they part: nesting deeper than
# any reader accepts (MP_MAX_DEPTH) is refused when written, not sent;
# list and tuple subclasses are written from the items they hold (an
# overridden __iter__ is not called). What this saves is msgpack-python's
# per-call set-up (a Packer or an unpacking context with its options), its
# general type checks and, for the usual map keys, a new string each.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Containers nested deeper than this are refused, as msgpack-python's
       unpacker refuses them (StackError); the writer keeps to it too, so
       that whatever it writes can be read. */
    #define MP_MAX_DEPTH 1024

    /* ---- reading ---------------------------------------------------------- */

    /* Map keys that requests, replies and the envelope use, made once: such
       a key costs no new string, no decoding and no hashing. */
    #define MP_KEY_LEN_MAX 15   /* known keys are fixstr, no longer than this */
    #define MP_KEYS_PER_LEN 4
    static PyObject* mp_keys[MP_KEY_LEN_MAX + 1][MP_KEYS_PER_LEN];  /* by length */
    static PyObject* mp_timestamp_from_bytes = NULL;  /* msgpack.Timestamp.from_bytes */
    static PyObject* mp_ext_type = NULL;               /* msgpack.ExtType */
    static PyObject* mp_timestamp_type = NULL;         /* msgpack.Timestamp */

    typedef struct {
        const unsigned char* p;
        const unsigned char* end;
        /* the whole body's size: msgpack-python bounds every declared
           length by it (a map's count by half of it) */
        Py_ssize_t size;
        /* the name of msgpack-python's error for what is wrong, when the
           error is found here rather than raised by a call */
        const char* kind;
    } mp_reader;

    static PyObject* mp_invalid(mp_reader* r, const char* kind, const char* what) {
        r->kind = kind;
        PyErr_SetString(PyExc_ValueError, what);
        return NULL;
    }

    static inline uint64_t mp_be(const unsigned char* p, int width) {
        uint64_t v = 0;
        for (int i = 0; i < width; i++) v = (v << 8) | p[i];
        return v;
    }

    /* The next `width`-byte big-endian length or number, or -1 when the body ends first. */
    static inline int mp_take(mp_reader* r, int width, uint64_t* v) {
        if (r->end - r->p < width) return -1;
        *v = mp_be(r->p, width);
        r->p += width;
        return 0;
    }

    static PyObject* mp_read(mp_reader* r, int depth, int is_key);

    /* A str from UTF-8. ASCII text, the usual case, is copied into a new
       one-byte string directly: PyUnicode_DecodeUTF8 would find the same
       through more layers. */
    static PyObject* mp_decode_utf8(const char* s, Py_ssize_t n) {
        Py_ssize_t i = 0;
        uint64_t high = 0, word;
        for (; i + 8 <= n; i += 8) {
            memcpy(&word, s + i, 8);
            high |= word;
        }
        for (; i < n; i++) high |= (unsigned char)s[i];
        if (high & 0x8080808080808080ULL)
            return PyUnicode_DecodeUTF8(s, n, NULL);
        PyObject* text = PyUnicode_New(n, 127);
        if (text != NULL) memcpy(PyUnicode_1BYTE_DATA(text), s, n);
        return text;
    }

    static PyObject* mp_read_str(mp_reader* r, uint64_t n, int is_key) {
        if (n > (uint64_t)r->size) return mp_invalid(r, "ValueError", "string longer than the body");
        if ((uint64_t)(r->end - r->p) < n) return mp_invalid(r, "ValueError", "incomplete input");
        const char* s = (const char*)r->p;
        r->p += n;
        if (is_key && n <= MP_KEY_LEN_MAX) {
            PyObject* const* same_length = mp_keys[n];
            for (int i = 0; i < MP_KEYS_PER_LEN && same_length[i] != NULL; i++) {
                PyObject* k = same_length[i];
                if (memcmp(PyUnicode_1BYTE_DATA(k), s, n) == 0) {
                    Py_INCREF(k);
                    return k;
                }
            }
        }
        return mp_decode_utf8(s, (Py_ssize_t)n);
    }

    static PyObject* mp_read_bin(mp_reader* r, uint64_t n) {
        if (n > (uint64_t)r->size) return mp_invalid(r, "ValueError", "bytes longer than the body");
        if ((uint64_t)(r->end - r->p) < n) return mp_invalid(r, "ValueError", "incomplete input");
        const char* s = (const char*)r->p;
        r->p += n;
        return PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
    }

    static PyObject* mp_read_array(mp_reader* r, uint64_t n, int depth) {
        if (depth >= MP_MAX_DEPTH) return mp_invalid(r, "StackError", "nested too deeply");
        if (n > (uint64_t)r->size) return mp_invalid(r, "ValueError", "array longer than the body");
        /* Each item takes a byte at least: a count beyond the bytes left is
           wrong, but its items are read until one fails, as msgpack-python
           does, without making room for all of them first. */
        Py_ssize_t room = (uint64_t)(r->end - r->p) < n ? 0 : (Py_ssize_t)n;
        PyObject* list = PyList_New(room);
        if (list == NULL) return NULL;
        for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
            PyObject* item = mp_read(r, depth + 1, 0);
            if (item == NULL) goto fail;
            if (i < room) {
                PyList_SET_ITEM(list, i, item);
            } else {
                int rc = PyList_Append(list, item);
                Py_DECREF(item);
                if (rc < 0) goto fail;
            }
        }
        return list;
    fail:
        Py_DECREF(list);
        return NULL;
    }

    static PyObject* mp_read_map(mp_reader* r, uint64_t n, int depth) {
        if (depth >= MP_MAX_DEPTH) return mp_invalid(r, "StackError", "nested too deeply");
        if (n > (uint64_t)(r->size / 2)) return mp_invalid(r, "ValueError", "map longer than the body");
        PyObject* map = PyDict_New();
        if (map == NULL) return NULL;
        for (uint64_t i = 0; i < n; i++) {
            PyObject* key = mp_read(r, depth + 1, 1);
            if (key == NULL) goto fail;
            PyObject* value = mp_read(r, depth + 1, 0);
            if (value == NULL) {
                Py_DECREF(key);
                goto fail;
            }
            /* an unhashable key (a list, a map) raises TypeError here */
            int rc = PyDict_SetItem(map, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) goto fail;
        }
        return map;
    fail:
        Py_DECREF(map);
        return NULL;
    }

    static PyObject* mp_read_ext(mp_reader* r, uint64_t n) {
        /* n counts the data after the type byte */
        if (n > (uint64_t)r->size) return mp_invalid(r, "ValueError", "extension longer than the body");
        if ((uint64_t)(r->end - r->p) < n + 1) return mp_invalid(r, "ValueError", "incomplete input");
        signed char code = (signed char)r->p[0];
        const char* data = (const char*)r->p + 1;
        r->p += n + 1;
        if (code != -1) return mp_invalid(r, "ValueError", "extension types are not accepted");
        PyObject* raw = PyBytes_FromStringAndSize(data, (Py_ssize_t)n);
        if (raw == NULL) return NULL;
        /* a bad length or nanosecond count raises ValueError there */
        PyObject* ts = PyObject_CallOneArg(mp_timestamp_from_bytes, raw);
        Py_DECREF(raw);
        return ts;
    }

    static PyObject* mp_read(mp_reader* r, int depth, int is_key) {
        uint64_t n;
        if (r->p >= r->end) return mp_invalid(r, "ValueError", "incomplete input");
        unsigned char tag = *r->p++;
        if (tag <= 0x7f) return PyLong_FromLong(tag);
        if (tag >= 0xe0) return PyLong_FromLong((signed char)tag);
        if (tag <= 0x8f) return mp_read_map(r, tag & 0x0f, depth);
        if (tag <= 0x9f) return mp_read_array(r, tag & 0x0f, depth);
        if (tag <= 0xbf) return mp_read_str(r, tag & 0x1f, is_key);
        switch (tag) {
        case 0xc0: Py_RETURN_NONE;
        case 0xc2: Py_RETURN_FALSE;
        case 0xc3: Py_RETURN_TRUE;
        case 0xc4: case 0xc5: case 0xc6:
            if (mp_take(r, 1 << (tag - 0xc4), &n) < 0) break;
            return mp_read_bin(r, n);
        case 0xc7: case 0xc8: case 0xc9:
            if (mp_take(r, 1 << (tag - 0xc7), &n) < 0) break;
            return mp_read_ext(r, n);
        case 0xca: {
            uint64_t bits;
            if (mp_take(r, 4, &bits) < 0) break;
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            return PyFloat_FromDouble((double)f);
        }
        case 0xcb: {
            uint64_t bits;
            if (mp_take(r, 8, &bits) < 0) break;
            double d;
            memcpy(&d, &bits, 8);
            return PyFloat_FromDouble(d);
        }
        case 0xcc: case 0xcd: case 0xce: case 0xcf:
            if (mp_take(r, 1 << (tag - 0xcc), &n) < 0) break;
            return PyLong_FromUnsignedLongLong(n);
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            int width = 1 << (tag - 0xd0);
            if (mp_take(r, width, &n) < 0) break;
            /* sign-extend the width's top bit */
            int shift = 64 - 8 * width;
            return PyLong_FromLongLong((long long)(n << shift) >> shift);
        }
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
            return mp_read_ext(r, (uint64_t)1 << (tag - 0xd4));
        case 0xd9: case 0xda: case 0xdb:
            if (mp_take(r, 1 << (tag - 0xd9), &n) < 0) break;
            return mp_read_str(r, n, is_key);
        case 0xdc: case 0xdd:
            if (mp_take(r, 2 << (tag - 0xdc), &n) < 0) break;
            return mp_read_array(r, n, depth);
        case 0xde: case 0xdf:
            if (mp_take(r, 2 << (tag - 0xde), &n) < 0) break;
            return mp_read_map(r, n, depth);
        default:  /* 0xc1: never used */
            return mp_invalid(r, "FormatError", "reserved type byte");
        }
        return mp_invalid(r, "ValueError", "incomplete input");
    }

    /* The standard envelope as fastrpc and msgpack-python write it: a map of
       two, "oslo.version": "2.0" first, then "oslo.message". */
    static const unsigned char mp_envelope_head[] =
        "\\x82\\xacoslo.version\\xa3" "2.0" "\\xacoslo.message";
    #define MP_ENVELOPE_HEAD_LEN ((Py_ssize_t)sizeof(mp_envelope_head) - 1)

    /* What a body holds. For a body that starts with the standard envelope
       this is the value of "oslo.message" (*enveloped set), else the whole
       body's value. NULL with an exception set when the body is not valid
       msgpack, *kind naming msgpack-python's error when it is found here. */
    static PyObject* mp_load_body(const char* body, Py_ssize_t size, int* enveloped, const char** kind) {
        mp_reader r;
        r.p = (const unsigned char*)body;
        r.end = r.p + size;
        r.size = size;
        r.kind = NULL;
        int depth = 0;
        *enveloped = 0;
        if (size > MP_ENVELOPE_HEAD_LEN && memcmp(body, mp_envelope_head, MP_ENVELOPE_HEAD_LEN) == 0) {
            /* the message's value sits inside the outer map, as deep */
            r.p += MP_ENVELOPE_HEAD_LEN;
            depth = 1;
            *enveloped = 1;
        }
        PyObject* value = mp_read(&r, depth, 0);
        if (value != NULL && r.p != r.end) {
            Py_DECREF(value);
            value = mp_invalid(&r, "ExtraData", "data after the end");
        }
        *kind = r.kind;
        return value;
    }

    /* ---- writing ---------------------------------------------------------- */

    typedef struct {
        unsigned char* p;
        Py_ssize_t len;
        Py_ssize_t cap;
        int heap;               /* p is ours to free (else the caller's stack buffer) */
        PyObject* default_fn;   /* called once for a value of no other type */
    } mp_writer;

    static int mp_grow(mp_writer* w, Py_ssize_t need) {
        Py_ssize_t cap = w->cap;
        while (cap - w->len < need) {
            if (cap > PY_SSIZE_T_MAX / 2) {
                PyErr_NoMemory();
                return -1;
            }
            cap *= 2;
        }
        unsigned char* q = w->heap ? PyMem_Realloc(w->p, cap) : PyMem_Malloc(cap);
        if (q == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (!w->heap) memcpy(q, w->p, w->len);
        w->p = q;
        w->cap = cap;
        w->heap = 1;
        return 0;
    }

    static inline int mp_reserve(mp_writer* w, Py_ssize_t n) {
        return w->cap - w->len >= n ? 0 : mp_grow(w, n);
    }

    /* A type byte and `width` bytes of v, big-endian. */
    static inline int mp_head(mp_writer* w, unsigned char tag, int width, uint64_t v) {
        if (mp_reserve(w, 9) < 0) return -1;
        unsigned char* o = w->p + w->len;
        o[0] = tag;
        for (int i = width; i >= 1; i--) {
            o[i] = (unsigned char)v;
            v >>= 8;
        }
        w->len += 1 + width;
        return 0;
    }

    static inline int mp_put(mp_writer* w, const void* s, Py_ssize_t n) {
        if (mp_reserve(w, n) < 0) return -1;
        memcpy(w->p + w->len, s, n);
        w->len += n;
        return 0;
    }

    /* A length-prefixed item's head: fix_tag | n below `fix`, else `tag`
       and the next tags with lengths of `first` (1 or 2), then 2 and 4
       bytes. */
    static int mp_sized(mp_writer* w, Py_ssize_t n, unsigned char fix_tag, Py_ssize_t fix, unsigned char tag,
                        int first, const char* too_large) {
        if (n < fix) return mp_head(w, fix_tag | (unsigned char)n, 0, 0);
        if (first == 1 && n < 256) return mp_head(w, tag, 1, (uint64_t)n);
        if (n < 65536) return mp_head(w, tag + (first == 1), 2, (uint64_t)n);
        if ((uint64_t)n <= 0xffffffffULL) return mp_head(w, tag + (first == 1) + 1, 4, (uint64_t)n);
        PyErr_SetString(PyExc_ValueError, too_large);
        return -1;
    }

    static int mp_str(mp_writer* w, PyObject* o) {
        Py_ssize_t n;
        const char* s = PyUnicode_AsUTF8AndSize(o, &n);  /* surrogates: UnicodeEncodeError */
        if (s == NULL) return -1;
        if (mp_sized(w, n, 0xa0, 32, 0xd9, 1, "unicode string is too large") < 0) return -1;
        return mp_put(w, s, n);
    }

    static int mp_bin(mp_writer* w, const char* s, Py_ssize_t n) {
        if (n < 256) {
            if (mp_head(w, 0xc4, 1, (uint64_t)n) < 0) return -1;
        } else if (n < 65536) {
            if (mp_head(w, 0xc5, 2, (uint64_t)n) < 0) return -1;
        } else if ((uint64_t)n <= 0xffffffffULL) {
            if (mp_head(w, 0xc6, 4, (uint64_t)n) < 0) return -1;
        } else {
            PyErr_SetString(PyExc_ValueError, "bytes object is too large");
            return -1;
        }
        return mp_put(w, s, n);
    }

    /* 1 when o does not fit 64 bits (the caller tries the default). */
    static int mp_int(mp_writer* w, PyObject* o) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(o);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 1;
            }
            return mp_head(w, 0xcf, 8, u);
        }
        if (overflow < 0) return 1;
        if (v >= 0) {
            if (v < 128) return mp_head(w, (unsigned char)v, 0, 0);
            if (v < 256) return mp_head(w, 0xcc, 1, (uint64_t)v);
            if (v < 65536) return mp_head(w, 0xcd, 2, (uint64_t)v);
            if (v <= 0xffffffffLL) return mp_head(w, 0xce, 4, (uint64_t)v);
            return mp_head(w, 0xcf, 8, (uint64_t)v);
        }
        if (v >= -32) return mp_head(w, (unsigned char)(v & 0xff), 0, 0);
        if (v >= -128) return mp_head(w, 0xd0, 1, (uint64_t)v);
        if (v >= -32768) return mp_head(w, 0xd1, 2, (uint64_t)v);
        if (v >= -2147483648LL) return mp_head(w, 0xd2, 4, (uint64_t)v);
        return mp_head(w, 0xd3, 8, (uint64_t)v);
    }

    static int mp_float(mp_writer* w, double d) {
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return mp_head(w, 0xcb, 8, bits);
    }

    static int mp_ext(mp_writer* w, int code, const char* data, Py_ssize_t n) {
        int rc;
        switch (n) {
        case 1: rc = mp_head(w, 0xd4, 0, 0); break;
        case 2: rc = mp_head(w, 0xd5, 0, 0); break;
        case 4: rc = mp_head(w, 0xd6, 0, 0); break;
        case 8: rc = mp_head(w, 0xd7, 0, 0); break;
        case 16: rc = mp_head(w, 0xd8, 0, 0); break;
        default:
            if (n < 256) rc = mp_head(w, 0xc7, 1, (uint64_t)n);
            else if (n < 65536) rc = mp_head(w, 0xc8, 2, (uint64_t)n);
            else if ((uint64_t)n <= 0xffffffffULL) rc = mp_head(w, 0xc9, 4, (uint64_t)n);
            else {
                PyErr_SetString(PyExc_ValueError, "EXT data is too large");
                rc = -1;
            }
        }
        if (rc < 0) return -1;
        unsigned char c = (unsigned char)(signed char)code;
        if (mp_put(w, &c, 1) < 0) return -1;
        return mp_put(w, data, n);
    }

    static int mp_write(mp_writer* w, PyObject* o, int depth);

    /* An ExtType: its code and data read as attributes (whatever its
       tuple holds), the data bytes or a bytearray. */
    static int mp_ext_type_value(mp_writer* w, PyObject* o) {
        int rc = -1;
        PyObject* code = PyObject_GetAttrString(o, "code");
        PyObject* data = code != NULL ? PyObject_GetAttrString(o, "data") : NULL;
        if (data != NULL) {
            long c = PyLong_AsLong(code);
            if (c == -1 && PyErr_Occurred()) {
                /* the error is set */
            } else if (c < -128 || c > 127) {
                PyErr_SetString(PyExc_ValueError, "ExtType code must be in -128..127");
            } else if (PyBytes_Check(data)) {
                rc = mp_ext(w, (int)c, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
            } else if (PyByteArray_Check(data)) {
                rc = mp_ext(w, (int)c, PyByteArray_AS_STRING(data), PyByteArray_GET_SIZE(data));
            } else {
                PyErr_SetString(PyExc_TypeError, "ExtType data must be bytes");
            }
        }
        Py_XDECREF(code);
        Py_XDECREF(data);
        return rc;
    }

    /* A msgpack.Timestamp as the extension -1 in its shortest form (32,
       64 or 96 bits), from its seconds and nanoseconds read as
       msgpack-python reads them (out of range: OverflowError). */
    static int mp_timestamp(mp_writer* w, PyObject* o) {
        unsigned char raw[12];
        PyObject* attr = PyObject_GetAttrString(o, "seconds");
        if (attr == NULL) return -1;
        long long seconds = PyLong_AsLongLong(attr);
        Py_DECREF(attr);
        if (seconds == -1 && PyErr_Occurred()) return -1;
        attr = PyObject_GetAttrString(o, "nanoseconds");
        if (attr == NULL) return -1;
        unsigned long nanoseconds = PyLong_AsUnsignedLong(attr);
        Py_DECREF(attr);
        if (nanoseconds == (unsigned long)-1 && PyErr_Occurred()) return -1;
        uint32_t ns = (uint32_t)nanoseconds;
        if (((uint64_t)seconds >> 34) == 0) {
            uint64_t both = ((uint64_t)ns << 34) | (uint64_t)seconds;
            int n = (both >> 32) == 0 ? 4 : 8;
            for (int i = 0; i < n; i++) raw[i] = (unsigned char)(both >> (8 * (n - 1 - i)));
            return mp_ext(w, -1, (const char*)raw, n);
        }
        for (int i = 0; i < 4; i++) raw[i] = (unsigned char)(ns >> (8 * (3 - i)));
        for (int i = 0; i < 8; i++) raw[4 + i] = (unsigned char)((uint64_t)seconds >> (8 * (7 - i)));
        return mp_ext(w, -1, (const char*)raw, 12);
    }

    static int mp_items(mp_writer* w, PyObject* seq, Py_ssize_t n, int depth) {
        /* n items of a list or tuple whose size was written as n */
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i >= Py_SIZE(seq)) {  /* a default call shrank it */
                PyErr_SetString(PyExc_ValueError, "list changed size while it was written");
                return -1;
            }
            PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
            Py_INCREF(item);
            int rc = mp_write(w, item, depth + 1);
            Py_DECREF(item);
            if (rc < 0) return -1;
        }
        return 0;
    }

    /* A container at `depth` (the outermost at 0) that the reader would refuse. */
    static int mp_too_deep(int depth) {
        if (depth < MP_MAX_DEPTH) return 0;
        PyErr_SetString(PyExc_ValueError, "recursion limit exceeded.");  /* msgpack-python's words */
        return 1;
    }

    static int mp_list(mp_writer* w, PyObject* o, int depth) {
        Py_ssize_t n = Py_SIZE(o);
        if (mp_too_deep(depth) || mp_sized(w, n, 0x90, 16, 0xdc, 2, "list is too large") < 0) return -1;
        return mp_items(w, o, n, depth);
    }

    /* A default call changed a dict being written: the count already
       written would frame the body wrongly. msgpack-python's error. */
    static int mp_dict_changed(void) {
        PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
        return -1;
    }

    static int mp_dict(mp_writer* w, PyObject* o, int depth) {
        Py_ssize_t pos = 0, n = PyDict_GET_SIZE(o);
        PyObject *key, *value;
        if (mp_too_deep(depth)) return -1;
        if (mp_sized(w, n, 0x80, 16, 0xde, 2, "dict is too large") < 0) return -1;
        while (PyDict_Next(o, &pos, &key, &value)) {
            Py_INCREF(key);
            Py_INCREF(value);
            int rc = mp_write(w, key, depth + 1);
            if (rc == 0) rc = mp_write(w, value, depth + 1);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) return -1;
            if (PyDict_GET_SIZE(o) != n) return mp_dict_changed();
        }
        return 0;
    }

    /* A dict subclass: its length, then what its items() gives, as msgpack-python writes one. */
    static int mp_mapping(mp_writer* w, PyObject* o, int depth) {
        if (mp_too_deep(depth)) return -1;
        Py_ssize_t n = PyObject_Length(o);
        if (n < 0) return -1;
        if (mp_sized(w, n, 0x80, 16, 0xde, 2, "dict is too large") < 0) return -1;
        PyObject* items = PyObject_CallMethod(o, "items", NULL);
        if (items == NULL) return -1;
        PyObject* it = PyObject_GetIter(items);
        Py_DECREF(items);
        if (it == NULL) return -1;
        PyObject* pair;
        int rc = 0;
        while (rc == 0 && (pair = PyIter_Next(it)) != NULL) {
            PyObject* kv = PySequence_Fast(pair, "items() must give pairs");
            Py_DECREF(pair);
            if (kv == NULL || PySequence_Fast_GET_SIZE(kv) != 2) {
                if (kv != NULL) PyErr_SetString(PyExc_ValueError, "items() must give pairs");
                rc = -1;
            } else {
                rc = mp_items(w, kv, 2, depth);
            }
            Py_XDECREF(kv);
        }
        Py_DECREF(it);
        if (rc == 0 && PyErr_Occurred()) rc = -1;
        return rc;
    }

    /* Anything but the exact common types, checked in msgpack-python's
       order; the default is called once, for a value of no type here. */
    static int mp_write_other(mp_writer* w, PyObject* o, int depth) {
        PyObject* converted = NULL;
        int rc;
        for (int default_used = 0;; default_used = 1) {
            if (o == Py_None) {
                rc = mp_head(w, 0xc0, 0, 0);
            } else if (o == Py_True || o == Py_False) {
                rc = mp_head(w, o == Py_True ? 0xc3 : 0xc2, 0, 0);
            } else if (PyLong_Check(o) && (rc = mp_int(w, o)) != 1) {
                /* written, or failed */
            } else if (PyFloat_Check(o)) {
                rc = mp_float(w, PyFloat_AS_DOUBLE(o));
            } else if (PyBytes_Check(o)) {
                rc = mp_bin(w, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
            } else if (PyByteArray_Check(o)) {
                rc = mp_bin(w, PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o));
            } else if (PyUnicode_Check(o)) {
                rc = mp_str(w, o);
            } else if (PyDict_CheckExact(o)) {
                rc = mp_dict(w, o, depth);
            } else if (PyDict_Check(o)) {
                rc = mp_mapping(w, o, depth);
            } else if (PyObject_TypeCheck(o, (PyTypeObject*)mp_ext_type)) {
                rc = mp_ext_type_value(w, o);
            } else if (Py_TYPE(o) == (PyTypeObject*)mp_timestamp_type) {
                rc = mp_timestamp(w, o);
            } else if (PyList_Check(o) || PyTuple_Check(o)) {
                rc = mp_list(w, o, depth);
            } else if (PyMemoryView_Check(o)) {
                Py_buffer view;
                if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0) rc = -1;
                else {
                    rc = mp_bin(w, view.buf, view.len);
                    PyBuffer_Release(&view);
                }
            } else if (!default_used && w->default_fn != NULL) {
                PyObject* next = PyObject_CallOneArg(w->default_fn, o);
                if (next == NULL) {
                    rc = -1;
                } else {
                    Py_XDECREF(converted);
                    converted = o = next;
                    continue;
                }
            } else if (PyLong_Check(o)) {
                PyErr_SetString(PyExc_OverflowError, "Integer value out of range");
                rc = -1;
            } else {
                PyErr_Format(PyExc_TypeError, "can not serialize '%.200s' object", Py_TYPE(o)->tp_name);
                rc = -1;
            }
            break;
        }
        Py_XDECREF(converted);
        return rc < 0 ? -1 : 0;
    }

    static int mp_write(mp_writer* w, PyObject* o, int depth) {
        PyTypeObject* t = Py_TYPE(o);
        /* the usual types by exact type first */
        if (t == &PyUnicode_Type) return mp_str(w, o);
        if (t == &PyDict_Type) return mp_dict(w, o, depth);
        if (t == &PyLong_Type) {
            int rc = mp_int(w, o);
            if (rc != 1) return rc;
            return mp_write_other(w, o, depth);
        }
        if (o == Py_None) return mp_head(w, 0xc0, 0, 0);
        if (o == Py_True) return mp_head(w, 0xc3, 0, 0);
        if (o == Py_False) return mp_head(w, 0xc2, 0, 0);
        if (t == &PyFloat_Type) return mp_float(w, PyFloat_AS_DOUBLE(o));
        if (t == &PyList_Type || t == &PyTuple_Type) return mp_list(w, o, depth);
        return mp_write_other(w, o, depth);
    }

    /* The body {"oslo.version": "2.0", "oslo.message": inner}, as
       msgpack-python writes that dict. */
    static PyObject* mp_dump_envelope(PyObject* inner, PyObject* default_fn) {
        unsigned char stack[1024];
        mp_writer w = {stack, 0, (Py_ssize_t)sizeof(stack), 0, default_fn};
        PyObject* out = NULL;
        /* the head is the enveloped map's first item: inner sits at depth 1 */
        if (mp_put(&w, mp_envelope_head, MP_ENVELOPE_HEAD_LEN) == 0 && mp_write(&w, inner, 1) == 0)
            out = PyBytes_FromStringAndSize((const char*)w.p, w.len);
        if (w.heap) PyMem_Free(w.p);
        return out;
    }

    /* The same body for an inner map that is `message`'s items (an exact
       dict, or NULL for none) followed by n more: names[i] (str) with
       values[i]; written without making that map. The caller makes sure no
       name is one of message's keys. */
    static PyObject* mp_dump_fields(PyObject* message, PyObject* const* names, PyObject* const* values,
                                    Py_ssize_t n, PyObject* default_fn) {
        unsigned char stack[1024];
        mp_writer w = {stack, 0, (Py_ssize_t)sizeof(stack), 0, default_fn};
        PyObject* out = NULL;
        Py_ssize_t pos = 0, count = n + (message != NULL ? PyDict_GET_SIZE(message) : 0);
        PyObject *key, *value;
        if (mp_put(&w, mp_envelope_head, MP_ENVELOPE_HEAD_LEN) < 0
                || mp_sized(&w, count, 0x80, 16, 0xde, 2, "dict is too large") < 0)
            goto done;
        /* the inner map at depth 1, its items at 2 */
        while (message != NULL && PyDict_Next(message, &pos, &key, &value)) {
            Py_INCREF(key);
            Py_INCREF(value);
            int rc = mp_write(&w, key, 2);
            if (rc == 0) rc = mp_write(&w, value, 2);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) goto done;
            if (PyDict_GET_SIZE(message) != count - n) {
                mp_dict_changed();
                goto done;
            }
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (mp_str(&w, names[i]) < 0 || mp_write(&w, values[i], 2) < 0) goto done;
        out = PyBytes_FromStringAndSize((const char*)w.p, w.len);
    done:
        if (w.heap) PyMem_Free(w.p);
        return out;
    }

    static int mp_init(PyObject* keys, PyObject* ext_type, PyObject* timestamp_type) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
            PyObject* k = PyList_GET_ITEM(keys, i);
            if (!PyUnicode_CheckExact(k) || !PyUnicode_IS_ASCII(k) || PyUnicode_GET_LENGTH(k) > MP_KEY_LEN_MAX) {
                PyErr_SetString(PyExc_ValueError, "known keys must be short ASCII str");
                return -1;
            }
            PyObject** slot = mp_keys[PyUnicode_GET_LENGTH(k)];
            int j = 0;
            while (j < MP_KEYS_PER_LEN && slot[j] != NULL) j++;
            if (j == MP_KEYS_PER_LEN) {
                PyErr_SetString(PyExc_ValueError, "too many known keys of one length");
                return -1;
            }
            Py_INCREF(k);
            slot[j] = k;
        }
        mp_timestamp_from_bytes = PyObject_GetAttrString(timestamp_type, "from_bytes");
        if (mp_timestamp_from_bytes == NULL) return -1;
        Py_INCREF(ext_type);
        mp_ext_type = ext_type;
        Py_INCREF(timestamp_type);
        mp_timestamp_type = timestamp_type;
        return 0;
    }
    """
    object _mp_load_body "mp_load_body" (const char* body, Py_ssize_t size, int* enveloped, const char** kind)
    object _mp_dump_envelope "mp_dump_envelope" (object inner, object default_fn)
    object _mp_dump_fields "mp_dump_fields" (PyObject* message, PyObject** names, PyObject** values,
                                             Py_ssize_t n, object default_fn)
    int _mp_init "mp_init" (list keys, object ext_type, object timestamp_type) except -1


# The known keys: a request's and a reply's fields and the envelope's.
_mp_init([VERSION_KEY, MESSAGE_KEY, "method", "args", "namespace", "version", "_msg_id", "_reply_q",
          "_timeout", "_unique_id", "result", "failure", "ending"],
         msgpack.ExtType, msgpack.Timestamp)
