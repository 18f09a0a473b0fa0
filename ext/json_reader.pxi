# The oslo envelope's inner JSON read in C, for the compiled envelope
# (included by envelope.pyx after msgpack_codec.pxi, whose known keys and
# UTF-8 decoder it shares).
#
# Only what orjson reads to the very same value is taken here: a JSON object
# in strict RFC 8259 syntax whose numbers are integers within 18 digits or
# finite floats, whose strings are valid UTF-8 without lone surrogates, and
# whose nesting stays within JS_MAX_DEPTH. For any other text (invalid JSON
# included) the reader leaves the text to orjson, which gives today's result
# or error: the reader never decides that a text is invalid.
#
# Read as a request or a reply (js_load_fields), the top level is sorted as
# it is read: the fields the envelope adds (_msg_id, _reply_q, ...) and the
# reply's are kept aside without a key string or a dict entry each, and a
# request's context keys go to their own dict, so that neither the inner
# mapping nor the deletions that turn it into the message are made. Keys
# are the known keys' strings or come from a small cache of the strings
# made for them last time: a key a peer sends again costs no new string
# and no hashing.

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>

    /* Deeper nesting is left to orjson (whose own limit is 1024). */
    #define JS_MAX_DEPTH 128
    /* Keys up to this many ASCII bytes, unescaped, come from the cache. */
    #define JS_KEY_LEN_MAX 32
    #define JS_KEY_SLOTS 256   /* a power of two */
    static PyObject* js_keys[JS_KEY_SLOTS];

    typedef struct {
        const unsigned char* p;
        /* *end may be read: the text lies in a bytes object's buffer, which
           goes on at least to its NUL byte */
        const unsigned char* end;
        /* the text is still quoted as the envelope's string: a quote is
           backslash-quote, and a string with escapes is left (to the
           caller, who unescapes the text and reads it again) */
        int quoted;
        int not_mine;              /* set with a NULL result: left to orjson, no exception */
    } js_reader;

    static PyObject* js_leave(js_reader* r) {
        r->not_mine = 1;
        return NULL;
    }

    /* The length of the quote at r->p (1, or 2 quoted), or 0 for none. */
    static inline int js_quote_at(js_reader* r) {
        if (r->p >= r->end) return 0;
        if (r->quoted) return r->p[0] == ENVELOPE_BACKSLASH && r->p[1] == '"' ? 2 : 0;
        return r->p[0] == '"';
    }

    static inline void js_skip_space(js_reader* r) {
        /* compact JSON has none; *end may be read, so the first look needs no bound */
        if (*r->p > ' ') return;
        if (r->quoted) {
            /* raw tabs and line breaks are invalid in the envelope's string */
            while (r->p < r->end && *r->p == ' ') r->p++;
            return;
        }
        while (r->p < r->end && (*r->p == ' ' || *r->p == '\\n' || *r->p == '\\r' || *r->p == '\\t'))
            r->p++;
    }

    static inline int js_digit(unsigned char c) {
        return c >= '0' && c <= '9';
    }

    /* Whether byte c ends a plain run in a string: a quote, a backslash, a
       control character (invalid raw) or a non-ASCII byte. */
    static inline int js_string_special(unsigned char c) {
        return c == '"' || c == ENVELOPE_BACKSLASH || c < 0x20 || c >= 0x80;
    }

    #if defined(__SSE2__)
    /* Bit k set when byte k of p[0:16] is js_string_special. */
    static inline unsigned js_string_special_mask(const unsigned char* p) {
        __m128i v = _mm_loadu_si128((const __m128i*)p);
        /* signed: below 0x20, or 0x80 and above */
        __m128i low_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        return (unsigned)_mm_movemask_epi8(_mm_or_si128(low_or_high, envelope_quote_bytes(v)));
    }
    #endif

    /* A key's str: a known key's (msgpack_codec.pxi's table), else the
       cached str made for the same bytes last time (its hash computed), else
       a new one that takes the cache slot. s[0:n] is ASCII. */
    static PyObject* js_key(const unsigned char* s, Py_ssize_t n) {
        if (n <= MP_KEY_LEN_MAX) {
            PyObject* const* same_length = mp_keys[n];
            for (int i = 0; i < MP_KEYS_PER_LEN && same_length[i] != NULL; i++) {
                if (memcmp(PyUnicode_1BYTE_DATA(same_length[i]), s, n) == 0) {
                    Py_INCREF(same_length[i]);
                    return same_length[i];
                }
            }
        }
        uint32_t h = 2166136261u;  /* FNV-1a */
        for (Py_ssize_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
        PyObject** slot = &js_keys[(h ^ (h >> 15)) & (JS_KEY_SLOTS - 1)];
        PyObject* key = *slot;
        if (key != NULL && PyUnicode_GET_LENGTH(key) == n && memcmp(PyUnicode_1BYTE_DATA(key), s, n) == 0) {
            Py_INCREF(key);
            return key;
        }
        key = PyUnicode_New(n, 127);
        if (key == NULL) return NULL;
        memcpy(PyUnicode_1BYTE_DATA(key), s, n);
        (void)PyObject_Hash(key);  /* kept in the str: a dict insert need not hash it again */
        Py_INCREF(key);
        Py_XSETREF(*slot, key);
        return key;
    }

    /* Four hex digits at p as a code unit, or -1. */
    static inline long js_hex4(const unsigned char* p) {
        long v = 0;
        for (int i = 0; i < 4; i++) {
            unsigned char c = p[i];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= c - '0';
            else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
            else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
            else return -1;
        }
        return v;
    }

    static inline unsigned char* js_put_utf8(unsigned char* o, unsigned long cp) {
        if (cp < 0x80) {
            *o++ = (unsigned char)cp;
        } else if (cp < 0x800) {
            *o++ = (unsigned char)(0xC0 | (cp >> 6));
            *o++ = (unsigned char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *o++ = (unsigned char)(0xE0 | (cp >> 12));
            *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (unsigned char)(0x80 | (cp & 0x3F));
        } else {
            *o++ = (unsigned char)(0xF0 | (cp >> 18));
            *o++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (unsigned char)(0x80 | (cp & 0x3F));
        }
        return o;
    }

    /* A str from UTF-8 that may be invalid: invalid text is left to orjson. */
    static PyObject* js_str_from_utf8(js_reader* r, const unsigned char* s, Py_ssize_t n) {
        PyObject* text = mp_decode_utf8((const char*)s, n);
        if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return js_leave(r);
        }
        return text;
    }

    /* A string with escapes, from its first byte s (after the opening
       quote): unescaped into UTF-8, then decoded. Every escape is at least
       as long as the UTF-8 it stands for, so the rest of the text bounds the
       output. */
    static PyObject* js_escaped_string(js_reader* r, const unsigned char* s) {
        unsigned char small[256];
        Py_ssize_t room = r->end - s;
        unsigned char* out = room <= (Py_ssize_t)sizeof(small) ? small : (unsigned char*)PyMem_Malloc(room);
        if (out == NULL) return PyErr_NoMemory();
        unsigned char* o = out;
        const unsigned char* p = s;
        PyObject* text = NULL;
        for (;;) {
            if (p >= r->end) goto leave;
            unsigned char c = *p;
            if (c == '"') break;
            if (c < 0x20) goto leave;
            if (c != ENVELOPE_BACKSLASH) {
                *o++ = c;
                p++;
                continue;
            }
            if (r->end - p < 2) goto leave;
            c = p[1];
            p += 2;
            switch (c) {
            case '"': case ENVELOPE_BACKSLASH: case '/': *o++ = c; break;
            case 'b': *o++ = '\\b'; break;
            case 'f': *o++ = '\\f'; break;
            case 'n': *o++ = '\\n'; break;
            case 'r': *o++ = '\\r'; break;
            case 't': *o++ = '\\t'; break;
            case 'u': {
                if (r->end - p < 4) goto leave;
                long cp = js_hex4(p);
                p += 4;
                if (cp < 0) goto leave;
                if (cp >= 0xDC00 && cp <= 0xDFFF) goto leave;  /* a lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    /* a high surrogate: only as the first of a pair */
                    if (r->end - p < 6 || p[0] != ENVELOPE_BACKSLASH || p[1] != 'u') goto leave;
                    long low = js_hex4(p + 2);
                    if (low < 0xDC00 || low > 0xDFFF) goto leave;
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                }
                o = js_put_utf8(o, (unsigned long)cp);
                break;
            }
            default:
                goto leave;
            }
        }
        r->p = p + 1;
        text = js_str_from_utf8(r, out, o - out);
        goto done;
    leave:
        text = js_leave(r);
    done:
        if (out != small) PyMem_Free(out);
        return text;
    }

    /* What js_scan_string found. */
    enum { JS_LEFT = -1, JS_ASCII, JS_UTF8, JS_ESCAPED };

    /* The extent of a string, r->p just after its opening quote: *s and *n
       its raw content, and whether that is ASCII, UTF-8 with bytes above
       0x7f, or has escapes (then *n is not set, r->p not moved and
       js_escaped_string reads it from *s); JS_LEFT for what is left to
       orjson. Otherwise r->p ends after the closing quote. */
    static inline int js_scan_string(js_reader* r, const unsigned char** s_out, Py_ssize_t* n_out) {
        const unsigned char* s = r->p;
        const unsigned char* p = s;
        const unsigned char* end = r->end;
        int kind = JS_ASCII;
        *s_out = s;
        for (;;) {
    #if defined(__SSE2__)
            while (end - p >= 16) {
                unsigned m = js_string_special_mask(p);
                if (m) {
                    p += __builtin_ctz(m);
                    goto special;
                }
                p += 16;
            }
    #endif
            while (p < end && !js_string_special(*p)) p++;
            if (p >= end) return JS_LEFT;
    #if defined(__SSE2__)
        special:
    #endif
            if (*p == '"') {
                if (r->quoted) return JS_LEFT;  /* a raw quote ends the envelope's string */
                *n_out = p - s;
                r->p = p + 1;
                return kind;
            }
            if (*p >= 0x80) {
                kind = JS_UTF8;
                p++;
                continue;
            }
            if (*p == ENVELOPE_BACKSLASH) {
                if (!r->quoted) return JS_ESCAPED;
                if (p + 1 < end && p[1] == '"') {  /* the closing quote, quoted */
                    *n_out = p - s;
                    r->p = p + 2;
                    return kind;
                }
                return JS_LEFT;  /* an escape in the string */
            }
            return JS_LEFT;  /* a raw control character */
        }
    }

    static inline PyObject* js_ascii_str(const unsigned char* s, Py_ssize_t n) {
        PyObject* text = PyUnicode_New(n, 127);
        if (text != NULL) memcpy(PyUnicode_1BYTE_DATA(text), s, n);
        return text;
    }

    /* A string, r->p just after its opening quote. */
    static PyObject* js_string(js_reader* r, int is_key) {
        const unsigned char* s;
        Py_ssize_t n;
        switch (js_scan_string(r, &s, &n)) {
        case JS_ASCII:
            return is_key && n <= JS_KEY_LEN_MAX ? js_key(s, n) : js_ascii_str(s, n);
        case JS_UTF8:
            return js_str_from_utf8(r, s, n);
        case JS_ESCAPED:
            return js_escaped_string(r, s);
        default:
            return js_leave(r);
        }
    }

    /* A number. Integers of more than 18 digits (orjson gives a float beyond
       64 bits) and floats that overflow (an error to orjson) are left to it. */
    static PyObject* js_number(js_reader* r) {
        const unsigned char* start = r->p;
        const unsigned char* p = start;
        const unsigned char* end = r->end;
        int negative = 0, is_float = 0;
        if (*p == '-') {
            negative = 1;
            p++;
        }
        if (p >= end || !js_digit(*p)) return js_leave(r);
        const unsigned char* digits = p;
        if (*p == '0') p++;
        else while (p < end && js_digit(*p)) p++;
        Py_ssize_t ndigits = p - digits;
        if (p < end && *p == '.') {
            p++;
            if (p >= end || !js_digit(*p)) return js_leave(r);
            while (p < end && js_digit(*p)) p++;
            is_float = 1;
        }
        if (p < end && (*p == 'e' || *p == 'E')) {
            p++;
            if (p < end && (*p == '+' || *p == '-')) p++;
            if (p >= end || !js_digit(*p)) return js_leave(r);
            while (p < end && js_digit(*p)) p++;
            is_float = 1;
        }
        r->p = p;
        if (!is_float) {
            if (ndigits > 18) return js_leave(r);
            long long v = 0;
            for (const unsigned char* q = digits; q < digits + ndigits; q++) v = v * 10 + (*q - '0');
            return PyLong_FromLongLong(negative ? -v : v);
        }
        /* The grammar was checked above, so the converter reads exactly
           start..p (what follows is no part of a number, at worst the NUL
           after the text); it rounds correctly, as orjson does. */
        char* after = NULL;
        double d = PyOS_string_to_double((const char*)start, &after, NULL);
        if (d == -1.0 && PyErr_Occurred()) return NULL;
        if ((const unsigned char*)after != p || !isfinite(d)) return js_leave(r);
        return PyFloat_FromDouble(d);
    }

    static PyObject* js_value(js_reader* r, int depth);

    /* What follows an item in a container: its closer (1), a comma and more
       (0), or anything else (-1). */
    static inline int js_after_item(js_reader* r, unsigned char closer) {
        js_skip_space(r);
        if (r->p >= r->end) return -1;
        unsigned char c = *r->p++;
        if (c == closer) return 1;
        return c == ',' ? 0 : -1;
    }

    static PyObject* js_array(js_reader* r, int depth) {
        if (depth >= JS_MAX_DEPTH) return js_leave(r);
        r->p++;  /* [ */
        PyObject* list = PyList_New(0);
        if (list == NULL) return NULL;
        js_skip_space(r);
        if (r->p < r->end && *r->p == ']') {
            r->p++;
            return list;
        }
        for (;;) {
            js_skip_space(r);
            PyObject* item = js_value(r, depth + 1);
            if (item == NULL) goto fail;
            int rc = PyList_Append(list, item);
            Py_DECREF(item);
            if (rc < 0) goto fail;
            int next = js_after_item(r, ']');
            if (next > 0) return list;
            if (next < 0) {
                js_leave(r);
                goto fail;
            }
        }
    fail:
        Py_DECREF(list);
        return NULL;
    }

    static PyObject* js_object(js_reader* r, int depth) {
        if (depth >= JS_MAX_DEPTH) return js_leave(r);
        r->p++;  /* { */
        PyObject* map = PyDict_New();
        if (map == NULL) return NULL;
        js_skip_space(r);
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            return map;
        }
        for (;;) {
            js_skip_space(r);
            int quote = js_quote_at(r);
            if (!quote) {
                js_leave(r);
                goto fail;
            }
            r->p += quote;
            PyObject* key = js_string(r, 1);
            if (key == NULL) goto fail;
            js_skip_space(r);
            if (r->p >= r->end || *r->p != ':') {
                Py_DECREF(key);
                js_leave(r);
                goto fail;
            }
            r->p++;
            js_skip_space(r);
            PyObject* value = js_value(r, depth + 1);
            if (value == NULL) {
                Py_DECREF(key);
                goto fail;
            }
            /* a repeated key keeps its first place and takes the last value, as with orjson */
            int rc = PyDict_SetItem(map, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) goto fail;
            int next = js_after_item(r, '}');
            if (next > 0) return map;
            if (next < 0) {
                js_leave(r);
                goto fail;
            }
        }
    fail:
        Py_DECREF(map);
        return NULL;
    }

    static PyObject* js_value(js_reader* r, int depth) {
        if (r->p >= r->end) return js_leave(r);
        switch (*r->p) {
        case '"': case ENVELOPE_BACKSLASH: {
            int quote = js_quote_at(r);
            if (!quote) return js_leave(r);
            r->p += quote;
            return js_string(r, 0);
        }
        case '{':
            return js_object(r, depth);
        case '[':
            return js_array(r, depth);
        case 't':
            if (r->end - r->p >= 4 && memcmp(r->p, "true", 4) == 0) {
                r->p += 4;
                Py_RETURN_TRUE;
            }
            return js_leave(r);
        case 'f':
            if (r->end - r->p >= 5 && memcmp(r->p, "false", 5) == 0) {
                r->p += 5;
                Py_RETURN_FALSE;
            }
            return js_leave(r);
        case 'n':
            if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) {
                r->p += 4;
                Py_RETURN_NONE;
            }
            return js_leave(r);
        default:
            return js_number(r);
        }
    }

    /* ---- a request's or a reply's top level ------------------------------- */

    enum { JS_REQUEST, JS_REPLY };
    /* The top-level fields kept aside, and what else a key can be. */
    enum { JS_MSG_ID, JS_REPLY_Q, JS_TIMEOUT, JS_UNIQUE_ID, JS_RESULT, JS_FAILURE, JS_ENDING, JS_FIELDS };
    /* JS_ROUTING: a message key whose string value every request repeats
       (method, version, namespace), kept as keys are */
    enum { JS_OTHER = -1, JS_CONTEXT = -2, JS_ROUTING = -3 };

    typedef struct {
        PyObject* field[JS_FIELDS];  /* the value of each field read, NULL for one absent */
        PyObject* message;           /* a request's other keys, in their order */
        PyObject* context;           /* a request's context keys, without the prefix; NULL for none */
    } js_fields;

    static void js_fields_clear(js_fields* f) {
        for (int i = 0; i < JS_FIELDS; i++) Py_CLEAR(f->field[i]);
        Py_CLEAR(f->message);
        Py_CLEAR(f->context);
    }

    /* Which field the key s[0:n] names in a mode. The text may be UTF-8 or
       a one-byte str's Latin-1: the names are ASCII, so the same bytes
       match in both. */
    static int js_classify(const unsigned char* s, Py_ssize_t n, int mode) {
        if (mode == JS_REQUEST) {
            if (n >= 9 && memcmp(s, "_context_", 9) == 0) return JS_CONTEXT;  /* CONTEXT_PREFIX */
            if (n == 7 && memcmp(s, "_msg_id", 7) == 0) return JS_MSG_ID;
            if (n == 8 && memcmp(s, "_reply_q", 8) == 0) return JS_REPLY_Q;
            if (n == 8 && memcmp(s, "_timeout", 8) == 0) return JS_TIMEOUT;
            if (n == 10 && memcmp(s, "_unique_id", 10) == 0) return JS_UNIQUE_ID;
            if ((n == 6 && memcmp(s, "method", 6) == 0) || (n == 7 && memcmp(s, "version", 7) == 0)
                    || (n == 9 && memcmp(s, "namespace", 9) == 0))
                return JS_ROUTING;
            return JS_OTHER;
        }
        if (n == 6 && memcmp(s, "result", 6) == 0) return JS_RESULT;
        if (n == 7 && memcmp(s, "failure", 7) == 0) return JS_FAILURE;
        if (n == 6 && memcmp(s, "ending", 6) == 0) return JS_ENDING;
        if (n == 7 && memcmp(s, "_msg_id", 7) == 0) return JS_MSG_ID;
        if (n == 10 && memcmp(s, "_unique_id", 10) == 0) return JS_UNIQUE_ID;
        return JS_OTHER;
    }

    /* A top-level key that had escapes, read whole: sets *field; returns
       the key to store under (a context key without its prefix), or NULL
       for a field (no exception then) or on an error. */
    static PyObject* js_escaped_key(js_reader* r, const unsigned char* s, int mode, int* field) {
        PyObject* key = js_escaped_string(r, s);
        if (key == NULL) return NULL;
        Py_ssize_t n = PyUnicode_GET_LENGTH(key);
        if (PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND) {
            *field = js_classify(PyUnicode_1BYTE_DATA(key), n, mode);
        } else {
            /* wider characters: no field name, but maybe a context key */
            *field = JS_OTHER;
            if (mode == JS_REQUEST && n >= 9) {
                PyObject* head = PyUnicode_Substring(key, 0, 9);
                if (head == NULL) goto fail;
                if (PyUnicode_CompareWithASCIIString(head, "_context_") == 0) *field = JS_CONTEXT;
                Py_DECREF(head);
            }
        }
        if (*field == JS_OTHER || *field == JS_ROUTING) return key;
        if (*field == JS_CONTEXT) {
            PyObject* name = PyUnicode_Substring(key, 9, n);
            Py_DECREF(key);
            return name;
        }
        Py_DECREF(key);
        return NULL;
    fail:
        Py_DECREF(key);
        return NULL;
    }

    /* Keeps one top-level member in *f, taking the references to key (NULL
       for a field) and value: a field aside (a repeated one: the last
       value, as in a dict), a request's context key in its context, any
       other key of a request in its message (a reply's are dropped). 0, or
       -1 on an error. Shared with msgpack_fields.pxi's reader. */
    static inline int js_fields_store(js_fields* f, int mode, int field, PyObject* key, PyObject* value) {
        int rc = 0;
        if (field >= 0) {
            Py_XSETREF(f->field[field], value);
            Py_XDECREF(key);
            return 0;
        }
        if (field == JS_CONTEXT) {
            if (f->context == NULL && (f->context = PyDict_New()) == NULL) rc = -1;
            if (rc == 0) rc = PyDict_SetItem(f->context, key, value);
        } else if (mode == JS_REQUEST) {
            rc = PyDict_SetItem(f->message, key, value);
        }
        Py_DECREF(key);
        Py_DECREF(value);
        return rc;
    }

    /* One member of the top level: its key sorted, its value stored. 1 when
       the object closed after it, 0 when a member follows, -1 when the text
       is left to orjson or on an error. */
    static int js_field_member(js_reader* r, js_fields* f, int mode) {
        const unsigned char* s;
        Py_ssize_t n;
        PyObject* key = NULL;
        int field = JS_OTHER;
        js_skip_space(r);
        int quote = js_quote_at(r);
        if (!quote) goto leave;
        r->p += quote;
        switch (js_scan_string(r, &s, &n)) {
        case JS_ASCII:
            field = js_classify(s, n, mode);
            if (field == JS_OTHER || field == JS_ROUTING) key = n <= JS_KEY_LEN_MAX ? js_key(s, n) : js_ascii_str(s, n);
            else if (field == JS_CONTEXT) key = js_ascii_str(s + 9, n - 9);
            else break;
            if (key == NULL) return -1;
            break;
        case JS_UTF8:
            /* no field name has such bytes; a context key may */
            field = mode == JS_REQUEST && n >= 9 && memcmp(s, "_context_", 9) == 0 ? JS_CONTEXT : JS_OTHER;
            key = field == JS_CONTEXT ? js_str_from_utf8(r, s + 9, n - 9) : js_str_from_utf8(r, s, n);
            if (key == NULL) return -1;
            break;
        case JS_ESCAPED:
            key = js_escaped_key(r, s, mode, &field);
            if (key == NULL && (field < 0 || PyErr_Occurred())) return -1;
            break;
        default:
            goto leave;
        }
        js_skip_space(r);
        if (r->p >= r->end || *r->p != ':') goto leave;
        r->p++;
        js_skip_space(r);
        PyObject* value;
        if (field == JS_ROUTING && (quote = js_quote_at(r)) != 0) {
            /* The same few strings in every request, hashed by the
               dispatcher to find its endpoint: kept as keys are. */
            r->p += quote;
            value = js_string(r, 1);
        } else {
            value = js_value(r, 1);
        }
        if (value == NULL) {
            Py_XDECREF(key);
            return -1;
        }
        if (js_fields_store(f, mode, field, key, value) < 0) return -1;
        int next = js_after_item(r, '}');
        if (next >= 0) return next;
        js_leave(r);
        return -1;
    leave:
        Py_XDECREF(key);
        js_leave(r);
        return -1;
    }

    /* Reads a JSON object text as a request's or a reply's inner mapping
       into *f: 1 when read, 0 when the text is left to orjson (or, quoted,
       to be unescaped and read again), -1 on an error (an exception set); *f
       holds nothing but on 1. `text` must lie in a bytes object's buffer;
       `quoted`: it is still quoted as the envelope's string. */
    static int js_load_fields(const char* text, Py_ssize_t size, int quoted, int mode, js_fields* f) {
        js_reader r;
        int next;
        r.p = (const unsigned char*)text;
        r.end = r.p + size;
        r.quoted = quoted;
        r.not_mine = 0;
        memset(f, 0, sizeof(*f));
        js_skip_space(&r);
        if (r.p >= r.end || *r.p != '{') return 0;
        r.p++;
        if (mode == JS_REQUEST && (f->message = PyDict_New()) == NULL) return -1;
        js_skip_space(&r);
        if (r.p < r.end && *r.p == '}') {
            r.p++;
            next = 1;
        } else {
            while ((next = js_field_member(&r, f, mode)) == 0) {}
        }
        if (next > 0) {
            js_skip_space(&r);
            if (r.p == r.end) return 1;
            r.not_mine = 1;
        }
        js_fields_clear(f);
        if (r.not_mine && !PyErr_Occurred()) return 0;
        return -1;
    }

    /* The dict a JSON object text reads to, or None when the text is left to
       orjson (anything but an object in the syntax above, with nothing but
       whitespace after it). `text` must lie in a bytes object's buffer. */
    static PyObject* js_load_object(const char* text, Py_ssize_t size) {
        js_reader r;
        r.p = (const unsigned char*)text;
        r.end = r.p + size;
        r.quoted = 0;
        r.not_mine = 0;
        js_skip_space(&r);
        if (r.p >= r.end || *r.p != '{') Py_RETURN_NONE;
        PyObject* map = js_object(&r, 0);
        if (map == NULL) {
            if (r.not_mine && !PyErr_Occurred()) Py_RETURN_NONE;
            return NULL;
        }
        js_skip_space(&r);
        if (r.p != r.end) {
            Py_DECREF(map);
            Py_RETURN_NONE;
        }
        return map;
    }
    """
    enum:
        JS_REQUEST
        JS_REPLY
        JS_MSG_ID
        JS_REPLY_Q
        JS_TIMEOUT
        JS_UNIQUE_ID
        JS_RESULT
        JS_FAILURE
        JS_ENDING
        JS_FIELDS
    ctypedef struct js_fields:
        PyObject* field[JS_FIELDS]
        PyObject* message
        PyObject* context
    object _js_load_object "js_load_object" (const char* text, Py_ssize_t size)
    int _js_load_fields "js_load_fields" (const char* text, Py_ssize_t size, bint quoted, int mode,
                                          js_fields* f) except -1
    void _js_fields_clear "js_fields_clear" (js_fields* f)
