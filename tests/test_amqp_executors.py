"""RPC server executors over the AMQP driver, against a real broker.

``blocking`` runs each request in the listener connection's reader thread
(``AmqpListener.dispatch_inline``); ``threading`` runs up to
``executor_thread_pool_size`` workers that poll the listener.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from endpoints import Gate

import fastrpc
import fastrpc.amqp.connection as connection_module
from fastrpc import Options, Target
from fastrpc import server as server_module
from fastrpc.amqp.channel import Channel
from fastrpc.amqp.connection import Connection
from fastrpc.drivers import amqp
from fastrpc.drivers.amqp import consumer as consumer_mod
from fastrpc.drivers.amqp import handoff
from fastrpc.server import RPCServer

pytestmark = pytest.mark.twins

WAIT = 10.0  # bound of every wait in this file
CALL_TIMEOUT = 20.0  # client-side bound of every call


def transport_url(broker) -> str:
    return broker.url.replace("amqp://", "fastrpc://", 1)


@pytest.fixture
def topic() -> str:
    return f"exec_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def transports(broker) -> Iterator[Callable[..., fastrpc.RPCTransport]]:
    made: list[fastrpc.RPCTransport] = []

    def make(**options) -> fastrpc.RPCTransport:
        t = fastrpc.get_rpc_transport(Options(**options), url=transport_url(broker))
        made.append(t)
        return t

    yield make
    for t in made:
        t.cleanup()


@pytest.fixture
def servers() -> Iterator[list[RPCServer]]:
    """Servers a test started; each still running at the end is stopped (bounded)."""
    made: list[RPCServer] = []
    yield made
    for srv in made:
        srv.stop()
        stop_and_wait(srv)


def stop_and_wait(srv: RPCServer) -> None:
    """stop() then wait(), failing instead of hanging when wait() does not return."""
    srv.stop()
    done = threading.Event()

    def run() -> None:
        srv.wait()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(WAIT), "wait() did not return after stop()"


def client_for(transport, topic: str, server: str = "s1", timeout: float = CALL_TIMEOUT):
    return fastrpc.get_rpc_client(transport, Target(topic=topic, server=server), timeout=timeout)


def queue_depth(broker, name: str) -> int:
    conn = Connection(broker.url)
    conn.connect()
    try:
        _name, count, _consumers = conn.channel().queue_declare(name, passive=True)
        return count
    finally:
        conn.close()


def wait_queue_depth(broker, name: str, expected: int) -> None:
    """Poll the broker (bounded in count and time) until ``name`` holds ``expected`` messages."""
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    depth = -1
    for _ in range(200):
        depth = queue_depth(broker, name)
        if depth == expected or time.monotonic() >= deadline:
            break
        pause.wait(0.05)
    assert depth == expected


class Recorder:
    """Records every call's argument and thread; signals once ``expected`` arrived."""

    def __init__(self, expected: int = 0) -> None:
        self.lock = threading.Lock()
        self.seen: list[int] = []
        self.threads: list[str] = []
        self.expected = expected
        self.all_done = threading.Event()

    def record(self, ctxt, i):
        with self.lock:
            self.seen.append(i)
            self.threads.append(threading.current_thread().name)
            if len(self.seen) >= self.expected:
                self.all_done.set()
        return i

    def ping(self, ctxt):
        return "pong"


# ---- blocking executor ---------------------------------------------------------


def test_blocking_backlog_cast_before_start_is_handled_in_order(broker, transports, servers, topic):
    server_t, client_t = transports(), transports()
    count = 25
    rec = Recorder(expected=count)
    srv = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [rec], executor="blocking")
    # A first run declares the (durable-less but not auto-deleted) queues.
    srv.start()
    stop_and_wait(srv)

    client = client_for(client_t, topic)
    for i in range(count):
        client.cast({}, "record", i=i)
    # All of them wait on the broker before the server starts again.
    wait_queue_depth(broker, f"{topic}.s1", count)
    assert rec.seen == []

    servers.append(srv)
    srv.start()
    assert rec.all_done.wait(WAIT)
    assert rec.seen == list(range(count))
    # And the server goes on serving once the backlog is done.
    assert client.call({}, "record", i=count) == count
    assert rec.seen == list(range(count + 1))
    wait_queue_depth(broker, f"{topic}.s1", 0)


