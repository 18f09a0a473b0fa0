# C layout of fastrpc/amqp/channel_core_py.py's class ChannelCore: every
# attribute of a channel (Channel, its subclass, adds none). Included by
# fastrpc/_ext/channel_core.pxd, the layout of the compiled build
# fastrpc._ext.channel_core, and by fastrpc/amqp/channel_core.pxd, the same
# type under the name channel_py.py imports it by (Cython needs a class it
# derives from declared under the name it is imported by).

cdef class ChannelCore:
    cdef public object _conn, on_return, on_nack, on_close, _closed, _closing, _rpc_lock, _waiter
    cdef public object _consumers, _cancel_callbacks, _flow, _pending, _mandatory, _returned
    cdef public object _next_tag, _low_tag
    cdef public int channel_id
    cdef public bint _confirm, _flow_paused
    cdef object __weakref__
