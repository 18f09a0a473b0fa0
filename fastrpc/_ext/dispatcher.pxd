# C layout of fastrpc/dispatcher_py.py's RPCDispatcher in its compiled build
# (fastrpc._ext.dispatcher): what dispatch() reads for every request. Its
# other classes stay Python classes.


cdef class RPCDispatcher:
    cdef public list endpoints
    cdef public dict _routes
    cdef public object _serializer, _access_policy, _default_target
    cdef public bint _plain, _static_policy
    cdef dict __dict__  # as any Python object: attributes others set stay settable
    cdef object __weakref__

    cpdef dispatch(self, incoming)
    cpdef _do_dispatch(self, endpoint, method, ctxt, args)