def test_blocking_runs_one_request_at_a_time_in_the_reader_thread(transports, servers, topic):
    server_t, client_t = transports(), transports()
    lock = threading.Lock()
    state = {"running": 0, "peak": 0}
    threads: list[str] = []
    overlap = threading.Event()

    class Endpoint:
        def work(self, ctxt, i):
            with lock:
                state["running"] += 1
                state["peak"] = max(state["peak"], state["running"])
                threads.append(threading.current_thread().name)
                if state["running"] > 1:
                    overlap.set()
            try:
                # Give any concurrent request time to enter: returns at once
                # if one does, else after this bounded wait.
                overlap.wait(0.2)
                return i
            finally:
                with lock:
                    state["running"] -= 1

    srv = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [Endpoint()],
                                 executor="blocking")
    servers.append(srv)
    srv.start()
    client = client_for(client_t, topic)
    callers = 5
    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(client.call, {}, "work", i=i) for i in range(callers)]
        results = sorted(f.result(timeout=CALL_TIMEOUT + WAIT) for f in futures)
    assert results == list(range(callers))
    assert state["peak"] == 1
    assert not overlap.is_set()
    assert len(threads) == callers
    assert all(name.startswith("fastrpc-reader") for name in threads), threads
    # Always the same thread: the one connection's reader.
    assert len(set(threads)) == 1


def test_blocking_stop_during_request_runs_what_was_acked_and_leaves_the_rest_queued(
        broker, transports, servers, topic):
    server_t, client_t = transports(), transports()
    gate = Gate()
    srv = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [gate], executor="blocking")
    srv.start()
    client = client_for(client_t, topic)
    try:
        for i in range(3):
            client.cast({}, "work", i=i)
        assert gate.entered.acquire(timeout=WAIT)
        assert gate.calls == [0]

        srv.stop()
        returned = threading.Event()

        def waiter() -> None:
            srv.wait()
            returned.set()

        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        # The request still runs: wait() must not have returned.
        assert not returned.wait(0.5)
        assert gate.running == 1
        gate.release.set()
        assert returned.wait(WAIT)
        thread.join(WAIT)
        assert gate.running == 0
        # Requests acked together with the running one (same read) ran too,
        # in order; the ones not yet taken were left to the broker.
        ran = list(gate.calls)
        assert ran == list(range(len(ran)))
    finally:
        gate.release.set()
        stop_and_wait(srv)
    # Another server gets exactly the rest: nothing lost, nothing run twice.
    rest = Gate()
    rest.release.set()
    srv2 = fastrpc.get_rpc_server(transports(), Target(topic=topic, server="s1"), [rest], executor="blocking")
    servers.append(srv2)
    srv2.start()
    for _ in range(3 - len(ran)):
        assert rest.entered.acquire(timeout=WAIT)
    assert sorted(ran + rest.calls) == [0, 1, 2]
    assert not rest.entered.acquire(timeout=0.5)


@pytest.mark.parametrize("executor", ["blocking", "threading"])
def test_restart_after_stop_and_wait(transports, servers, topic, executor):
    server_t, client_t = transports(), transports()
    rec = Recorder()
    srv = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [rec], executor=executor)
    servers.append(srv)
    client = client_for(client_t, topic)
    for run in range(3):
        srv.start()
        assert client.call({}, "record", i=run) == run
        stop_and_wait(srv)
        assert srv.listener is None
    # Stopped: a call is not answered.
    with pytest.raises(fastrpc.MessagingTimeout):
        client_for(client_t, topic, timeout=1.0).call({}, "ping")
    srv.start()
    assert client.call({}, "ping") == "pong"
    assert rec.seen == [0, 1, 2]


# ---- threading executor ----------------------------------------------------------


def test_threading_pool_size_bounds_concurrency(transports, servers, topic):
    server_t = transports(executor_thread_pool_size=3)
    client_t = transports()
    gate = Gate()
    srv = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [gate], executor="threading")
    servers.append(srv)
    srv.start()
    client = client_for(client_t, topic)
    calls = 8
    try:
        with ThreadPoolExecutor(calls) as pool:
            futures = [pool.submit(client.call, {}, "work", i=i) for i in range(calls)]
            for _ in range(3):
                assert gate.entered.acquire(timeout=WAIT)
            # The pool is full: no fourth request starts while these run.
            assert not gate.entered.acquire(timeout=0.5)
            assert gate.running == 3
            gate.release.set()
            results = sorted(f.result(timeout=CALL_TIMEOUT + WAIT) for f in futures)
    finally:
        gate.release.set()
    assert results == list(range(calls))
    assert gate.peak == 3
    assert sorted(gate.calls) == list(range(calls))
    assert gate.threads <= {f"fastrpc-worker_{n}" for n in range(3)}, gate.threads


