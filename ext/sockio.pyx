# cython: language_level=3
"""Socket calls of the connection's hot path, compiled: see fastrpc/amqp/sockio_py.py.

send(2) with MSG_DONTWAIT is made with the GIL held. It cannot block, so
letting go of the GIL would only hand it to another thread and back (a
context switch when one waits for it), which costs more than the call.
recv(2) lets go of the GIL while it waits, as the socket's own recv_into
does. Given the descriptor (``fd`` >= 0), neither asks the socket object
for it: that is a method call per send or read.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport strerror

__all__ = ["recv_into", "send_nowait"]


cdef extern from "Python.h":
    int PyObject_AsFileDescriptor(object) except -1


cdef extern from "<errno.h>":
    int EWOULDBLOCK


cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send"(int fd, const void* buf, size_t n, int flags)
    ssize_t c_recv "recv"(int fd, void* buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL


def send_nowait(sock, data, int fd=-1):
    """Hand what of ``data`` fits in ``sock``'s send buffer to the kernel now;
    the bytes taken, 0 when the buffer is full. Other failures raise OSError.
    ``fd``: ``sock``'s descriptor, or -1 (ask the socket)."""
    if fd < 0:
        fd = PyObject_AsFileDescriptor(sock)
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


def recv_into(sock, buf, int fd=-1):
    """Wait for bytes from ``sock`` (a blocking socket) and read what came
    into ``buf``; the count, 0 at end of stream. BlockingIOError when the
    socket's receive timeout (SO_RCVTIMEO) passed first; OSError as recv(2)
    fails. ``fd``: ``sock``'s descriptor, or -1 (ask the socket)."""
    if fd < 0:
        return sock.recv_into(buf)
    cdef Py_buffer view
    cdef ssize_t n
    cdef int err
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        while True:
            with nogil:
                n = c_recv(fd, view.buf, <size_t>view.len, 0)
                err = errno
            if n >= 0:
                return n
            if err == EINTR:
                PyErr_CheckSignals()  # raises what a signal handler raised
                continue
            raise OSError(err, strerror(err).decode())  # EAGAIN: BlockingIOError
    finally:
        PyBuffer_Release(&view)
