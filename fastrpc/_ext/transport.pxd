# C layout of fastrpc/amqp/transport_py.py's classes in its compiled build
# (fastrpc._ext.transport); see connection.pxd. TlsTransport stays a Python
# subclass of PlainTransport.

cdef class PlainTransport:
    cdef public object sock, _rbuf, _rview, send_since
    cdef public unsigned long long sent
    cdef public int _small_reads, _fd
    cdef public double _read_at
    cdef dict __dict__  # tests wrap its methods on one instance
    cdef object __weakref__