class Rendezvous:
    """Endpoint whose calls each wait until ``parties`` of them run at once
    (a handler blocked on I/O); the wait fails after ``WAIT`` seconds."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=WAIT)
        self.lock = threading.Lock()
        self.threads: list[str] = []
        self.passed = threading.Semaphore(0)

    def meet(self, ctxt, i):
        self.barrier.wait()  # BrokenBarrierError unless all the others arrive
        with self.lock:
            self.threads.append(threading.current_thread().name)
        self.passed.release()
        return i


def calls_that_meet(client, size: int) -> list[int]:
    """``size`` concurrent calls of Rendezvous.meet: their results, in order."""
    with ThreadPoolExecutor(size) as pool:
        futures = [pool.submit(client.call, {}, "meet", i=i) for i in range(size)]
        return sorted(f.result(timeout=CALL_TIMEOUT + WAIT) for f in futures)


def started_threading_server(transports, servers, topic, endpoint, size):
    """A threading server of ``endpoint`` with a pool of ``size``, started."""
    srv = fastrpc.get_rpc_server(transports(executor_thread_pool_size=size), Target(topic=topic, server="s1"),
                                 [endpoint], executor="threading")
    servers.append(srv)
    srv.start()
    return srv


@pytest.mark.parametrize("size", [2, 16])
def test_threading_handlers_blocked_on_io_get_the_whole_pool(transports, servers, topic, size):
    # Each call waits until all the others run beside it: the pool must grow
    # to its full size while its workers are blocked.
    endpoint = Rendezvous(size)
    srv = started_threading_server(transports, servers, topic, endpoint, size)
    client = client_for(transports(), topic)
    assert calls_that_meet(client, size) == list(range(size))
    assert sorted(endpoint.threads) == sorted(f"fastrpc-worker_{n}" for n in range(size))
    grower = srv._grower
    assert grower is not None
    stop_and_wait(srv)
    assert not grower.is_alive()


def start_on_a_backlog(transports, servers, topic, endpoint, method, count, pool_size=8):
    """A threading server of ``endpoint`` started once ``count`` casts of
    ``method(i=...)`` wait in its queue (declared by a first start and stop)."""
    client_t = transports()
    srv = started_threading_server(transports, servers, topic, endpoint, pool_size)
    srv.stop()
    stop_and_wait(srv)  # the queues exist now; nothing consumes them
    client = client_for(client_t, topic)
    for i in range(count):
        client.cast({}, method, i=i)
    srv.start()
    return srv


def test_threading_backlog_of_blocked_casts_gets_the_whole_pool(transports, servers, topic):
    # Casts queued before the server starts, whose handlers block in turn:
    # the workers are all busy from the first message on.
    size = 8
    endpoint = Rendezvous(size)
    srv = start_on_a_backlog(transports, servers, topic, endpoint, "meet", 2 * size, size)
    for _ in range(2 * size):
        assert endpoint.passed.acquire(timeout=WAIT)
    assert len(srv._workers) == size
    assert set(endpoint.threads) == {f"fastrpc-worker_{n}" for n in range(size)}


def test_threading_casts_handled_at_once_do_not_grow_the_pool(monkeypatch, transports, servers, topic):
    # The pool grows only once its workers have all been busy for a while
    # (_GROW_AFTER): never within this test. Taking a message while no other
    # worker waits is no reason by itself (it is, for every message of a backlog).
    monkeypatch.setattr(server_module, "_GROW_AFTER", 3600.0)
    count = 300
    recorder = Recorder(expected=count)
    srv = start_on_a_backlog(transports, servers, topic, recorder, "record", count)
    assert recorder.all_done.wait(WAIT)
    assert sorted(recorder.seen) == list(range(count))
    assert set(recorder.threads) == {"fastrpc-worker_0"}
    assert len(srv._workers) == 1


class Sleeper(Recorder):
    """A handler that waits ``seconds`` (time.sleep) before recording its call."""

    def __init__(self, expected: int, seconds: float) -> None:
        super().__init__(expected)
        self.seconds = seconds

    def nap(self, ctxt, i):
        time.sleep(self.seconds)
        return self.record(ctxt, i)


def run_on_one_worker(transports, servers, topic, endpoint, method, count):
    """A backlog of ``count`` casts of ``method`` all run, on one worker only."""
    srv = start_on_a_backlog(transports, servers, topic, endpoint, method, count)
    assert endpoint.all_done.wait(WAIT)
    assert sorted(endpoint.seen) == list(range(count))
    assert len(srv._workers) == 1 and set(endpoint.threads) == {"fastrpc-worker_0"}
    stop_and_wait(srv)


def sleepers_grow_the_pool(transports, servers, topic, count, seconds):
    """A backlog of ``count`` casts whose handlers sleep ``seconds`` all run, on more than one worker."""
    waiting = Sleeper(expected=count, seconds=seconds)
    srv = start_on_a_backlog(transports, servers, f"{topic}-waiting", waiting, "nap", count)
    assert waiting.all_done.wait(WAIT)
    assert sorted(waiting.seen) == list(range(count))
    assert len(srv._workers) > 1


def test_threading_workers_busy_running_do_not_grow_the_pool(monkeypatch, transports, servers, topic):
    # Every worker is busy for the whole backlog; with the process's CPU time
    # going as fast as the clock (workers running, not waiting: under the GIL
    # another thread would only share the same CPU) the pool does not grow.
    # The same handlers with the real CPU clock (they sleep) get more workers.
    monkeypatch.setattr(server_module, "_process_cpu", time.monotonic)
    run_on_one_worker(transports, servers, topic, Sleeper(expected=30, seconds=0.02), "nap", 30)
    monkeypatch.undo()
    sleepers_grow_the_pool(transports, servers, topic, 30, 0.02)


class Spinner(Recorder):
    """A handler that keeps its worker running for ``seconds`` (a bounded busy loop)."""

    def __init__(self, expected: int, seconds: float) -> None:
        super().__init__(expected)
        self.seconds = seconds

    def spin(self, ctxt, i):
        until = time.perf_counter() + self.seconds
        while time.perf_counter() < until:
            pass
        return self.record(ctxt, i)


def test_threading_short_handlers_do_not_grow_the_pool_whatever_the_cpu_clock_says(monkeypatch, transports,
                                                                                    servers, topic):
    # A process whose CPU time does not advance (its threads waiting for the
    # GIL, or for a CPU the broker uses) looks like one whose handlers wait
    # on I/O. Workers busy with handlers shorter than _SHORT_HANDLER each
    # do not grow the pool all the same; handlers that take longer each
    # (they sleep) do, with the same clock.
    monkeypatch.setattr(server_module, "_process_cpu", lambda: 0.0)
    # Far from both handlers' times; a window of 50 ms, so that a worker
    # stalled for a few ms on a loaded host still takes messages in each.
    monkeypatch.setattr(server_module, "_SHORT_HANDLER", 0.05)
    monkeypatch.setattr(server_module, "_GROW_AFTER", 0.05)
    run_on_one_worker(transports, servers, topic, Spinner(expected=200, seconds=0.001), "spin", 200)
    sleepers_grow_the_pool(transports, servers, topic, 16, 0.1)


def test_threading_idle_workers_end_down_to_one_and_the_pool_grows_again(monkeypatch, transports, servers,
                                                                          topic):
    # Handlers blocked on I/O grow the pool to its size; once the workers'
    # polls have found nothing for _IDLE_EXIT, all but one end. A second such
    # burst gets the whole pool again (the grower still starts workers).
    # The idle time leaves the test 1.5 s to look at the grown pool.
    monkeypatch.setattr(server_module, "_IDLE_EXIT", 1.5)
    monkeypatch.setattr(server_module, "_POLL_TIMEOUT", 0.1)
    size = 4
    endpoint = Rendezvous(size)
    srv = started_threading_server(transports, servers, topic, endpoint, size)
    client = client_for(transports(), topic)
    assert calls_that_meet(client, size) == list(range(size))
    first = list(srv._workers)
    assert len(first) == size
    deadline = time.monotonic() + WAIT
    while sum(t.is_alive() for t in first) > 1 and time.monotonic() < deadline:
        for t in first:
            t.join(timeout=0.05)
    assert sum(t.is_alive() for t in first) == 1
    assert srv._workers == [t for t in first if t.is_alive()]
    assert srv._grower is not None and srv._grower.is_alive()

    endpoint.barrier = threading.Barrier(size, timeout=WAIT)
    assert calls_that_meet(client, size) == list(range(size))
    assert len(srv._workers) == size
    names = [t.name for t in srv._workers]
    assert len(set(names)) == size, names  # the new workers do not reuse the names of those that ended
    stop_and_wait(srv)
    assert not any(t.is_alive() for t in first)


def test_threading_worker_does_not_end_idle_while_the_others_are_busy(monkeypatch, transports, servers, topic):
    # One handler blocks for longer than the idle time; the worker started
    # beside it is the only one polling, so it stays, and answers a call that
    # comes meanwhile (had it ended, the call would wait for the blocked one).
    monkeypatch.setattr(server_module, "_IDLE_EXIT", 0.2)
    monkeypatch.setattr(server_module, "_POLL_TIMEOUT", 0.05)
    gate = Gate()
    srv = started_threading_server(transports, servers, topic, gate, 4)
    client = client_for(transports(), topic, timeout=WAIT)
    try:
        client.cast({}, "work", i=1)
        assert gate.entered.acquire(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while len(srv._workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the grower starts a second worker 5 ms after the first got busy
        assert len(srv._workers) >= 2
        time.sleep(1.0)  # five idle times: one worker beside the blocked one polls all along
        assert len(srv._workers) == 2
        assert client.call({}, "ping") == "pong"
    finally:
        gate.release.set()
    assert gate.calls == [1]


def test_threading_last_worker_does_not_end_idle(monkeypatch, transports, servers, topic):
    monkeypatch.setattr(server_module, "_IDLE_EXIT", 0.1)
    monkeypatch.setattr(server_module, "_POLL_TIMEOUT", 0.05)
    recorder = Recorder(expected=1)
    srv = started_threading_server(transports, servers, topic, recorder, 4)
    (worker,) = srv._workers
    worker.join(timeout=1.0)  # ten idle exits' worth: it must still be there
    assert worker.is_alive() and srv._workers == [worker]
    assert client_for(transports(), topic).call({}, "record", i=7) == 7
    assert recorder.threads == [worker.name]


# ---- nested calls and heartbeats ------------------------------------------------------


def test_blocking_endpoint_calls_another_server_through_same_transport(transports, servers, topic):
    server_t, client_t = transports(), transports()
    inner_topic = f"{topic}_inner"

    class Inner:
        def add(self, ctxt, a, b):
            return a + b

    class Outer:
        def relay(self, ctxt, a, b):
            # The same transport the server listens with.
            inner = client_for(server_t, inner_topic, server="s2", timeout=WAIT)
            return {"sum": inner.call({}, "add", a=a, b=b), "thread": threading.current_thread().name}

    inner = fastrpc.get_rpc_server(server_t, Target(topic=inner_topic, server="s2"), [Inner()],
                                   executor="blocking")
    outer = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [Outer()],
                                   executor="blocking")
    servers.extend([inner, outer])
    inner.start()
    outer.start()
    client = client_for(client_t, topic, timeout=WAIT + 5)
    for n in range(3):
        reply = client.call({}, "relay", a=n, b=40)
        assert reply["sum"] == n + 40
        assert reply["thread"].startswith("fastrpc-reader")


def test_blocking_long_request_outlives_heartbeat_limit(transports, servers, topic):
    heartbeat = 2
    server_t = transports(heartbeat_timeout_threshold=heartbeat)
    client_t = transports()
    # Longer than the connection's silence limit (two heartbeat intervals).
    busy_for = 2 * heartbeat + 1.5

    class Slow:
        def slow(self, ctxt):
            began = time.monotonic()
            # The request's own work: a fixed duration, nothing sets this.
            threading.Event().wait(busy_for)
            return {"ran": time.monotonic() - began, "thread": threading.current_thread().name}

        def ping(self, ctxt):
            return "pong"

    srv = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [Slow()], executor="blocking")
    servers.append(srv)
    srv.start()
    listener = srv.listener
    assert listener is not None
    conn = listener._conn
    assert conn is not None and conn.heartbeat == heartbeat

    client = client_for(client_t, topic, timeout=busy_for + WAIT)
    reply = client.call({}, "slow")
    assert reply["ran"] >= busy_for
    assert reply["thread"].startswith("fastrpc-reader")
    # The same connection, alive, and no reconnect happened meanwhile.
    assert listener._conn is conn
    assert conn.is_open
    assert listener.reconnects == 0
    assert client.call({}, "ping") == "pong"
    assert listener._conn is conn and listener.reconnects == 0


def test_blocking_request_delivered_while_start_installs_inline_handler(monkeypatch, transports, servers,
                                                                        topic):
    """A delivery that races server.start() is still handled.

    The reader thread's delivery callback reads the inline handler, finds none
    yet, and queues the delivery for the handler's backlog drain. Here start()
    installs the handler exactly between that read and the queueing (a thread
    switch that can happen on its own); the request must still be run.
    """
    server_t, client_t = transports(), transports()
    rec = Recorder(expected=2)
    target = Target(topic=topic, server="s1")
    srv = fastrpc.get_rpc_server(server_t, target, [rec], executor="blocking")
    srv.start()  # declares the queues
    stop_and_wait(srv)
    client = client_for(client_t, topic)

    in_put = threading.Event()
    installed = threading.Event()
    original_inline = amqp.AmqpListener.dispatch_inline

    class PausingHandoff(handoff.Handoff):
        # A subclass, as the compiled Handoff's methods cannot be replaced.
        def put(self, item):
            if item is not handoff.STOP and threading.current_thread().name.startswith("fastrpc-reader") \
                    and not installed.is_set():
                in_put.set()
                installed.wait(WAIT)
            super().put(item)

    def dispatch_inline(self, handler):
        try:
            client.cast({}, "record", i=0)
            assert in_put.wait(WAIT), "the request was not delivered before the handler was installed"
            original_inline(self, handler)
        finally:
            installed.set()

    monkeypatch.setattr(consumer_mod, "Handoff", PausingHandoff)
    monkeypatch.setattr(amqp.AmqpListener, "dispatch_inline", dispatch_inline)
    servers.append(srv)
    srv.start()
    assert installed.is_set()
    client.cast({}, "record", i=1)
    assert rec.all_done.wait(WAIT), f"handled only {rec.seen}"
    assert rec.seen == [0, 1]


# ---- one ack for the requests of one read ----------------------------------------


class HoldFirst:
    """Holds request 0 until released (requests pile up meanwhile), records the rest."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[int] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        self.done = threading.Semaphore(0)

    def work(self, ctxt, i):
        if i == 0:
            self.holding.set()
            assert self.release.wait(WAIT)
        with self.lock:
            self.seen.append(i)
        self.done.release()


