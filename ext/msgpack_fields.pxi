# A msgpack request's or reply's top level read straight into its parts:
# msgpack's counterpart of json_reader.pxi's js_load_fields, with its
# js_fields, field kinds, js_classify and js_fields_store, on
# msgpack_codec.pxi's reader.
# Included by envelope.pyx after both. No inner mapping is made and taken
# apart again: the fields go aside, a request's context keys into their own
# dict, the rest into the message.

cdef extern from *:
    """
    /* Reads a msgpack body laid out in the standard envelope, whose message
       is a map with str keys, into *f as js_load_fields reads a JSON one: 1
       when read, 0 when the body is left to the general path (another
       layout, a key of another type, or anything that path judges invalid:
       the exception is dropped, for that path to meet it again), -1 when
       the message's dict cannot be made or a signal handler raised while
       a value was made (an exception set: not the body's). *f holds
       nothing but on 1. */
    static int mp_load_fields(const char* body, Py_ssize_t size, int mode, js_fields* f) {
        mp_reader r;
        uint64_t n, len;
        memset(f, 0, sizeof(*f));
        if (size <= MP_ENVELOPE_HEAD_LEN || memcmp(body, mp_envelope_head, MP_ENVELOPE_HEAD_LEN) != 0) return 0;
        r.p = (const unsigned char*)body + MP_ENVELOPE_HEAD_LEN;
        r.end = (const unsigned char*)body + size;
        r.size = size;
        r.kind = NULL;
        unsigned char tag = *r.p++;
        if (tag >= 0x80 && tag <= 0x8f) {
            n = tag & 0x0f;
        } else if (tag == 0xde || tag == 0xdf) {
            if (mp_take(&r, 2 << (tag - 0xde), &n) < 0) return 0;
        } else {
            return 0;
        }
        if (n > (uint64_t)(size / 2)) return 0;
        if (mode == JS_REQUEST && (f->message = PyDict_New()) == NULL) return -1;
        for (uint64_t i = 0; i < n; i++) {
            /* The key: a str, whose bytes say which field it names (the
               names are ASCII: the same bytes in UTF-8). */
            if (r.p >= r.end) goto leave;
            tag = *r.p++;
            if (tag >= 0xa0 && tag <= 0xbf) {
                len = tag & 0x1f;
            } else if (tag >= 0xd9 && tag <= 0xdb) {
                if (mp_take(&r, 1 << (tag - 0xd9), &len) < 0) goto leave;
            } else {
                goto leave;
            }
            if ((uint64_t)(r.end - r.p) < len) goto leave;
            const unsigned char* s = r.p;
            int field = js_classify(s, (Py_ssize_t)len, mode);
            PyObject* key = NULL;
            if (field == JS_CONTEXT) {
                r.p += len;
                key = mp_decode_utf8((const char*)s + 9, (Py_ssize_t)len - 9);  /* CONTEXT_PREFIX */
                if (key == NULL) goto leave;
            } else if (field < 0) {
                /* decoded also where it is not kept (a reply's other keys):
                   its text must be UTF-8 */
                key = mp_read_str(&r, len, 1);
                if (key == NULL) goto leave;
            } else {
                r.p += len;
            }
            /* The value, at the depth the general path reads it. */
            PyObject* value = mp_read(&r, 2, 0);
            if (value == NULL) {
                Py_XDECREF(key);
                goto leave;
            }
            if (js_fields_store(f, mode, field, key, value) < 0) goto leave;
        }
        if (r.p == r.end) return 1;
    leave:
        js_fields_clear(f);
        /* KeyboardInterrupt from a handler run while a timestamp was made:
           raised, as the general path would let it through */
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception)) return -1;
        PyErr_Clear();
        return 0;
    }
    """
    int _mp_load_fields "mp_load_fields" (const char* body, Py_ssize_t size, int mode, js_fields* f) except -1
