# C layout of fastrpc/drivers/amqp/incoming_py.py's class IncomingCore in its
# compiled build (fastrpc._ext.incoming): a request's fields as struct fields.
# AmqpIncomingMessage (fastrpc/drivers/amqp/rpc_listener.py), a Python class,
# derives from it.

cdef class IncomingCore:
    cdef public object ctxt, message, msg_id, _driver, reply_q, client_timeout, exchange, routing_key
    cdef public bint binary
