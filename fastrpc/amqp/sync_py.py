"""Locks and mailboxes of the per-message paths: pure-Python build of
``fastrpc.amqp.sync``.

``Lock`` is ``threading.Lock`` and ``Mailbox`` a ``queue.SimpleQueue``. The
compiled build (ext/sync.pyx) has classes with the same methods whose calls
from compiled code are direct C calls: ``threading.Lock.acquire`` parses its
arguments with the general keyword parser on every call, a few hundred
instructions, and a connection takes such locks several times per message.
"""

from __future__ import annotations

import queue
import threading
from typing import TypeVar

__all__ = ["Lock", "Mailbox"]

Lock = threading.Lock

_T = TypeVar("_T")


class Mailbox(queue.SimpleQueue[_T]):
    """Items from one thread to another: ``queue.SimpleQueue`` itself."""
