"""The hand-off from a listener's reader thread to its pollers, both builds:
items in order, a waiting poller gets the next item, a get that times out
gets EMPTY, items handed back go in front, and an item handed to a poller
whose wait was interrupted is not lost."""

from __future__ import annotations

import importlib
import threading
import time
from types import ModuleType

import pytest
from signals import Interrupted, raise_interrupted, sigusr1_storm

from fastrpc import _impl

pytestmark = pytest.mark.twins

BUILDS = ["fastrpc.drivers.amqp.handoff_py"] + ([] if _impl.NO_EXTENSIONS else ["fastrpc._ext.handoff"])
WAIT = 10.0


@pytest.fixture(params=BUILDS)
def build(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def test_items_nobody_waits_for_queue_in_order(build: ModuleType) -> None:
    h = build.Handoff()
    assert h.get_nowait() is build.EMPTY and h.pending() == 0
    for i in range(5):
        h.put(i)
    assert h.pending() == 5 and h.queued
    assert h.items() == [0, 1, 2, 3, 4]
    assert h.get(0.0) == 0
    assert h.get_nowait() == 1
    h.put_front([10, 11])
    assert h.pop_front_while(lambda item: item >= 10) == [10, 11]
    assert [h.get(WAIT) for _ in range(3)] == [2, 3, 4]
    assert not h.queued


def test_a_get_that_times_out_gets_empty(build: ModuleType) -> None:
    h = build.Handoff()
    start = time.monotonic()
    assert h.get(0.1) is build.EMPTY
    assert 0.09 <= time.monotonic() - start < WAIT
    h.put("later")  # the timed-out poller's slot is not handed anything
    assert h.get(0.0) == "later"


def test_a_waiting_poller_gets_the_item_put(build: ModuleType) -> None:
    h = build.Handoff()
    got: list[object] = []
    pollers = [threading.Thread(target=lambda: got.append(h.get(WAIT))) for _ in range(3)]
    for t in pollers:
        t.start()
    deadline = time.monotonic() + WAIT
    while len(h._waiting) < 3 and time.monotonic() < deadline:  # all three blocked in get
        time.sleep(0.001)
    for i in range(3):
        h.put(i)
    for t in pollers:
        t.join(WAIT)
    assert sorted(got) == [0, 1, 2]  # each item to one poller, none lost
    assert not h.queued


def test_put_front_hands_items_to_waiting_pollers_first(build: ModuleType) -> None:
    h = build.Handoff()
    got: list[object] = []
    poller = threading.Thread(target=lambda: got.append(h.get(WAIT)))
    poller.start()
    deadline = time.monotonic() + WAIT
    while not h._waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    h.put("queued")  # to the waiting poller
    poller.join(WAIT)
    h.put("behind")
    h.put_front(["a", "b"], hand=False)
    assert got == ["queued"]
    assert h.items() == ["a", "b", "behind"]


def test_many_items_between_threads_none_lost(build: ModuleType) -> None:
    h = build.Handoff()
    n, pollers = 3000, 3
    got: list[list[int]] = [[] for _ in range(pollers)]
    stop = build.STOP

    def poll(k: int) -> None:
        while True:
            item = h.get(WAIT)
            if item is stop or item is build.EMPTY:
                return
            got[k].append(item)

    threads = [threading.Thread(target=poll, args=(k,)) for k in range(pollers)]
    for t in threads:
        t.start()
    for i in range(n):
        h.put(i)
    for _ in range(pollers):
        h.put(stop)
    for t in threads:
        t.join(WAIT * 3)
    assert sorted(i for items in got for i in items) == list(range(n))


def test_an_interrupted_get_leaves_nothing_behind(build: ModuleType) -> None:
    h = build.Handoff()
    with sigusr1_storm(raise_interrupted), pytest.raises(Interrupted):
        h.get(WAIT)
    assert not h._waiting  # no slot left to swallow the next item
    h.put("next")
    assert h.get(WAIT) == "next"


def test_a_handoff_whose_init_did_not_run_raises(build: ModuleType) -> None:
    # Compiled, its lock is a typed field (None until __init__ sets it) whose
    # methods are called directly: without a check that would crash.
    class Bare(build.Handoff):
        def __init__(self) -> None:
            pass

    with pytest.raises((TypeError, AttributeError)):
        Bare().put(1)
    with pytest.raises((TypeError, AttributeError)):
        Bare().get(0.01)
