# C layout of fastrpc/amqp/connection_py.py's classes in its compiled build
# (fastrpc._ext.connection): attributes become struct fields instead of
# instance-dict entries. Numbers and flags that only ever hold those are typed.

cdef class Connection:
    cdef public object params, server_properties, on_close, on_blocked, blocked_reason
    cdef public object frame_max, channel_max, heartbeat  # any int the URL allows
    cdef public bint blocked
    cdef public object _transport, _frame_reader, _lock, _send_lock, _out, _taken, _write_failed
    cdef public Py_ssize_t _out_bytes
    cdef public bint _flushing, _hand_over, _closing, _reader_parked, _reader_wanted, _one_event
    cdef public int _out_waiting, _waiting
    cdef public object _channels, _free_ids, _next_id, _dead, _dead_event, _unblocked, _local
    cdef public object _reader_thread, _reader_ident, _heartbeat_thread
    cdef public object _baton, _sleepers, _sleepers_lock, _waits, _entries, _exits, _left
    cdef public double _shared_until, _recv_timeout
    cdef public object _reader_wake, _recv_since, _quiet_since, _after_dispatch
    cdef object __weakref__
