"""Server executors, backpressure, lifecycle, acknowledgement order."""

import threading
import uuid

import pytest
from endpoints import Gate

import fastrpc
from fastrpc import Options, Target
from fastrpc.server import RPCServer

WAIT = 10.0


def make_transport(**options):
    return fastrpc.get_rpc_transport(Options(**options), url=f"memory:///{uuid.uuid4().hex}")


def test_unknown_executor_rejected():
    t = make_transport()
    try:
        with pytest.raises(fastrpc.ExecutorLoadFailure):
            fastrpc.get_rpc_server(t, Target(topic="t", server="s"), [], executor="eventlet")
    finally:
        t.cleanup()


def _run_casts(executor, pool_size, count):
    t = make_transport(executor_thread_pool_size=pool_size)
    gate = Gate()
    srv = fastrpc.get_rpc_server(t, Target(topic="t", server="s"), [gate], executor=executor)
    srv.start()
    try:
        c = fastrpc.get_rpc_client(t, Target(topic="t"))
        for i in range(count):
            c.cast({}, "work", i=i)
        expected = 1 if executor == "blocking" else pool_size
        for _ in range(expected):
            assert gate.entered.acquire(timeout=WAIT)
        # The pool is full: the rest stays queued in the transport.
        queue = t._driver.broker.queues["t"]
        with t._driver.broker.cond:
            waiting = len(queue.messages)
        assert waiting == count - expected
        assert gate.running == expected
        gate.release.set()
        for _ in range(count - expected):
            assert gate.entered.acquire(timeout=WAIT)
    finally:
        gate.release.set()
        srv.stop()
        srv.wait()
        t.cleanup()
    return gate


def test_threading_pool_bound_and_backpressure():
    gate = _run_casts("threading", pool_size=3, count=10)
    assert gate.peak == 3
    assert all(name.startswith("fastrpc-worker") for name in gate.threads)


def test_blocking_dispatches_one_at_a_time_in_listener_thread():
    gate = _run_casts("blocking", pool_size=8, count=4)
    assert gate.peak == 1
    assert len(gate.threads) == 1
    assert next(iter(gate.threads)).startswith("fastrpc-server-")


def test_busy_server_leaves_work_for_idle_peer():
    t = make_transport(executor_thread_pool_size=1)
    busy, idle = Gate(), Gate()
    idle.release.set()
    servers = [fastrpc.get_rpc_server(t, Target(topic="t", server=n), [g]) for n, g in (("a", busy), ("b", idle))]
    servers[0].start()
    try:
        c = fastrpc.get_rpc_client(t, Target(topic="t"), timeout=WAIT)
        c.cast({}, "work", i=0)
        assert busy.entered.acquire(timeout=WAIT)
        servers[1].start()
        # Server a holds one message and cannot take another: b answers.
        assert c.call({}, "work", i=1) == 1
        assert idle.peak == 1
    finally:
        busy.release.set()
        for s in servers:
            s.stop()
        for s in servers:
            s.wait()
        t.cleanup()


def test_stop_then_wait_finishes_running_calls_and_takes_no_new_ones():
    t = make_transport()
    gate = Gate()
    srv = fastrpc.get_rpc_server(t, Target(topic="t", server="s"), [gate])
    srv.start()
    try:
        c = fastrpc.get_rpc_client(t, Target(topic="t"), timeout=WAIT)
        results = []
        caller = threading.Thread(target=lambda: results.append(c.call({}, "work", i=5)))
        caller.start()
        assert gate.entered.acquire(timeout=WAIT)
        srv.stop()
        c.cast({}, "work", i=6)
        waiter = threading.Thread(target=srv.wait)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()  # a call is still running
        gate.release.set()
        waiter.join(WAIT)
        assert not waiter.is_alive()
        caller.join(WAIT)
        assert results == [5]
        # The cast sent after stop() was not taken.
        assert not gate.entered.acquire(timeout=0.2)
        assert len(t._driver.broker.queues["t"].messages) == 1
    finally:
        gate.release.set()
        srv.stop()
        t.cleanup()


