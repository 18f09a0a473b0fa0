# C layout of fastrpc/drivers/amqp/acks_py.py's class Settled in its compiled
# build (fastrpc._ext.acks): read and updated for every request acked.
# Included by fastrpc/_ext/acks.pxd, the layout of the compiled build, and by
# fastrpc/drivers/amqp/acks.pxd, the same type under the name
# fastrpc/drivers/amqp/incoming_py.py imports it by.


cdef class Settled:
    cdef public Py_ssize_t upto  # delivery tags: 1, 2, 3, ... per channel
    cdef public set early

    cpdef list settle(self, list tags, list ack)
