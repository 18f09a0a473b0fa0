# C layout of fastrpc/drivers/amqp/incoming_py.py's classes in its compiled
# build (fastrpc._ext.incoming): a read collector's and a request's fields as
# struct fields. AmqpIncomingMessage (fastrpc/drivers/amqp/rpc_listener.py),
# a Python class, derives from IncomingCore.

from fastrpc.amqp.sync cimport Lock


cdef class ReadCollector:
    cdef object _listener, _gen, _ch, _settled, _after_read, _put, _dispatched
    cdef Lock _inline_lock  # taken per read: called directly
    cdef Py_ssize_t _ack_batch
    cdef list _arrived


cdef class IncomingCore:
    cdef public object ctxt, message, msg_id, _driver, reply_q, client_timeout, exchange, routing_key
    cdef public bint binary
