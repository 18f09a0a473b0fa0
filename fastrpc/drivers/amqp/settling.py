"""Checks after a restore, while the cluster may still be forgetting a lost node.

When a node dies, the other nodes delete its queues and their bindings by
name a fraction of a second after they notice (RabbitMQ 3.10: some 0.1 to
0.3 s after a kill). A client that reconnects faster than that and declares
a queue again under its old name can see its new queue record or its
bindings deleted by that cleanup: the consumer stays, attached to a queue
nothing routes to, and every message sent to it is dropped or returned
with nobody told. So a listener (or the reply queue) that was restored
looks again a few times in the following seconds (:class:`Rechecks`):
declare and bind again (idempotent), and check that the queue still has a
consumer.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# Seconds after a restore at which it is checked again (a check that returns
# False, its connection gone or restarted, ends the series).
RECHECK_AT = (0.5, 1.5, 4.0)
RECHECK_TIMEOUT = 5.0  # seconds one check's synchronous methods may take


class Rechecks:
    """The checks after the latest restore of one connection owner, in one
    thread at most: a restore schedules a series (``check()`` at each of
    RECHECK_AT seconds from then, until it returns False), and a newer
    restore replaces the series of the one before. One thread, not one per
    restore: an owner that reconnects often must not pile up sleepers."""

    def __init__(self, name: str, stopped: threading.Event) -> None:
        self._name = name  # the thread's
        self._stopped = stopped
        self._cond = threading.Condition()
        self._series: tuple[Callable[[], bool], float] | None = None
        self._running = False

    def schedule(self, check: Callable[[], bool]) -> None:
        with self._cond:
            self._series = (check, time.monotonic())
            self._cond.notify()
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                if self._series is None or self._stopped.is_set():
                    self._series = None
                    self._running = False
                    return
                check, start = self._series
                self._series = None
            for at in RECHECK_AT:
                with cond:
                    # Wakes early for a newer series; the owner's stop is
                    # seen at the next check time at the latest.
                    cond.wait_for(lambda: self._series is not None, max(0.0, start + at - time.monotonic()))
                    if self._series is not None or self._stopped.is_set():
                        break
                if not check():
                    break
