"""Checks after a restore, while the cluster may still be forgetting a lost node.

When a node dies, the other nodes delete its queues and their bindings by
name a fraction of a second after they notice (RabbitMQ 3.10: some 0.1 to
0.3 s after a kill). A client that reconnects faster than that and declares
a queue again under its old name can see its new queue record or its
bindings deleted by that cleanup: the consumer stays, attached to a queue
nothing routes to, and every message sent to it is dropped or returned
with nobody told. So a listener (or the reply queue) that was restored
looks again a few times in the following seconds: declare and bind again
(idempotent), and check that the queue still has a consumer.
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


def recheck_later(name: str, check: Callable[[], bool], stopped: threading.Event) -> None:
    """Run ``check()`` at each of RECHECK_AT seconds from now, in a thread of
    its own named ``name``, until it returns False or ``stopped`` is set."""

    def run() -> None:
        start = time.monotonic()
        for at in RECHECK_AT:
            if stopped.wait(max(0.0, start + at - time.monotonic())) or not check():
                return

    threading.Thread(target=run, name=name, daemon=True).start()
