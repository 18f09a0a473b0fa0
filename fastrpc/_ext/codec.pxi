# C layout of ext/codec.pyx's class FrameWriter and the methods the
# connection layer calls on it per frame it sends (cpdef: direct C calls from
# a caller that knows the type). Included by fastrpc/_ext/codec.pxd, the
# compiled build's own declaration, and by fastrpc/amqp/codec.pxd, the same
# type under the public name the connection layer imports it by.

from libc.stdint cimport uint16_t, uint32_t


cdef class FrameWriter:
    cdef object _wb  # its WriteBuffer (a type of codec.pyx alone)
    cdef public long long frame_max

    cpdef bytes take(self)
    cpdef publish(self, channel, exchange, routing_key, body, properties=*, mandatory=*, immediate=*)
    cpdef ack(self, channel, delivery_tag, multiple=*)
    cdef int _end_checked(self, Py_ssize_t mark) except -1
    cdef int _content_frames(self, uint16_t channel, object properties, object body) except -1
    cdef int _tag_method(self, object channel, uint32_t key, object delivery_tag, unsigned char bits) except -1