@pytest.mark.parametrize("executor", ["blocking", "threading"])
def test_requests_that_piled_up_are_acked_together_and_run_once(
        monkeypatch, broker, transports, servers, topic, executor):
    count = 60
    acks: list[tuple[int, bool]] = []
    last_acked = threading.Event()  # the ack of the call made after the casts

    class RecordingChannel(Channel):
        def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
            acks.append((delivery_tag, multiple))
            super().basic_ack(delivery_tag, multiple)
            if delivery_tag > count:
                last_acked.set()

    # Channels are made by the connection module: a subclass there records
    # (the compiled Channel's own methods cannot be replaced).
    monkeypatch.setattr(connection_module, "Channel", RecordingChannel)
    endpoint = HoldFirst()
    server_t = transports(executor_thread_pool_size=2)
    srv = fastrpc.get_rpc_server(server_t, Target(topic=topic, server="s1"), [endpoint], executor=executor)
    servers.append(srv)
    srv.start()
    client = client_for(transports(), topic)
    client.cast({}, "work", i=0)
    assert endpoint.holding.wait(WAIT)
    for i in range(1, count):
        client.cast({}, "work", i=i)
    if executor == "blocking":
        # All of them wait in the broker or our socket while the reader thread runs request 0.
        wait_queue_depth(broker, topic, 0)
    endpoint.release.set()
    for _ in range(count):
        assert endpoint.done.acquire(timeout=WAIT)
    assert sorted(endpoint.seen) == list(range(count))
    if executor == "blocking":
        assert endpoint.seen == list(range(count))  # one at a time, in order
    listener = srv.listener
    assert isinstance(listener, amqp.AmqpListener)
    # Every ack was accepted: a wrong one (a tag acked twice) would have
    # closed the channel and made the listener reconnect.
    assert listener.reconnects == 0 and listener._channel.is_open
    assert client.prepare(timeout=CALL_TIMEOUT).call({}, "work", i=count) is None
    # The blocking executor acks a request read alone after its reply went
    # out: the call may return first.
    assert last_acked.wait(WAIT)
    # Acks never go beyond what was taken, each tag settled once.
    settled: set[int] = set()
    for tag, multiple in acks:
        covered = set(range(1, tag + 1)) - settled if multiple else {tag}
        assert covered and not covered & settled, acks
        settled |= covered
    assert settled == set(range(1, count + 2))
    if executor == "blocking":
        # The requests that piled up came in a few reads, each acked with one frame.
        assert len(acks) < count // 2, acks
        assert any(multiple for _, multiple in acks)


