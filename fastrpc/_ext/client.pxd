# C layout of fastrpc/client_py.py's _CallContext (RPCClient's base, what
# prepare() returns) in its compiled build (fastrpc._ext.client): what a
# call and a cast read. RPCClient, declared nowhere here, stays a Python
# class deriving from it.


cdef class _CallContext:
    cdef public object conf, transport, target, serializer, timeout, version_cap, retry
    cdef public object call_monitor_timeout, transport_options
    cdef dict __dict__  # as any Python object: attributes others set stay settable
    cdef object __weakref__

    cpdef dict _make_message(self, ctxt, method, dict args)
