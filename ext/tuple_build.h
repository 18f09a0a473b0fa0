/* Building NamedTuple instances from C, shared by the compiled modules.
 *
 * Events, requests and replies are tuple subclasses. They are allocated the
 * way tuple.__new__ does it for a subclass (tp_alloc, then fill the slots),
 * minus the intermediate tuple and the Python-level __new__ of the class.
 */
#ifndef FASTRPC_TUPLE_BUILD_H
#define FASTRPC_TUPLE_BUILD_H

#include <Python.h>

static inline PyObject* fastrpc_tuple_alloc(PyObject* cls, Py_ssize_t n) {
    PyTypeObject* t = (PyTypeObject*)cls;
    return t->tp_alloc(t, n);
}

/* Store v (a new reference is taken) in slot i of a tuple from fastrpc_tuple_alloc. */
static inline void fastrpc_tuple_fill(PyObject* t, Py_ssize_t i, PyObject* v) {
    Py_INCREF(v);
    PyTuple_SET_ITEM(t, i, v);
}

#endif