def test_threading_stop_runs_every_acked_request_and_leaves_the_rest_queued(
        broker, transports, servers, topic):
    gate = Gate()
    srv = fastrpc.get_rpc_server(transports(executor_thread_pool_size=2), Target(topic=topic, server="s1"),
                                 [gate], executor="threading")
    srv.start()
    client = client_for(transports(), topic)
    count = 30
    try:
        for i in range(count):
            client.cast({}, "work", i=i)
        assert gate.entered.acquire(timeout=WAIT)
        assert gate.entered.acquire(timeout=WAIT)
        srv.stop()
        gate.release.set()
    finally:
        gate.release.set()
        stop_and_wait(srv)
    ran = list(gate.calls)
    assert len(ran) == len(set(ran)) >= 2
    rest = Gate()
    rest.release.set()
    srv2 = fastrpc.get_rpc_server(transports(), Target(topic=topic, server="s1"), [rest], executor="threading")
    servers.append(srv2)
    srv2.start()
    for _ in range(count - len(ran)):
        assert rest.entered.acquire(timeout=WAIT), (ran, rest.calls)
    # Nothing lost, nothing run twice.
    assert sorted(ran + rest.calls) == list(range(count)), (ran, rest.calls)
    assert not rest.entered.acquire(timeout=0.5)