def test_restart_after_stop_and_redundant_start():
    t = make_transport()

    class Ep:
        def ping(self, ctxt):
            return "pong"

    srv = fastrpc.get_rpc_server(t, Target(topic="t", server="s"), [Ep()])
    c = fastrpc.get_rpc_client(t, Target(topic="t"), timeout=WAIT)
    try:
        srv.start()
        srv.start()  # ignored
        assert c.call({}, "ping") == "pong"
        srv.stop()
        srv.wait()
        srv.start()
        assert c.call({}, "ping") == "pong"
        srv.reset()
    finally:
        srv.stop()
        srv.wait()
        t.cleanup()


class RecordingIncoming(fastrpc.drivers.IncomingMessage):
    def __init__(self, events, message, msg_id="x"):
        super().__init__({}, message, msg_id)
        self.events = events

    def acknowledge(self):
        self.events.append("ack")

    def requeue(self):
        self.events.append("requeue")

    def reply(self, reply=None, failure=None):
        self.events.append(("reply", reply, type(failure).__name__ if failure else None))

    def heartbeat(self):
        self.events.append("heartbeat")


def test_acknowledge_before_dispatch_then_reply():
    events = []

    class Ep:
        def m(self, ctxt):
            events.append("dispatch")
            return 1

        def bad(self, ctxt):
            events.append("dispatch")
            raise RuntimeError("x")

    t = make_transport()
    try:
        srv = fastrpc.get_rpc_server(t, Target(topic="t", server="s"), [Ep()])
        assert isinstance(srv, RPCServer)
        srv._process_incoming(RecordingIncoming(events, {"method": "m", "args": {}}))
        assert events == ["ack", "dispatch", ("reply", 1, None)]
        events.clear()
        srv._process_incoming(RecordingIncoming(events, {"method": "bad", "args": {}}))
        assert events == ["ack", "dispatch", ("reply", None, "RuntimeError")]
        events.clear()
        srv._process_incoming(RecordingIncoming(events, {"method": "missing", "args": {}}))
        assert events == ["ack", ("reply", None, "NoSuchMethod")]
    finally:
        t.cleanup()


def test_message_its_listener_settles_is_not_acknowledged_again():
    # settled_by_listener: acknowledge() would be a no-op, the server skips it.
    events = []

    class Settled(RecordingIncoming):
        settled_by_listener = True

    class Ep:
        def m(self, ctxt):
            events.append("dispatch")
            return 2

    t = make_transport()
    try:
        srv = fastrpc.get_rpc_server(t, Target(topic="t", server="s"), [Ep()])
        srv._process_incoming(Settled(events, {"method": "m", "args": {}}))
        assert events == ["dispatch", ("reply", 2, None)]
    finally:
        t.cleanup()


def test_failed_acknowledge_skips_processing():
    events = []

    class NoAck(RecordingIncoming):
        def acknowledge(self):
            raise OSError("channel gone")

    class Ep:
        def m(self, ctxt):
            events.append("dispatch")

    t = make_transport()
    try:
        srv = fastrpc.get_rpc_server(t, Target(topic="t", server="s"), [Ep()])
        srv._process_incoming(NoAck(events, {"method": "m", "args": {}}))
        assert events == []
    finally:
        t.cleanup()


def test_requeue_returns_message_to_queue():
    t = make_transport()
    listener = t._listen(Target(topic="t", server="s"))
    try:
        fastrpc.get_rpc_client(t, Target(topic="t")).cast({}, "m", n=1)
        (first,) = listener.poll(timeout=WAIT)
        assert listener.poll(timeout=0.05) == []
        first.requeue()
        (again,) = listener.poll(timeout=WAIT)
        assert again.message == {"method": "m", "args": {"n": 1}}
        assert again.msg_id is None
        again.acknowledge()
        again.reply("ignored for casts")
        again.heartbeat()
        listener.stop()
        assert listener.poll(timeout=WAIT) == []
    finally:
        listener.cleanup()
        t.cleanup()


def test_batch_poll_and_fanout_queue_removed_on_cleanup():
    t = make_transport()
    listener = t._listen(Target(topic="t", server="s"))
    broker = t._driver.broker
    fanout_queues = [n for n in broker.queues if n.startswith("t_fanout_")]
    assert len(fanout_queues) == 1
    c = fastrpc.get_rpc_client(t, Target(topic="t"))
    for i in range(5):
        c.cast({}, "m", i=i)
    batch = listener.poll(timeout=WAIT, batch_size=3)
    assert [m.message["args"]["i"] for m in batch] == [0, 1, 2]
    listener.cleanup()
    assert fanout_queues[0] not in broker.queues
    t.cleanup()
