# Building NamedTuple instances (tuple subclasses) from C, for both compiled
# modules: allocated the way tuple.__new__ does it for a subclass (tp_alloc,
# then fill the slots), minus the intermediate tuple and the Python-level
# __new__ of the class. _evN(cls, ...) builds an N-field instance of cls.

cdef extern from *:
    """
    static inline PyObject* fastrpc_tuple_alloc(PyObject* cls, Py_ssize_t n) {
        PyTypeObject* t = (PyTypeObject*)cls;
        return t->tp_alloc(t, n);
    }

    /* Store v (a new reference is taken) in slot i of a tuple from fastrpc_tuple_alloc. */
    static inline void fastrpc_tuple_fill(PyObject* t, Py_ssize_t i, PyObject* v) {
        Py_INCREF(v);
        PyTuple_SET_ITEM(t, i, v);
    }
    """
    object _tuple_alloc "fastrpc_tuple_alloc" (object cls, Py_ssize_t n)
    void _tuple_fill "fastrpc_tuple_fill" (object t, Py_ssize_t i, object v)


cdef inline object _ev3(object cls, object a, object b, object c):
    t = _tuple_alloc(cls, 3)
    _tuple_fill(t, 0, a)
    _tuple_fill(t, 1, b)
    _tuple_fill(t, 2, c)
    return t


cdef inline object _ev5(object cls, object a, object b, object c, object d, object e):
    t = _tuple_alloc(cls, 5)
    _tuple_fill(t, 0, a)
    _tuple_fill(t, 1, b)
    _tuple_fill(t, 2, c)
    _tuple_fill(t, 3, d)
    _tuple_fill(t, 4, e)
    return t


cdef inline object _ev7(object cls, object a, object b, object c, object d, object e, object f, object g):
    t = _tuple_alloc(cls, 7)
    _tuple_fill(t, 0, a)
    _tuple_fill(t, 1, b)
    _tuple_fill(t, 2, c)
    _tuple_fill(t, 3, d)
    _tuple_fill(t, 4, e)
    _tuple_fill(t, 5, f)
    _tuple_fill(t, 6, g)
    return t


cdef inline object _ev8(object cls, object a, object b, object c, object d, object e, object f, object g,
                        object h):
    t = _tuple_alloc(cls, 8)
    _tuple_fill(t, 0, a)
    _tuple_fill(t, 1, b)
    _tuple_fill(t, 2, c)
    _tuple_fill(t, 3, d)
    _tuple_fill(t, 4, e)
    _tuple_fill(t, 5, f)
    _tuple_fill(t, 6, g)
    _tuple_fill(t, 7, h)
    return t