@pytest.mark.parametrize("executor", ["blocking", "threading"])
def test_malformed_request_among_piled_up_ones_is_rejected_alone(broker, transports, servers, topic, executor):
    endpoint = HoldFirst()
    srv = fastrpc.get_rpc_server(transports(executor_thread_pool_size=1), Target(topic=topic, server="s1"),
                                 [endpoint], executor=executor)
    servers.append(srv)
    srv.start()
    client = client_for(transports(), topic)
    client.cast({}, "work", i=0)
    assert endpoint.holding.wait(WAIT)
    raw = Connection(broker.url)
    raw.connect()
    try:
        ch = raw.channel()
        for i in range(1, 21):
            client.cast({}, "work", i=i)
            if i % 5 == 0:
                ch.basic_publish("openstack", f"{topic}.s1", b"not json",
                                 {"content_type": "application/json"})
    finally:
        raw.close()
    # Everything is in our socket or our queue before request 0 ends.
    wait_queue_depth(broker, f"{topic}.s1", 0)
    endpoint.release.set()
    for _ in range(21):
        assert endpoint.done.acquire(timeout=WAIT)
    assert sorted(endpoint.seen) == list(range(21))
    listener = srv.listener
    assert isinstance(listener, amqp.AmqpListener)
    # The last one came after request 20, maybe in a read a poller takes
    # after request 20 ran: counted within a bounded wait.
    deadline = time.monotonic() + WAIT
    while listener.bad_messages < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.bad_messages == 4
    assert listener.reconnects == 0 and listener._channel.is_open
    # Still serving.
    assert client.prepare(timeout=CALL_TIMEOUT).call({}, "work", i=21) is None
    assert endpoint.done.acquire(timeout=WAIT) and endpoint.seen[-1] == 21
    # Every delivery was settled: closing the channel requeues nothing.
    stop_and_wait(srv)
    assert queue_depth(broker, f"{topic}.s1") == 0


