"""Handing a listener's deliveries from the thread that reads its connection
to the threads that poll it.

Import this module as ``fastrpc.drivers.amqp.handoff``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.handoff`` (see fastrpc._impl); its C
layout is fastrpc/_ext/handoff.pxd, where the locks are fastrpc.amqp.sync's,
called directly: a put and a get each take two.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from fastrpc.amqp.sync import Lock

__all__ = ["EMPTY", "STOP", "Handoff"]

EMPTY = object()  # what a get returns when nothing came
STOP = object()  # put by stop(): each poller that meets it returns


class _Slot:
    """One poller blocked in :meth:`Handoff.get`: its own lock, its own item.

    Each thread keeps its slot for its next gets: between them the lock is
    held and the item is EMPTY.
    """

    __slots__ = ("lock", "item")

    def __init__(self) -> None:
        self.lock = Lock()
        self.lock.acquire()
        self.item: Any = EMPTY


class Handoff:
    """Deliveries from the reader thread to the threads polling a listener.

    A put hands the item straight to the most recently idle poller and wakes
    that one thread only. (A SimpleQueue with several blocked getters wakes a
    second getter for nothing on every item: a context switch and a GIL round
    trip per message.) Items nobody waits for queue up in order.
    """

    def __init__(self) -> None:
        self._lock = Lock()
        self._items: collections.deque[Any] = collections.deque()
        # Read-only for others: truthy while items wait (a test without a call).
        self.queued = self._items
        # A stack, the warmest thread first; a deque: a list that empties and
        # fills again per message frees and allocates its storage each time.
        self._waiting: collections.deque[_Slot] = collections.deque()
        self._slots = threading.local()  # each poller's _Slot

    # put() and get() run once per message: they take the lock with
    # acquire/release, half the instructions of a `with` block (which makes
    # and drops two bound methods each time).

    def put(self, item: Any) -> None:
        lock = self._lock
        if lock is None:  # compiled, the typed call below would not check
            raise TypeError("Handoff.__init__ was not run")
        lock.acquire()
        try:
            if self._waiting:
                slot = self._waiting.pop()
                slot.item = item
                slot.lock.release()
                return
            self._items.append(item)
        finally:
            lock.release()

    def put_front(self, items: list[Any], hand: bool = True) -> None:
        """Hand ``items`` to idle pollers (unless ``hand`` is false), or queue
        them in order ahead of the rest."""
        with self._lock:
            waiting = self._waiting
            i = 0
            while hand and waiting and i < len(items):
                slot = waiting.pop()
                slot.item = items[i]
                slot.lock.release()
                i += 1
            if i < len(items):
                self._items.extendleft(reversed(items[i:]))

    def pop_front_while(self, accept: Callable[[Any], bool]) -> list[Any]:
        """Take queued items from the front for as long as ``accept(item)`` says so."""
        taken = []
        with self._lock:
            items = self._items
            while items and accept(items[0]):
                taken.append(items.popleft())
        return taken

    def items(self) -> list[Any]:
        """A copy of the items waiting for a poller, in order."""
        with self._lock:
            return list(self._items)

    def pending(self) -> int:
        """How many items wait for a poller."""
        return len(self._items)

    def get_nowait(self) -> Any:
        """The next item, or ``EMPTY``."""
        with self._lock:
            return self._items.popleft() if self._items else EMPTY

    def get(self, timeout: float | None) -> Any:
        """The next item, waiting up to ``timeout`` seconds; ``EMPTY`` on timeout."""
        lock = self._lock
        if lock is None:  # compiled, the typed call below would not check
            raise TypeError("Handoff.__init__ was not run")
        lock.acquire()
        try:
            if self._items:
                return self._items.popleft()
            try:
                slot = self._slots.slot
            except AttributeError:
                slot = self._slots.slot = _Slot()
            self._waiting.append(slot)
        finally:
            lock.release()
        try:
            if slot.lock.acquire(True, -1 if timeout is None else timeout):
                # Handed over; the lock is held again, ready for the next get.
                item = slot.item
                slot.item = EMPTY
                return item
        except BaseException:
            # Interrupted: an item handed to us meanwhile goes back in front.
            with self._lock:
                if slot.item is EMPTY:
                    self._waiting.remove(slot)
                else:
                    self._items.appendleft(slot.item)
            self._slots.slot = _Slot()  # its lock's state is unknown now
            raise
        with self._lock:
            item = slot.item
            if item is EMPTY:
                self._waiting.remove(slot)
            else:
                # Handed over just as the wait timed out: the put released
                # the lock, take it back for the next get.
                slot.lock.acquire()
                slot.item = EMPTY
        return item
