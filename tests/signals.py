"""SIGUSR1 sent to the main thread while a test waits there: for tests of
waits that a signal handler interrupts."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Interrupted(Exception):
    """What :func:`raise_interrupted` raises."""


def raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted


@contextlib.contextmanager
def sigusr1_storm(handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """Install ``handler`` for SIGUSR1 and send that signal to the main
    thread every 20 ms (at most 250 times) until the block ends; the old
    handler is put back after."""
    old = signal.signal(signal.SIGUSR1, handler)
    done = threading.Event()
    main = threading.main_thread().ident or 0

    def send() -> None:
        for _ in range(250):
            if done.wait(0.02):
                return
            signal.pthread_kill(main, signal.SIGUSR1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        done.set()
        sender.join(10.0)
        signal.signal(signal.SIGUSR1, old)
