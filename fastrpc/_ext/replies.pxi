# C layout of fastrpc/drivers/amqp/replies_py.py's class Replies in its
# compiled build (fastrpc._ext.replies): every call waits through it and
# every reply is handed over by it. Included by fastrpc/_ext/replies.pxd, the
# layout of the compiled build, and by fastrpc/drivers/amqp/replies.pxd, the
# same type under the name fastrpc/drivers/amqp/calls_py.py imports it by.

cimport cython

from fastrpc.amqp.connection_core cimport ConnectionCore


cdef class Replies:
    cdef public object _sender, _topology, _max_body, _lock, _rechecks
    cdef public object name, ch, late_replies, bad_replies
    cdef public bint consuming
    cdef public dict waiters
    cdef object __weakref__

    # Once per call: the connection's wait_for (cpdef) called directly.
    @cython.locals(conn=ConnectionCore)
    cpdef wait(self, replies, msg_id, deadline, call_monitor_timeout, sent=*)
