# C layout of fastrpc/drivers/amqp/incoming_py.py's classes in its compiled
# build (fastrpc._ext.incoming): a read collector's, a request intake's and a
# request's fields as struct fields. AmqpIncomingMessage
# (fastrpc/drivers/amqp/rpc_listener.py), a Python class, derives from
# IncomingCore.

cimport cython

from fastrpc.amqp.channel_core cimport ChannelCore
from fastrpc.amqp.sync cimport Lock


cdef class RequestIntake:
    cdef object _listener, _driver, _message_class, _marks
    cdef object _seen  # an OrderedDict: its own methods, not dict's, keep its order
    cdef Lock _ack_lock  # taken per request: called directly

    cpdef accept(self, req)
    cdef _decoded(self, ch, settled, delivery)
    cpdef list take_one(self, gen, ch, settled, delivery)
    cpdef run_one(self, handler, gen, ch, settled, delivery)


cdef class ReadCollector:
    cdef object _listener, _gen, _ch, _settled, _after_read, _put, _dispatched
    cdef RequestIntake _intake  # None for listeners of other kinds
    cdef Lock _inline_lock  # taken per read: called directly
    cdef Py_ssize_t _ack_batch
    cdef list _arrived


cdef class IncomingCore:
    cdef public object ctxt, message, msg_id, _driver, reply_q, client_timeout, exchange, routing_key
    cdef public bint binary


# Once per request: the channel's basic_ack (cpdef) called directly.
@cython.locals(ch=ChannelCore)
cpdef ack_one(ch, settled, tag)
