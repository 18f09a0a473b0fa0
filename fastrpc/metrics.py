"""What this process's fastrpc did, counted where it happens: calls, casts,
replies, timeouts, remote errors, reconnects, dropped and rejected messages,
call latency and handler duration, confirms outstanding, executor backlog.

Off by default. :func:`enable` turns it on for the whole process, as do the
``[fastrpc]`` options ``metrics`` and ``metrics_port`` (the latter also
serves the figures to Prometheus: :mod:`fastrpc.prometheus`, the
``fastrpc[metrics]`` extra). :func:`snapshot` reads everything at once.

Cost. The code that runs per message reads one module attribute, ``on``,
and does nothing more while it is false. When it is true a duration is
appended to a list, and an event adds one to a slot of a plain list
(``counts``), both without a lock: ``list.append`` is one C call, atomic
under the GIL; a thread switch happens only between bytecodes that may run
other code (calls, backward jumps), never inside ``counts[i] += 1`` on a
list of ints (no call, nothing that could start the garbage collector), so
no increment is lost (a free-threaded build could lose one under
contention; never a wrong value otherwise). Durations are put into the
fixed buckets of their histogram (``bisect`` on the sorted batch) only
when read, or once a thousand of them are waiting: sorting a batch in C
costs less per value than finding each value's bucket as it comes. Rare
events (reconnects, errors by class) go into labelled counters under a
lock. Gauges are read from their sources when read.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "enable", "disable", "enabled", "reset", "snapshot", "Snapshot", "HistogramSnapshot",
    "LATENCY_BUCKETS",
]

# Set by enable(); read by every hook as ``metrics.on``.
on = False

# Counter slots: indexes into ``counts``.
CASTS = 0  # casts the transport took
TIMEOUTS = 1  # calls that raised MessagingTimeout
LATE_REPLIES = 2  # replies whose caller had given up
DUPLICATES = 3  # requests and notifications dropped by their _unique_id
MALFORMED_REQUESTS = 4  # rejected by an RPC listener
MALFORMED_NOTIFICATIONS = 5  # rejected by a notification listener
MALFORMED_REPLIES = 6  # dropped by the reply queue's consumer
_SLOTS = 7

counts: list[int] = [0] * _SLOTS

# Upper bounds (seconds) of the latency buckets: fastrpc's calls take well
# under a millisecond on a quiet broker, a slow handler many seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
FOLD_AT = 1024  # durations waiting before they are put into buckets


class _Histogram:
    """Durations in seconds: appended by hooks, put into buckets by :meth:`fold`."""

    __slots__ = ("pending", "buckets", "sum")

    def __init__(self) -> None:
        self.pending: list[float] = []  # appended to by hooks, without a lock
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: past every bound
        self.sum = 0.0

    def fold(self) -> None:
        """Put the pending durations into buckets (``_lock`` held). Hooks
        append meanwhile: only the ones copied are deleted, from the front."""
        pending = self.pending
        n = len(pending)
        if not n:
            return
        batch = pending[:n]
        del pending[:n]
        batch.sort()
        below = 0
        buckets = self.buckets
        for i, bound in enumerate(LATENCY_BUCKETS):
            upto = bisect_right(batch, bound)
            buckets[i] += upto - below
            below = upto
        buckets[-1] += n - below
        self.sum += math.fsum(batch)

    def read(self) -> HistogramSnapshot:
        return HistogramSnapshot(LATENCY_BUCKETS, tuple(self.buckets), self.sum)

    def clear(self) -> None:
        self.pending.clear()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0


_lock = threading.Lock()  # folding, and the labelled counters below
_call_results = _Histogram()  # calls answered with a result
_call_remote_errors = _Histogram()  # calls answered with a remote exception
_handlers = _Histogram()  # RPC handlers run
_results_pending = _call_results.pending  # the one a call appends to (one global lookup)
_reconnects: dict[tuple[str, str], int] = {}  # (connection kind, reason) -> n
_client_errors: dict[tuple[str, str], int] = {}  # (call_type, exception class) -> n
_handler_errors: dict[str, int] = {}  # exception class -> n


class _PendingConfirms(Protocol):
    def pending_confirms(self) -> int: ...


class _Backlog(Protocol):
    def queued_messages(self) -> int: ...


# What the gauges are read from, when read: every sending connection owner
# and every listener alive (weakly held: they come and go with transports).
_senders: weakref.WeakSet[Any] = weakref.WeakSet()
_listeners: weakref.WeakSet[Any] = weakref.WeakSet()
_sources_lock = threading.Lock()


def enable() -> None:
    """Start counting, in the whole process (the counts so far are kept)."""
    global on
    on = True


def disable() -> None:
    """Stop counting (the counts so far are kept)."""
    global on
    on = False


def enabled() -> bool:
    return on


def reset() -> None:
    """Set every counter and histogram back to zero."""
    with _lock:
        for i in range(len(counts)):
            counts[i] = 0
        for hist in (_call_results, _call_remote_errors, _handlers):
            hist.clear()
        _reconnects.clear()
        _client_errors.clear()
        _handler_errors.clear()


def _fold() -> None:
    with _lock:
        for hist in (_call_results, _call_remote_errors, _handlers):
            hist.fold()


# -- hooks (called only while ``on``) --------------------------------------------


def call_answered(started: float) -> None:
    """A call got its result; ``started``: ``time.monotonic()`` when it began."""
    pending = _results_pending
    pending.append(time.monotonic() - started)
    if len(pending) >= FOLD_AT:
        _fold()


def remote_error(started: float, exc: BaseException) -> None:
    """A call, started at ``started``, got a remote exception (``exc``, as rebuilt) for reply."""
    pending = _call_remote_errors.pending
    pending.append(time.monotonic() - started)
    send_failed(True, exc)
    if len(pending) >= FOLD_AT:
        _fold()


def send_failed(call: bool, exc: BaseException) -> None:
    """A call or cast raised ``exc`` (a remote exception included)."""
    if call and _is_timeout(exc):
        counts[TIMEOUTS] += 1
    _labelled(_client_errors, ("call" if call else "cast", type(exc).__name__))


def handler_done(started: float, failure: BaseException | None) -> None:
    """An RPC server's handler, started at ``started`` (``time.monotonic()``), returned or raised ``failure``."""
    pending = _handlers.pending
    pending.append(time.monotonic() - started)
    if failure is not None:
        _labelled(_handler_errors, type(failure).__name__)
    if len(pending) >= FOLD_AT:
        _fold()


