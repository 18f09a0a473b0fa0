# C layout of fastrpc/amqp/connection_py.py's classes in its compiled build
# (fastrpc._ext.connection). Every attribute is declared in the base class's layout,
# fastrpc/_ext/connection_core.pxi, which is cimported by the name connection_py.py imports
# it by (fastrpc/amqp/connection_core.pxd).

from fastrpc.amqp.connection_core cimport ConnectionCore


cdef class Connection(ConnectionCore):
    cpdef send_locked(self, data, deadline=*)
