"""fastrpc.amqp.sync, both builds: Lock behaves as threading.Lock and
Mailbox as queue.SimpleQueue (the pure build is those two, so every test
here is also a check of the compiled build against them): exclusion, waits
that time out, argument errors, a signal that interrupts a wait, items in
order and none lost between threads. And the connection takes these types."""

from __future__ import annotations

import importlib
import queue
import threading
import time
import tracemalloc
import weakref
from types import ModuleType

import pytest
from signals import Interrupted, raise_interrupted, sigusr1_storm

from fastrpc import _impl
from fastrpc.amqp import connection_core

pytestmark = pytest.mark.twins

BUILDS = ["fastrpc.amqp.sync_py"] + ([] if _impl.NO_EXTENSIONS else ["fastrpc._ext.sync"])
WAIT = 10.0  # bound on any wait that should end at once


@pytest.fixture(params=BUILDS)
def build(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


# --- Lock -------------------------------------------------------------------


def test_a_lock_is_held_by_one_at_a_time(build: ModuleType) -> None:
    lock = build.Lock()
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(False) is False
    assert lock.acquire(True, 0) is False
    lock.release()
    assert not lock.locked()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


def test_a_timed_acquire_gives_up_after_its_timeout(build: ModuleType) -> None:
    lock = build.Lock()
    lock.acquire()
    start = time.monotonic()
    assert lock.acquire(True, 0.1) is False
    assert 0.09 <= time.monotonic() - start < WAIT
    assert lock.acquire(timeout=0.01) is False


def test_another_thread_releases_a_lock_a_waiter_then_takes(build: ModuleType) -> None:
    lock = build.Lock()
    lock.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(True, WAIT)))
    waiter.start()
    lock.release()  # from this thread, as threading.Lock allows
    waiter.join(WAIT)
    assert got == [True]
    assert lock.locked()


def test_a_lock_excludes_other_threads(build: ModuleType) -> None:
    lock = build.Lock()
    counter = [0]

    def bump() -> None:
        for _ in range(2000):
            with lock:
                value = counter[0]
                time.sleep(0)  # let others run: without the lock, updates would be lost
                counter[0] = value + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert counter[0] == 8000


def test_a_lock_refuses_what_threading_lock_refuses(build: ModuleType) -> None:
    lock = build.Lock()
    with pytest.raises(ValueError):
        lock.acquire(False, 1.0)
    with pytest.raises(ValueError):
        lock.acquire(True, -2)
    with pytest.raises(OverflowError):
        lock.acquire(True, 1e30)
    with pytest.raises(TypeError):
        lock.acquire(True, None)
    with pytest.raises(ValueError):
        lock.acquire(True, float("nan"))
    with pytest.raises(TypeError):
        lock.acquire(None)  # blocking is an int
    assert not lock.locked()


def test_a_condition_works_on_a_lock(build: ModuleType) -> None:
    # The connection waits for its flusher through a Condition on its send lock.
    cond = threading.Condition(build.Lock())
    ready: list[int] = []

    def notify() -> None:
        with cond:
            ready.append(1)
            cond.notify_all()

    with cond:
        threading.Thread(target=notify).start()
        assert cond.wait_for(lambda: ready, WAIT)
    with pytest.raises(RuntimeError):
        cond.notify()  # not held


def test_a_signal_handler_that_raises_ends_a_lock_wait(build: ModuleType) -> None:
    lock = build.Lock()
    lock.acquire()
    with sigusr1_storm(raise_interrupted), pytest.raises(Interrupted):
        lock.acquire(True, WAIT)
    assert lock.locked()  # still the first holder's
    lock.release()
    assert lock.acquire(False) is True


def test_a_lock_wait_goes_on_after_a_signal_handler_returns(build: ModuleType) -> None:
    calls: list[int] = []
    lock = build.Lock()
    lock.acquire()
    start = time.monotonic()
    with sigusr1_storm(lambda signum, frame: calls.append(signum)):
        assert lock.acquire(True, 0.3) is False  # the timeout holds across the interruptions
    assert 0.29 <= time.monotonic() - start < WAIT
    assert calls, "the handler never ran during the wait"


# --- Mailbox ----------------------------------------------------------------