@pytest.mark.parametrize("executor", ["blocking", "threading"])
def test_listener_reconnects_when_the_broker_closes_its_channel(transports, servers, topic, executor):
    rec = Recorder(expected=1)
    srv = fastrpc.get_rpc_server(transports(), Target(topic=topic, server="s1"), [rec], executor=executor)
    servers.append(srv)
    srv.start()
    client = client_for(transports(), topic)
    assert client.call({}, "ping") == "pong"
    listener = srv.listener
    assert isinstance(listener, amqp.AmqpListener)
    old = listener._channel
    # An ack of a tag the broker never delivered: it closes the channel
    # (PRECONDITION_FAILED) and leaves the connection open.
    old.basic_ack(10_000)
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    while listener.reconnects < 1 and time.monotonic() < deadline:
        pause.wait(0.05)
    assert listener.reconnects == 1
    assert not old.is_open
    assert client.call({}, "record", i=7) == 7
    assert rec.seen == [7]


@pytest.mark.parametrize("executor", ["blocking", "threading"])
def test_when_a_request_is_acked_relative_to_its_run_and_reply(monkeypatch, transports, servers, topic, executor):
    """blocking: after the reply, as oslo's blocking executor acks at its next
    poll (the ack's send is off the caller's wait); threading: before the
    request runs, as oslo's poller acks while workers run."""
    events: list[str] = []

    class RecordingChannel(Channel):
        def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
            events.append("ack")
            super().basic_ack(delivery_tag, multiple)

        def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False, immediate=False,
                          blocked_until=None):
            if exchange == "" and routing_key.startswith("reply_"):
                events.append("reply")
            return super().basic_publish(exchange, routing_key, body, properties, mandatory, immediate,
                                         blocked_until)

    class Recording:
        def work(self, ctxt, i):
            events.append("run")
            return i

    client = client_for(transports(), topic)
    with pytest.raises(fastrpc.MessagingTimeout):  # connects the client before channels are recorded
        client.prepare(timeout=0.2).call({}, "nobody_serves_this_yet")
    monkeypatch.setattr(connection_module, "Channel", RecordingChannel)
    srv = fastrpc.get_rpc_server(transports(), Target(topic=topic, server="s1"), [Recording()], executor=executor)
    servers.append(srv)
    srv.start()
    for i in range(3):
        assert client.call({}, "work", i=i) == i
        deadline = time.monotonic() + WAIT
        pause = threading.Event()
        while len(events) < 3 * (i + 1) and time.monotonic() < deadline:
            pause.wait(0.01)  # the ack may follow the reply the caller already has
        expected = ["run", "reply", "ack"] if executor == "blocking" else ["ack", "run", "reply"]
        assert events[3 * i:] == expected, events


