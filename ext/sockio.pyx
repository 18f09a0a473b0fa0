# cython: language_level=3
"""A socket write that never waits, compiled: see fastrpc/amqp/sockio_py.py.

send(2) with MSG_DONTWAIT is made with the GIL held. It cannot block, so
letting go of the GIL would only hand it to another thread and back (a
context switch when one waits for it), which costs more than the call.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_SetFromErrno
from libc.errno cimport EAGAIN, EINTR, errno

__all__ = ["send_nowait"]


cdef extern from "Python.h":
    int PyObject_AsFileDescriptor(object) except -1


cdef extern from "<errno.h>":
    int EWOULDBLOCK


cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send"(int fd, const void* buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL


def send_nowait(sock, data):
    """Hand what of ``data`` fits in ``sock``'s send buffer to the kernel now;
    the bytes taken, 0 when the buffer is full. Other failures raise OSError."""
    cdef int fd = PyObject_AsFileDescriptor(sock)
    cdef Py_buffer view
    cdef ssize_t n
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        while True:
            n = c_send(fd, view.buf, <size_t>view.len, MSG_DONTWAIT | MSG_NOSIGNAL)
            if n >= 0:
                return n
            if errno == EINTR:
                continue
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return 0
            PyErr_SetFromErrno(OSError)
            return None  # not reached: the line above raised
    finally:
        PyBuffer_Release(&view)
