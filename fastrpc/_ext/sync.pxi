# C layout of ext/sync.pyx's classes and the methods the connection layer
# calls on them per message (cpdef on final classes: direct C calls from a
# caller that knows the type). Included by fastrpc/_ext/sync.pxd, the
# compiled build's own declaration, and by fastrpc/amqp/sync.pxd, the same
# types under the public name the connection layer imports them by.

cdef extern from "pythread.h":
    ctypedef void *PyThread_type_lock


@cython.final
cdef class Lock:
    cdef PyThread_type_lock _lock
    cdef bint _held
    cdef object __weakref__  # as threading.Lock's: weakref.ref(lock)

    cpdef bint acquire(self, int blocking=*, double timeout=*) except -1  # an int, as threading.Lock's
    cpdef release(self)


@cython.final
cdef class Mailbox:
    cdef list _items
    cdef Py_ssize_t _head  # the next item to take is _items[_head]
    cdef PyThread_type_lock _lock  # held while there is nothing to take
    cdef bint _held
    cdef object __weakref__  # as SimpleQueue's

    cpdef put(self, item, bint block=*, timeout=*)
    cpdef get(self, bint block=*, timeout=*)
    cpdef get_nowait(self)
    cpdef bint empty(self) noexcept
    cdef object _take(self)
