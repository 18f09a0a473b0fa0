# C layout of fastrpc/drivers/amqp/handoff_py.py's classes in its compiled
# build (fastrpc._ext.handoff): every message the threading executor runs
# passes through a put and a get, each taking its locks directly. Included by
# fastrpc/_ext/handoff.pxd, the layout of the compiled build, and by
# fastrpc/drivers/amqp/handoff.pxd, the same type under the name
# fastrpc/drivers/amqp/incoming_py.py imports it by.

cimport cython

from fastrpc.amqp.sync cimport Lock


cdef class _Slot:
    cdef readonly Lock lock  # never None: not replaced
    cdef public object item


cdef class Handoff:
    cdef Lock _lock
    cdef object _items, _slots
    cdef readonly object _waiting  # read by tests: the pollers blocked in get
    cdef public object queued

    @cython.locals(slot=_Slot)
    cpdef put(self, item)
    @cython.locals(slot=_Slot)
    cpdef get(self, timeout)
