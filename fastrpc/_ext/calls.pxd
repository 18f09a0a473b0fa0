# C layout of fastrpc/drivers/amqp/calls_py.py's class Calls in its compiled
# build (fastrpc._ext.calls): read on every call and cast.

cimport cython

from fastrpc.drivers.amqp.replies cimport Replies
from fastrpc.drivers.amqp.sending cimport Sender
from fastrpc.amqp.connection_core cimport ConnectionCore


cdef class Calls:
    cdef public object driver, topology, default_exchange, ctype, cast_props
    cdef public Sender sender  # its publish methods (cpdef) called directly
    cdef public Replies replies  # never None: its name, state and wait read directly
    cdef public bint binary
    cdef public Py_ssize_t max_body
    cdef public dict routes, call_props, reply_props
    cdef object __weakref__

    # Once per call: the connection's done_waiting (cpdef) called directly.
    @cython.locals(conn=ConnectionCore)
    cpdef send(self, target, ctxt, message, wait_for_reply=*, timeout=*, call_monitor_timeout=*,
               retry=*, at_least_once=*)
    # Once per request served.
    cpdef send_reply(self, reply_q, msg_id, result, failure, ending, binary)
