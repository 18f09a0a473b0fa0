# C layout of fastrpc/amqp/connection_core_py.py's class ConnectionCore: every
# attribute of a connection, as struct fields instead of instance-dict entries
# (Connection, its subclass, adds none). Numbers and flags that only ever hold
# those are typed. Included by fastrpc/_ext/connection_core.pxd, the layout of
# the compiled build fastrpc._ext.connection_core, and by
# fastrpc/amqp/connection_core.pxd, the same type under the name
# connection_py.py imports it by (Cython needs a class it derives from
# declared under the name it is imported by).

cimport cython

from fastrpc.amqp.codec cimport FrameWriter
from fastrpc.amqp.sync cimport Lock, Mailbox


# The base class of ChannelCore (fastrpc/_ext/channel_core.pxi), declared here
# because channel_core cimports this module: the reader's dispatch calls a
# channel's handlers through this class's table, without a method look-up.
cdef class ChannelEvents:
    cpdef handle_delivery(self, delivery)
    cpdef handle_method(self, event)
    cpdef handle_content(self, event)


cdef class ConnectionCore:
    cdef public object params, server_properties, on_close, on_blocked, blocked_reason
    cdef public object frame_max, channel_max, heartbeat  # any int the URL allows
    cdef public bint blocked
    # Locks taken per message: fastrpc.amqp.sync's, called directly.
    cdef readonly Lock _lock, send_lock, _baton, _sleepers_lock  # never None: not replaced
    cdef public object _transport, _frame_reader, _out, _taken, _write_failed
    cdef public Py_ssize_t _out_bytes
    cdef public bint _flushing, _hand_over, _closing, _reader_parked, _reader_wanted, _one_event, _unanswered
    cdef public int _out_waiting, _waiting, _writer_run
    cdef public object _last_writer
    cdef public dict _channels
    cdef public object _free_ids, _next_id, _dead, _dead_event, _unblocked, lost_acked
    cdef public object _reader_thread, _reader_ident, _heartbeat_thread
    cdef public object _sleepers, _waits, _entries, _exits, _left
    cdef public double _shared_until, _recv_timeout
    cdef public int _recv_lowat
    cdef public object _writers
    cdef public object _reader_wake, _recv_since, _quiet_since, _probe_channel
    cdef public list _after_dispatch
    cdef object __weakref__

    # Called per frame sent or read: direct C calls from this class and from
    # channels (which hold their connection typed as this class).
    cpdef FrameWriter writer(self)
    cpdef bytes take(self, FrameWriter writer)
    cpdef send_locked(self, data, deadline=*)
    cpdef stream_position(self)
    cpdef _read_batch(self, recv_timeout, lowat=*)
    cpdef _run_after_dispatch(self)
    @cython.locals(ch=ChannelEvents)
    cpdef _dispatch(self, events)
    # Once per call waiting for its reply: the mailbox's methods called directly.
    cpdef wait_for(self, Mailbox mailbox, timeout)
    cpdef done_waiting(self, Mailbox mailbox)
