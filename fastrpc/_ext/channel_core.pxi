# C layout of fastrpc/amqp/channel_core_py.py's class ChannelCore: every
# attribute of a channel (Channel, its subclass, adds none). Included by
# fastrpc/_ext/channel_core.pxd, the layout of the compiled build
# fastrpc._ext.channel_core, and by fastrpc/amqp/channel_core.pxd, the same
# type under the name channel_py.py imports it by (Cython needs a class it
# derives from declared under the name it is imported by).

from fastrpc.amqp.connection_core cimport ChannelEvents, ConnectionCore


cdef class ChannelCore(ChannelEvents):
    cdef public ConnectionCore _conn  # typed: its send methods are called directly
    cdef public object on_return, on_nack, on_close, _closed, _closing, _rpc_lock, _waiter
    cdef public dict _consumers, _cancel_callbacks, _pending, _mandatory, _returned
    cdef public object _flow
    cdef public object _next_tag, _low_tag
    cdef public int channel_id
    cdef public bint _confirm, _flow_paused
    cdef object __weakref__

    cpdef _send(self, data)
    cpdef _send_tracked(self, data)
    cpdef _on_confirm(self, args, error)
    # Called by the connection's reader (typed as ChannelEvents there).
    cpdef handle_delivery(self, delivery)
    cpdef handle_method(self, event)
    cpdef handle_content(self, event)
    # Called per request by the RPC listener (fastrpc/_ext/incoming.pxd).
    cpdef basic_ack(self, delivery_tag, multiple=*)
    # Called per call, cast and reply by the driver's Sender (fastrpc/_ext/sending.pxi).
    cpdef basic_publish(self, exchange, routing_key, body, properties=*, mandatory=*, immediate=*,
                        blocked_until=*)
    cpdef tuple basic_publish_tracked(self, exchange, routing_key, body, properties=*, blocked_until=*,
                                      mandatory=*)
