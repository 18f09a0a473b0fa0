# cython: language_level=3
"""Locks and mailboxes of the per-message paths, compiled: see
fastrpc/amqp/sync_py.py.

``Lock`` behaves as ``threading.Lock`` and ``Mailbox`` as
``queue.SimpleQueue`` (the same methods, arguments, errors, and the same
handling of signals while blocked), on the same primitive: a
``PyThread_type_lock``. What differs is the cost of a call. Their methods
are cpdef on final classes, so compiled code that holds one typed (the
connection layer, fastrpc/_ext/*.pxd) calls them directly, without a method
lookup, an argument tuple or ``threading.Lock.acquire``'s keyword parser (a
few hundred instructions per acquire). A try without waiting keeps the GIL;
a wait lets go of it.
"""

cimport cython
from cpython.list cimport PyList_GET_SIZE
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from queue import Empty
from types import GenericAlias

__all__ = ["Lock", "Mailbox"]


cdef extern from "pythread.h":
    ctypedef enum PyLockStatus:
        PY_LOCK_FAILURE
        PY_LOCK_ACQUIRED
        PY_LOCK_INTR
    ctypedef long long PY_TIMEOUT_T
    PY_TIMEOUT_T PY_TIMEOUT_MAX
    PyThread_type_lock PyThread_allocate_lock()
    void PyThread_free_lock(PyThread_type_lock)
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock, PY_TIMEOUT_T, int) nogil
    void PyThread_release_lock(PyThread_type_lock) nogil


cdef extern from "Python.h":
    int Py_MakePendingCalls() except -1


cdef inline double _now():
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef PY_TIMEOUT_T _microseconds(double seconds) except -2:
    """``seconds`` (>= 0) as a wait for PyThread_acquire_lock_timed, rounded up."""
    if seconds != seconds:
        raise ValueError("Invalid value NaN (not a number)")
    cdef double us = seconds * 1e6
    if us > <double>PY_TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    cdef PY_TIMEOUT_T whole = <PY_TIMEOUT_T>us
    return whole + 1 if whole < us else whole


cdef int _acquire(PyThread_type_lock lock, double timeout) except -1:
    """Take ``lock``, waiting at most ``timeout`` seconds (< 0: as long as it
    takes); 1 when taken, 0 when not. A signal that interrupts
    the wait runs its handler here; what the handler raises propagates."""
    cdef PyLockStatus r = PyThread_acquire_lock_timed(lock, 0, 0)  # first without letting go of the GIL
    if r == PY_LOCK_ACQUIRED or timeout == 0:
        return r == PY_LOCK_ACQUIRED
    cdef double deadline = _now() + timeout if timeout > 0 else 0.0
    cdef PY_TIMEOUT_T us = _microseconds(timeout) if timeout > 0 else -1
    while True:
        with nogil:
            r = PyThread_acquire_lock_timed(lock, us, 1)
        if r != PY_LOCK_INTR:
            return r == PY_LOCK_ACQUIRED
        Py_MakePendingCalls()  # raises what a signal handler raised
        if timeout > 0:
            timeout = deadline - _now()
            if timeout < 0:
                return 0  # the handler used up the time: not taken, as threading.Lock
            us = _microseconds(timeout)


@cython.final
cdef class Lock:
    """A lock as ``threading.Lock``: acquire(blocking=True, timeout=-1),
    release(), locked(), and ``with``."""

    def __cinit__(self):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError("cannot allocate lock")
        self._held = False

    def __dealloc__(self):
        if self._lock != NULL:
            if self._held:
                PyThread_release_lock(self._lock)
            PyThread_free_lock(self._lock)

    cpdef bint acquire(self, int blocking=True, double timeout=-1) except -1:
        """Take the lock; False when ``blocking`` is false or ``timeout``
        seconds passed first."""
        if not blocking:
            if timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            timeout = 0
        elif timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number")
        elif timeout != -1:
            _microseconds(timeout)  # NaN and OverflowError before taking the lock, as threading.Lock
        if _acquire(self._lock, timeout):
            self._held = True
            return True
        return False

    cpdef release(self):
        """Let go of the lock (any thread may); RuntimeError when it is not held."""
        if not self._held:
            raise RuntimeError("release unlocked lock")
        self._held = False
        PyThread_release_lock(self._lock)

    def locked(self):
        """Whether the lock is held."""
        return self._held

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()

    def __repr__(self):
        return f"<{'locked' if self._held else 'unlocked'} fastrpc.amqp.sync.Lock object at {id(self):#x}>"