def reconnect(kind: str, reason: str) -> None:
    """A ``kind`` connection ("sending" or "listener") was lost for ``reason`` and is reconnected."""
    _labelled(_reconnects, (kind, reason))


def _labelled(table: dict[Any, int], key: Any) -> None:
    with _lock:
        table[key] = table.get(key, 0) + 1


def _is_timeout(exc: BaseException) -> bool:
    # By name: the class may be fastrpc's or oslo.messaging's.
    return any(cls.__name__ == "MessagingTimeout" for cls in type(exc).__mro__)


def track_sender(owner: _PendingConfirms) -> None:
    """Count ``owner.pending_confirms()`` in the confirms-outstanding gauge while it lives."""
    with _sources_lock:
        _senders.add(owner)


def track_listener(listener: _Backlog) -> None:
    """Count ``listener.queued_messages()`` in the executor-queue gauge while it lives."""
    with _sources_lock:
        _listeners.add(listener)


# -- reading ---------------------------------------------------------------------


@dataclass(frozen=True)
class HistogramSnapshot:
    """A histogram as read: ``bounds`` (seconds), per-bucket ``counts``
    (one more than the bounds: the last is past every bound) and ``sum``."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, count)."""
        result = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            result.append((bound, total))
        return result


@dataclass(frozen=True)
class Snapshot:
    """Every figure at one moment. Calls and handlers are counted when they end."""

    calls_answered: int  # result received
    remote_errors: int  # remote exception received
    timeouts: int
    casts: int  # taken by the transport
    late_replies: int
    duplicates: int
    malformed: dict[str, int]  # "request", "notification", "reply"
    reconnects: dict[tuple[str, str], int]  # (connection kind, reason)
    client_errors: dict[tuple[str, str], int]  # (call_type, exception class)
    handler_errors: dict[str, int]  # exception class
    confirms_outstanding: int
    executor_queue_depth: int
    call_seconds: HistogramSnapshot  # calls answered: a result or a remote exception
    handler_seconds: HistogramSnapshot
    enabled: bool = field(default=False)

    @property
    def replies(self) -> int:
        """Final replies received: results and remote exceptions."""
        return self.calls_answered + self.remote_errors

    @property
    def calls(self) -> int:
        """Calls that ended: with a result, or with an exception (remote or not)."""
        return self.calls_answered + sum(n for (kind, _name), n in self.client_errors.items() if kind == "call")

    @property
    def handlers(self) -> int:
        """Requests RPC servers ran."""
        return self.handler_seconds.count

    @property
    def reconnects_total(self) -> int:
        return sum(self.reconnects.values())


def _gauge(sources: weakref.WeakSet[Any], read: str) -> int:
    with _sources_lock:
        alive = list(sources)
    total = 0
    for source in alive:
        try:
            total += int(getattr(source, read)())
        except Exception:  # noqa: BLE001 - a source closing meanwhile counts as 0
            continue
    return total


def snapshot() -> Snapshot:
    """Read every counter, histogram and gauge."""
    with _lock:
        for hist in (_call_results, _call_remote_errors, _handlers):
            hist.fold()
        values = list(counts)
        results, remote = _call_results.read(), _call_remote_errors.read()
        handlers = _handlers.read()
        reconnects = dict(_reconnects)
        client_errors = dict(_client_errors)
        handler_errors = dict(_handler_errors)
    calls = HistogramSnapshot(LATENCY_BUCKETS, tuple(a + b for a, b in zip(results.counts, remote.counts,
                                                                            strict=True)),
                              results.sum + remote.sum)
    return Snapshot(
        calls_answered=results.count,
        remote_errors=remote.count,
        timeouts=values[TIMEOUTS],
        casts=values[CASTS],
        late_replies=values[LATE_REPLIES],
        duplicates=values[DUPLICATES],
        malformed={"request": values[MALFORMED_REQUESTS], "notification": values[MALFORMED_NOTIFICATIONS],
                   "reply": values[MALFORMED_REPLIES]},
        reconnects=reconnects,
        client_errors=client_errors,
        handler_errors=handler_errors,
        confirms_outstanding=_gauge(_senders, "pending_confirms"),
        executor_queue_depth=_gauge(_listeners, "queued_messages"),
        call_seconds=calls,
        handler_seconds=handlers,
        enabled=on,
    )
