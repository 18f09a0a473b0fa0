"""Measured phases, shared by ``fastrpc demo`` and ``fastrpc bench``: a
phase's result (count, time, latencies), a loop of callers timed against a
deadline, and the private broker both start when given no URL."""

from __future__ import annotations

import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastrpc.console import Progress

# How long a caller of timed_loop may run past the phase's end (a call's timeout and some).
CALL_TIMEOUT = 20


class DemoFailure(RuntimeError):
    """Something the demo or the bench checks did not hold."""


@dataclass
class PhaseResult:
    name: str
    ops: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        if not self.latencies:
            return math.nan
        values = sorted(self.latencies)
        return values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))] * 1e3


@contextmanager
def demo_broker(url: str | None) -> Iterator[str]:
    """``url``, else a private RabbitMQ node's for as long as the block runs."""
    if url:
        yield url
        return
    from fastrpc.testing import RabbitNode

    with tempfile.TemporaryDirectory(prefix="fastrpc-demo-") as workdir:
        print("starting a private RabbitMQ node ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        node = RabbitNode(workdir)
        try:
            print(f"node up on {node.host}:{node.port} in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
            yield node.url
        finally:
            node.stop()


def timed_loop(label: str, seconds: float, threads: int, op: Callable[[int], None]) -> PhaseResult:
    """Run ``op`` from ``threads`` threads until ``seconds`` have passed."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    counter = [0]
    lock = threading.Lock()
    with Progress(label, seconds) as progress:
        deadline = time.monotonic() + seconds

        def worker(idx: int) -> None:
            i = 0
            try:
                while time.monotonic() < deadline and not errors:
                    t0 = time.perf_counter()
                    op(idx * 1_000_000 + i)
                    latencies[idx].append(time.perf_counter() - t0)
                    i += 1
                    with lock:
                        counter[0] += 1
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
        t_start = time.monotonic()
        for t in pool:
            t.start()
        for t in pool:
            while t.is_alive():
                t.join(0.1)
                progress.update(counter[0])
                if time.monotonic() > deadline + CALL_TIMEOUT + 5:
                    raise DemoFailure(f"{label}: callers did not finish")
        elapsed = time.monotonic() - t_start
        progress.done(counter[0])
    if errors:
        raise DemoFailure(f"{label}: {errors[0]!r}") from errors[0]
    return PhaseResult(label, counter[0], elapsed, [x for lat in latencies for x in lat])


def rpc_url(url: str) -> str:
    return "rabbit" + url[url.index("://"):] if url.startswith("amqp") else url