@cython.final
cdef class Mailbox:
    """A queue as ``queue.SimpleQueue``: put(), get(block=True,
    timeout=None) raising ``queue.Empty``, get_nowait(), put_nowait(),
    empty(), qsize(). Any thread puts and gets; a get waits while there is
    nothing to take."""

    def __cinit__(self):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError("cannot allocate lock")
        self._held = False
        self._items = []
        self._head = 0

    def __dealloc__(self):
        if self._lock != NULL:
            if self._held:
                PyThread_release_lock(self._lock)
            PyThread_free_lock(self._lock)

    cpdef put(self, item, bint block=True, timeout=None):
        """Add ``item``; never waits (``block`` and ``timeout`` are accepted
        and ignored, as by SimpleQueue)."""
        self._items.append(item)
        if self._held:
            # A get may be waiting for the lock: let it through.
            self._held = False
            PyThread_release_lock(self._lock)

    def put_nowait(self, item):
        self.put(item)

    cpdef get(self, bint block=True, timeout=None):
        """The oldest item; waits for one (at most ``timeout`` seconds, when
        given) unless ``block`` is false. ``queue.Empty`` when none came."""
        cdef double wait = -1
        cdef double deadline = 0.0
        if not block:
            wait = 0
        elif timeout is not None:
            wait = timeout
            if wait < 0:
                raise ValueError("'timeout' must be a non-negative number")
            _microseconds(wait)  # NaN and OverflowError before taking an item, as SimpleQueue
        if self._head < PyList_GET_SIZE(self._items):
            return self._take()  # the lock is not held: nobody waits on it now
        if wait > 0:
            deadline = _now() + wait
        # A put releases the lock when something came: take it until the
        # list holds an item (it is held again, then, for the next wait).
        while self._head == PyList_GET_SIZE(self._items):
            if not _acquire(self._lock, wait):
                raise Empty
            self._held = True
            if deadline > 0:
                wait = deadline - _now()
                if wait < 0:
                    wait = 0
        item = self._take()
        # Let the next waiter look: an item put while we took the lock did
        # not release it (we held it), and may be there for that waiter.
        self._held = False
        PyThread_release_lock(self._lock)
        return item

    cpdef get_nowait(self):
        """The oldest item; ``queue.Empty`` when there is none."""
        return self.get(False)

    cpdef bint empty(self) noexcept:
        """Whether nothing is there to take."""
        return self._head == PyList_GET_SIZE(self._items)

    def qsize(self):
        """How many items wait to be taken."""
        return PyList_GET_SIZE(self._items) - self._head

    cdef object _take(self):
        cdef list items = self._items
        cdef Py_ssize_t head = self._head
        item = items[head]
        items[head] = None
        head += 1
        cdef Py_ssize_t size = PyList_GET_SIZE(items)
        if head == size:
            del items[:]
            head = 0
        elif head > size - head:
            # More taken than left: drop the taken slots, or a mailbox that
            # never empties (its reader always an item behind) would keep
            # every slot it ever used, as SimpleQueue does not.
            del items[:head]
            head = 0
        self._head = head
        return item

    __class_getitem__ = classmethod(GenericAlias)  # Mailbox[Reply], as SimpleQueue[Reply]

    def __repr__(self):
        return f"<fastrpc.amqp.sync.Mailbox object at {id(self):#x}>"