def test_blocking_request_redelivered_after_running_unacked_is_not_run_again(transports, servers, topic):
    """The connection drops while a request runs (not acked yet): the broker
    delivers it again, and the listener drops it by its _unique_id instead
    of running it twice; the caller still gets its reply."""
    gate = Gate()
    srv = fastrpc.get_rpc_server(transports(), Target(topic=topic, server="s1"), [gate], executor="blocking")
    servers.append(srv)
    srv.start()
    client = client_for(transports(), topic)
    listener = srv.listener
    assert isinstance(listener, amqp.AmqpListener)
    answer: list[int] = []
    caller = threading.Thread(target=lambda: answer.append(client.call({}, "work", i=1)), daemon=True)
    caller.start()
    assert gate.entered.acquire(timeout=WAIT)
    # Cut the listener's connection under the running request: the broker
    # requeues it. The reader thread runs the request, so the listener sees
    # the loss (and reconnects) once it is done.
    conn = listener._conn
    assert conn is not None and conn._transport is not None
    conn._transport.sock.shutdown(socket.SHUT_RDWR)
    gate.release.set()
    caller.join(WAIT)
    assert answer == [1]
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    while listener.duplicates < 1 and time.monotonic() < deadline:
        pause.wait(0.05)
    assert listener.duplicates == 1 and listener.reconnects >= 1
    assert gate.calls == [1]  # ran once
    assert client.call({}, "work", i=2) == 2 and gate.calls == [1, 2]


def test_listener_polled_refuses_inline_dispatch(transports, topic):
    # Once polled, reads go to the pollers without the inline lock: running
    # them inline as well is refused instead of racing.
    listener = transports()._listen(Target(topic=topic, server="s1"), 1, None)
    try:
        assert listener.poll(timeout=0) == []
        with pytest.raises(RuntimeError):
            listener.dispatch_inline(lambda msg: None)
    finally:
        listener.cleanup()
