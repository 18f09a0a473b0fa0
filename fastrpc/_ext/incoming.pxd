# C layout of fastrpc/drivers/amqp/incoming_py.py's classes in its compiled
# build (fastrpc._ext.incoming): a read collector's, a request intake's and a
# request's fields as struct fields. AmqpIncomingMessage
# (fastrpc/drivers/amqp/rpc_listener.py), a Python class, derives from
# IncomingCore.

cimport cython

from fastrpc.amqp.channel_core cimport ChannelCore
from fastrpc.amqp.sync cimport Lock
from fastrpc.drivers.amqp.acks cimport Settled
from fastrpc.drivers.amqp.handoff cimport Handoff


cdef class RequestIntake:
    cdef object _listener, _driver, _message_class, _marks
    cdef object _seen  # an OrderedDict: its own methods, not dict's, keep its order
    cdef Lock _ack_lock  # taken per request: called directly
    cdef Handoff _incoming  # a poll's get called directly

    cpdef list poll(self, timeout=*, batch_size=*)
    cpdef accept(self, req)
    cdef _decoded(self, ch, Settled settled, delivery, properties, body)
    cpdef list take_one(self, gen, ch, Settled settled, delivery)
    cpdef run_one(self, handler, gen, ch, Settled settled, delivery)


cdef class ReadCollector:
    cdef object _listener, _gen, _ch, _after_read, _put, _dispatched
    cdef Settled _settled
    cdef RequestIntake _intake  # None for listeners of other kinds
    cdef Lock _inline_lock  # taken per read: called directly
    cdef Py_ssize_t _ack_batch
    cdef list _arrived


cdef class IncomingCore:
    cdef public object ctxt, message, msg_id, _driver, reply_q, client_timeout, exchange, routing_key
    cdef public bint binary


# Once per request: the channel's basic_ack (cpdef) called directly, the
# bookkeeping read as C fields.
@cython.locals(ch=ChannelCore, n=Py_ssize_t)
cpdef ack_one(ch, Settled settled, tag)
