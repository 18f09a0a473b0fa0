# JSON written in C straight into the oslo envelope's quoted string, for the
# compiled envelope (included by envelope.pyx after msgpack_codec.pxi, whose
# growing buffer it shares).
#
# The bytes are orjson's for the same value, quoted as the envelope's
# string: the usual values of a request or a reply (exact dict with str
# keys, list, tuple, ASCII str, int within 64 bits, bool, None) are written
# here in one pass, without orjson's text and a second pass to quote it.
# Anything else (a float, a non-ASCII string, a subclass, an object
# orjson's `default` would turn into one of these, nesting deeper than
# JW_MAX_DEPTH) leaves the whole value to orjson, so the result and every
# error stay orjson's. Nothing here calls back into Python, so a container
# cannot change while it is written.

cdef extern from *:
    """
    #define JW_MAX_DEPTH 64
    enum { JW_DONE = 0, JW_ERROR = -1, JW_LEFT = 1 };

    static inline int jw_put(mp_writer* w, const char* s, Py_ssize_t n) {
        return mp_put(w, s, n) < 0 ? JW_ERROR : JW_DONE;
    }

    /* An ASCII str as a JSON string, quoted: orjson escapes '"', backslash
       and the control characters (\\b \\t \\n \\f \\r short, the others as
       \\u00xx), and the envelope's quoting puts a backslash before each
       quote and backslash of that. */
    static int jw_ascii(mp_writer* w, const unsigned char* s, Py_ssize_t n) {
        static const char hex[] = "0123456789abcdef";
        if (mp_reserve(w, n + 4) < 0) return JW_ERROR;
        unsigned char* o = w->p + w->len;
        *o++ = ENVELOPE_BACKSLASH;
        *o++ = '"';
        Py_ssize_t i = 0;
        while (i < n) {
    #if defined(__SSE2__)
            while (n - i >= 16) {
                unsigned m = envelope_special_mask((const char*)s + i);
                if (m == 0) {
                    memcpy(o, s + i, 16);
                    o += 16;
                    i += 16;
                    continue;
                }
                int k = __builtin_ctz(m);
                memcpy(o, s + i, k);
                o += k;
                i += k;
                break;
            }
    #endif
            while (i < n && s[i] >= 0x20 && s[i] != '"' && s[i] != ENVELOPE_BACKSLASH) *o++ = s[i++];
            if (i >= n) break;
            /* an escape: up to 7 bytes for this one, room kept for the rest */
            w->len = o - w->p;
            if (mp_reserve(w, 7 + (n - i) + 2) < 0) return JW_ERROR;
            o = w->p + w->len;
            unsigned char c = s[i++];
            *o++ = ENVELOPE_BACKSLASH;
            *o++ = ENVELOPE_BACKSLASH;
            switch (c) {
            case '"': *o++ = ENVELOPE_BACKSLASH; *o++ = '"'; break;
            case ENVELOPE_BACKSLASH: *o++ = ENVELOPE_BACKSLASH; *o++ = ENVELOPE_BACKSLASH; break;
            case '\\b': *o++ = 'b'; break;
            case '\\t': *o++ = 't'; break;
            case '\\n': *o++ = 'n'; break;
            case '\\f': *o++ = 'f'; break;
            case '\\r': *o++ = 'r'; break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
        }
        *o++ = ENVELOPE_BACKSLASH;
        *o++ = '"';
        w->len = o - w->p;
        return JW_DONE;
    }

    static int jw_int(mp_writer* w, PyObject* o) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow) return JW_LEFT;  /* orjson's: up to 64 bits unsigned, or its error */
        if (v == -1 && PyErr_Occurred()) return JW_ERROR;
        char digits[24];
        char* end = digits + sizeof(digits);
        char* d = end;
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        do {
            *--d = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0) *--d = '-';
        return jw_put(w, d, end - d);
    }

    static int jw_value(mp_writer* w, PyObject* o, int depth);

    static int jw_items(mp_writer* w, PyObject* const* items, Py_ssize_t n, int depth) {
        int rc = jw_put(w, "[", 1);
        for (Py_ssize_t i = 0; i < n && rc == JW_DONE; i++) {
            if (i) rc = jw_put(w, ",", 1);
            if (rc == JW_DONE) rc = jw_value(w, items[i], depth + 1);
        }
        return rc == JW_DONE ? jw_put(w, "]", 1) : rc;
    }

    /* A dict's members; *underscore set when a key starts with '_'. */
    static int jw_members(mp_writer* w, PyObject* o, int depth, int* underscore) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        int rc = JW_DONE, first = 1;
        while (rc == JW_DONE && PyDict_Next(o, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_ASCII(key)) return JW_LEFT;
            if (!first) rc = jw_put(w, ",", 1);
            first = 0;
            const unsigned char* s = PyUnicode_1BYTE_DATA(key);
            Py_ssize_t n = PyUnicode_GET_LENGTH(key);
            if (n && s[0] == '_') *underscore = 1;
            if (rc == JW_DONE) rc = jw_ascii(w, s, n);
            if (rc == JW_DONE) rc = jw_put(w, ":", 1);
            if (rc == JW_DONE) rc = jw_value(w, value, depth + 1);
        }
        return rc;
    }

    /* A dict, without its closing brace unless `close`. */
    static int jw_dict(mp_writer* w, PyObject* o, int depth, int close, int* underscore) {
        int rc = jw_put(w, "{", 1);
        if (rc == JW_DONE) rc = jw_members(w, o, depth, underscore);
        return rc == JW_DONE && close ? jw_put(w, "}", 1) : rc;
    }

    static int jw_value(mp_writer* w, PyObject* o, int depth) {
        PyTypeObject* t = Py_TYPE(o);
        if (o == Py_None) return jw_put(w, "null", 4);
        if (o == Py_True) return jw_put(w, "true", 4);
        if (o == Py_False) return jw_put(w, "false", 5);
        if (t == &PyUnicode_Type) {
            if (!PyUnicode_IS_ASCII(o)) return JW_LEFT;
            return jw_ascii(w, PyUnicode_1BYTE_DATA(o), PyUnicode_GET_LENGTH(o));
        }
        if (t == &PyLong_Type) return jw_int(w, o);
        if (depth >= JW_MAX_DEPTH) return JW_LEFT;
        if (t == &PyDict_Type) {
            int underscore = 0;
            return jw_dict(w, o, depth, 1, &underscore);
        }
        if (t == &PyList_Type) return jw_items(w, ((PyListObject*)o)->ob_item, PyList_GET_SIZE(o), depth);
        if (t == &PyTuple_Type) return jw_items(w, ((PyTupleObject*)o)->ob_item, PyTuple_GET_SIZE(o), depth);
        return JW_LEFT;  /* floats and everything else: orjson's */
    }

    /* prefix, then `value` written as above, then suffix, as bytes. A dict
       value (`members`) is written without its closing brace, for fields
       in the suffix to follow its members (*underscore then tells whether
       one of its keys starts with '_'). Py_None when the value is left to
       orjson; NULL on an error. */
    static PyObject* jw_dump(PyObject* value, int members, const char* prefix, Py_ssize_t plen,
                             const char* suffix, Py_ssize_t slen, int* underscore) {
        unsigned char stack[1024];
        mp_writer w = {stack, 0, (Py_ssize_t)sizeof(stack), 0, NULL};
        PyObject* out = NULL;
        int rc = jw_put(&w, prefix, plen);
        if (rc == JW_DONE) {
            /* a result sits one level deep in the reply's inner dict */
            rc = members ? jw_dict(&w, value, 0, 0, underscore) : jw_value(&w, value, 1);
        }
        if (rc == JW_DONE) rc = jw_put(&w, suffix, slen);
        if (rc == JW_DONE) out = PyBytes_FromStringAndSize((const char*)w.p, w.len);
        else if (rc == JW_LEFT) out = Py_NewRef(Py_None);
        if (w.heap) PyMem_Free(w.p);
        return out;
    }
    """
    object _jw_dump "jw_dump" (object value, bint members, const char* prefix, Py_ssize_t plen,
                               const char* suffix, Py_ssize_t slen, int* underscore)
