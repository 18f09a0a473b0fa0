# C layout of fastrpc/amqp/channel_py.py's classes in its compiled build
# (fastrpc._ext.channel); see connection.pxd.

cdef class Channel:
    cdef public object _conn, on_return, on_close, _closed, _closing, _rpc_lock, _waiter
    cdef public object _consumers, _cancel_callbacks, _flow, _pending, _mandatory, _returned
    cdef public object _next_tag, _low_tag
    cdef public int channel_id
    cdef public bint _confirm
    cdef object __weakref__
