# C layout of fastrpc/drivers/amqp/sending_py.py's class Sender in its
# compiled build (fastrpc._ext.sending): every call, cast and reply is
# published through it. Included by fastrpc/_ext/sending.pxd, the layout of
# the compiled build, and by fastrpc/drivers/amqp/sending.pxd, the same type
# under the name fastrpc/drivers/amqp/calls_py.py imports it by. Attributes
# not declared here live in the instance's dict.

from fastrpc.amqp.channel_core cimport ChannelCore


cdef class Sender:
    # Typed: their publish methods (cpdef) are called directly.
    cdef public ChannelCore pub_ch, reply_ch
    cdef public set declared  # exchanges
    cdef dict __dict__
    cdef object __weakref__

    cpdef publish(self, ex, routing_key, body, props, retry, deadline)
    cpdef tuple publish_call(self, ex, routing_key, body, props, retry, deadline)
    cpdef publish_reply(self, reply_q, body, props, mandatory)