def test_a_mailbox_gives_items_in_order(build: ModuleType) -> None:
    box = build.Mailbox()
    assert box.empty() and box.qsize() == 0
    box.put(1)
    box.put(2)
    assert not box.empty() and box.qsize() == 2
    assert box.get() == 1
    box.put_nowait(3)
    assert box.get_nowait() == 2
    assert box.get(True, 1.0) == 3
    assert box.empty()
    for i in range(100):  # refilled after it emptied, many times
        box.put(i)
        box.put(None)
        assert box.get(False) == i
        assert box.get(timeout=1.0) is None


def test_an_empty_mailbox_raises_queue_empty(build: ModuleType) -> None:
    box = build.Mailbox()
    with pytest.raises(queue.Empty):
        box.get_nowait()
    with pytest.raises(queue.Empty):
        box.get(False)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        box.get(True, 0.1)
    assert 0.09 <= time.monotonic() - start < WAIT
    with pytest.raises(queue.Empty):
        box.get(timeout=0)


def test_a_mailbox_refuses_what_simplequeue_refuses(build: ModuleType) -> None:
    box = build.Mailbox()
    box.put(1)
    with pytest.raises(ValueError):
        box.get(True, -1)
    with pytest.raises(TypeError):
        box.get(True, "soon")
    with pytest.raises(ValueError):
        box.get(True, float("nan"))
    with pytest.raises(OverflowError):
        box.get(True, 1e30)
    assert box.get() == 1  # still there


def test_a_put_from_another_thread_wakes_a_waiting_get(build: ModuleType) -> None:
    box = build.Mailbox()
    started = threading.Event()

    def put_later() -> None:
        started.wait(WAIT)
        box.put("reply")

    threading.Thread(target=put_later).start()
    started.set()
    assert box.get(True, WAIT) == "reply"
    assert box.empty()


def test_no_item_is_lost_or_doubled_between_threads(build: ModuleType) -> None:
    box = build.Mailbox()
    producers, per_producer, consumers = 4, 2000, 3
    taken: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
    end = object()

    def produce(p: int) -> None:
        for i in range(per_producer):
            box.put((p, i))

    def consume(c: int) -> None:
        while True:
            item = box.get(True, WAIT)
            if item is end:
                return
            taken[c].append(item)

    workers = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    feeders = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in workers + feeders:
        t.start()
    for t in feeders:
        t.join(WAIT * 3)
    for _ in range(consumers):
        box.put(end)
    for t in workers:
        t.join(WAIT * 3)
    everything = sorted(item for items in taken for item in items)
    assert everything == [(p, i) for p in range(producers) for i in range(per_producer)]
    for items in taken:  # each producer's items in the order it put them
        for p in range(producers):
            mine = [i for q, i in items if q == p]
            assert mine == sorted(mine)


def test_a_signal_handler_that_raises_ends_a_mailbox_wait(build: ModuleType) -> None:
    box = build.Mailbox()
    with sigusr1_storm(raise_interrupted), pytest.raises(Interrupted):
        box.get(True, WAIT)
    box.put("after")  # still usable
    assert box.get(True, WAIT) == "after"


def test_a_mailbox_is_subscriptable_as_simplequeue_is(build: ModuleType) -> None:
    assert build.Mailbox[int] is not None


def test_a_mailbox_that_never_empties_does_not_grow(build: ModuleType) -> None:
    box = build.Mailbox()
    box.put(-1)  # the reader stays an item behind: the mailbox is never empty
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200_000):
            box.put(i)
            assert box.get_nowait() == i - 1
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert box.qsize() == 1
    assert grown < 100_000  # 8 bytes per item ever put if the taken slots stayed


def test_locks_and_mailboxes_take_weak_references(build: ModuleType) -> None:
    lock, box = build.Lock(), build.Mailbox()
    assert weakref.ref(lock)() is lock
    assert weakref.ref(box)() is box


# --- in the connection --------------------------------------------------------


def test_the_connection_waits_on_a_mailbox_only() -> None:
    conn = connection_core.ConnectionCore.__new__(connection_core.ConnectionCore)
    with pytest.raises(TypeError):
        conn.wait_for(None, 0.1)  # compiled: refused before any typed call
    with pytest.raises(TypeError):
        conn.done_waiting(None)
    if not _impl.NO_EXTENSIONS:
        with pytest.raises(TypeError):
            conn.wait_for(queue.SimpleQueue(), 0.1)  # the mailbox's methods are called directly
