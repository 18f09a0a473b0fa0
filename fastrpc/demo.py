"""fastrpc demo: ``python -m fastrpc.demo`` (what ``make demo`` runs).

Starts a private RabbitMQ node, two RPC servers with a few endpoints, and
clients doing calls, a burst of slow calls, casts and fanout casts, with a
progress bar on stderr and a summary table at the end. Every result is checked;
the exit status is non-zero when anything went wrong. About 20 seconds.

``--url amqp://...`` (or ``FASTRPC_DEMO_URL``) uses an existing broker instead;
``--raw`` shows the connection layer alone (publish and consume).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastrpc.console import Progress, render_table

DEFAULT_SECONDS = 6.0  # measured phases; the node start adds a few seconds
CALLER_THREADS = 4
SLOW_CALLS = 16
SLOW_SECONDS = 0.25
CALL_TIMEOUT = 20
# Casts may run ahead of the servers by at most this many undispatched deliveries,
# so the end-to-end rate is what the servers sustain and the phase stays short.
CAST_WINDOW = 2000


class DemoFailure(RuntimeError):
    """Something the demo checks did not hold."""


# -- presentation ------------------------------------------------------------------

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


SUMMARY_KEYS = ("phase", "ops", "ops/s", "p50 ms", "p99 ms", "note")


def summary_rows(results: list[PhaseResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        p50, p99 = r.percentile_ms(0.5), r.percentile_ms(0.99)
        rows.append({"phase": r.name, "ops": f"{r.ops:,d}", "ops/s": f"{r.rate:,.0f}",
                     "p50 ms": None if math.isnan(p50) else f"{p50:.2f}",
                     "p99 ms": None if math.isnan(p99) else f"{p99:.2f}", "note": r.note or None})
    return rows


def print_summary(results: list[PhaseResult], out: Any = None) -> None:
    render_table(summary_rows(results), SUMMARY_KEYS, out or sys.stdout, right=SUMMARY_KEYS[1:5],
                 headers={"ops/s": "Ops/s", "p50 ms": "p50 ms", "p99 ms": "p99 ms"})


# -- broker ------------------------------------------------------------------------

@contextmanager
def demo_broker(url: str | None) -> Iterator[str]:
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


# -- RPC demo ----------------------------------------------------------------------

class Tally:
    """Casts dispatched, per server, shared by the demo servers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.counts: dict[str, int] = {}

    def add(self, name: str) -> None:
        with self._cond:
            self.counts[name] = self.counts.get(name, 0) + 1
            self._cond.notify_all()

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return dict(self.counts)

    def wait(self, done: Callable[[dict[str, int]], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: done(self.counts), timeout=timeout)


class DemoEndpoint:
    """The demo servers' API."""

    def __init__(self, name: str, tally: Tally) -> None:
        self.name = name
        self.tally = tally

    def add(self, ctxt: Any, a: int, b: int) -> int:
        return a + b

    def echo(self, ctxt: Any, text: str) -> dict[str, str]:
        return {"text": text, "server": self.name}

    def slow(self, ctxt: Any, seconds: float) -> str:
        time.sleep(seconds)  # stands for real work; runs in an executor thread
        return self.name

    def record(self, ctxt: Any, n: int) -> None:
        self.tally.add(self.name)


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


def run_rpc_demo(url: str, seconds: float) -> list[PhaseResult]:
    import fastrpc

    transport = fastrpc.get_rpc_transport(url=rpc_url(url))
    topic = f"demo_{uuid.uuid4().hex[:8]}"
    tally = Tally()
    endpoints = [DemoEndpoint("demo-1", tally), DemoEndpoint("demo-2", tally)]
    servers = [fastrpc.get_rpc_server(transport, fastrpc.Target(topic=topic, server=ep.name), [ep],
                                      executor="threading") for ep in endpoints]
    for s in servers:
        s.start()
    results: list[PhaseResult] = []
    try:
        client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic=topic), timeout=CALL_TIMEOUT)
        if client.call({}, "add", a=2, b=40) != 42:
            raise DemoFailure("add(2, 40) did not return 42")

        def call_add(i: int) -> None:
            if client.call({}, "add", a=i, b=1) != i + 1:
                raise DemoFailure(f"add({i}, 1) returned a wrong sum")

        def call_echo(i: int) -> None:
            reply = client.call({}, "echo", text=f"hello {i}")
            if reply.get("text") != f"hello {i}" or reply.get("server") not in ("demo-1", "demo-2"):
                raise DemoFailure(f"echo returned {reply!r}")

        results.append(timed_loop("calls: add", seconds * 0.25, 1, call_add))
        res = timed_loop(f"calls: echo x{CALLER_THREADS}", seconds * 0.25, CALLER_THREADS, call_echo)
        res.note = f"{CALLER_THREADS} caller threads"
        results.append(res)
        results.append(_slow_phase(client))
        results.append(_cast_phase(client, tally, seconds * 0.25, fanout=False))
        results.append(_cast_phase(client.prepare(fanout=True), tally, seconds * 0.2, fanout=True))
    finally:
        for s in servers:
            s.stop()
        for s in servers:
            s.wait()
        transport.cleanup()
    return results


def rpc_url(url: str) -> str:
    return "rabbit" + url[url.index("://"):] if url.startswith("amqp") else url


def _slow_phase(client: Any) -> PhaseResult:
    """Many slow calls at once finish in about the time of one: the servers dispatch in threads."""
    out: list[Any] = [None] * SLOW_CALLS
    errors: list[BaseException] = []
    lat: list[float] = []

    def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            out[i] = client.call({}, "slow", seconds=SLOW_SECONDS)
            lat.append(time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)

    with Progress(f"calls: slow x{SLOW_CALLS}", SLOW_SECONDS * 2) as progress:
        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(SLOW_CALLS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CALL_TIMEOUT + 5)
            progress.update(len(lat))
        elapsed = time.monotonic() - t0
        progress.done(len(lat))
    if errors:
        raise DemoFailure(f"slow calls: {errors[0]!r}") from errors[0]
    if any(t.is_alive() for t in threads) or len(lat) != SLOW_CALLS:
        raise DemoFailure("slow calls did not all return")
    note = f"{SLOW_CALLS} x {SLOW_SECONDS}s of work in {elapsed:.2f}s; servers: {sorted(set(out))}"
    return PhaseResult(f"calls: slow x{SLOW_CALLS}", SLOW_CALLS, elapsed, lat, note)


def _cast_phase(client: Any, tally: Tally, seconds: float, fanout: bool) -> PhaseResult:
    label = "fanout casts" if fanout else "casts"
    names = ("demo-1", "demo-2")
    before = tally.snapshot()
    with Progress(label, seconds) as progress:
        t0 = time.monotonic()
        n = 0
        copies = len(names) if fanout else 1

        def new(counts: dict[str, int], name: str) -> int:
            return counts.get(name, 0) - before.get(name, 0)

        def behind(counts: dict[str, int]) -> int:
            return n * copies - sum(new(counts, nm) for nm in names)

        while n % 50 or time.monotonic() - t0 < seconds:
            client.cast({}, "record", n=n)
            n += 1
            if n % 50 == 0:
                progress.update(n)
                if behind(tally.snapshot()) > CAST_WINDOW and not tally.wait(
                        lambda c: behind(c) <= CAST_WINDOW // 2, CALL_TIMEOUT):
                    raise DemoFailure(f"{label}: servers stopped dispatching")

        # Done when the servers have dispatched every cast (fanout: each server all of them).
        if fanout:
            ok = tally.wait(lambda c: all(new(c, nm) >= n for nm in names), CALL_TIMEOUT)
            expected = n * len(names)
        else:
            ok = tally.wait(lambda c: sum(new(c, nm) for nm in names) >= n, CALL_TIMEOUT)
            expected = n
        elapsed = time.monotonic() - t0
        progress.done(n)
    after = tally.snapshot()
    delivered = sum(new(after, nm) for nm in names)
    if not ok or delivered != expected:
        raise DemoFailure(f"{label}: servers dispatched {delivered} of {expected}")
    if fanout:
        note = "end to end, each of 2 servers got every cast"
    else:
        note = "end to end, shared: " + ", ".join(f"{nm} {new(after, nm)}" for nm in names)
    return PhaseResult(label, n, elapsed, note=note)


# -- raw connection demo ------------------------------------------------------------

def run_raw_demo(url: str, seconds: float) -> list[PhaseResult]:
    from fastrpc.amqp.connection import Connection

    queue = f"demo.raw.{uuid.uuid4().hex[:8]}"
    body = b"x" * 200
    results = []
    with Connection(url) as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True)
        with Progress("publish", seconds / 2) as progress:
            batch = [("", queue, body, {"delivery_mode": 1})] * 64
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < seconds / 2:
                ch.publish_many(batch)
                n += len(batch)
                progress.update(n)
            ch.queue_declare(queue, durable=True)  # round trip: the broker has them all
            results.append(PhaseResult("publish", n, time.monotonic() - t0, note="200-byte messages, batched"))
            progress.done(n)

        got = [0]
        done = threading.Event()

        def on_message(delivery: Any) -> None:
            got[0] += 1
            if got[0] % 100 == 0 or got[0] == n:
                ch.basic_ack(delivery.delivery_tag, multiple=True)
            if got[0] == n:
                done.set()

        ch.basic_qos(prefetch_count=1000)
        with Progress("consume", seconds / 2) as progress:
            t0 = time.monotonic()
            ch.basic_consume(queue, on_message)
            while not done.wait(0.1):
                progress.update(got[0])
                if time.monotonic() - t0 > seconds + CALL_TIMEOUT:
                    raise DemoFailure(f"consumed {got[0]} of {n} messages")
            results.append(PhaseResult("consume", n, time.monotonic() - t0, note="prefetch 1000, acks every 100"))
            progress.done(got[0])
        ch.queue_delete(queue)
    return results


def run_services_demo(url: str, stream: Any = None) -> str:
    """Three services and a conductor on the broker, reporting every second
    through it into a throwaway SQLite registry; one is then stopped. Returns
    ``fastrpc service-list``'s table (also printed to ``stream``)."""
    import contextlib
    import io
    import tempfile

    from fastrpc import get_rpc_transport
    from fastrpc.cli import main as cli_main
    from fastrpc.service import Conductor, ConductorClient, Registry, Service

    class Compute:
        def ping(self, ctxt: Any) -> str:
            return "pong"

    with tempfile.TemporaryDirectory(prefix="fastrpc-demo-") as tmp:
        db = f"sqlite:///{tmp}/services.sqlite"
        transport = get_rpc_transport(url=rpc_url(url))
        conductor = Conductor(transport, "ctl-1", registry=db, report_interval=1, periodic_fuzzy_delay=0)
        services = [Service(transport, f"host-{i}", "fastrpc-compute", "compute", Compute(), report_interval=1,
                            periodic_fuzzy_delay=0, registry=ConductorClient(transport)) for i in (1, 2, 3)]
        try:
            conductor.start()
            for service in services:
                service.start()
            deadline = time.monotonic() + 30
            with Registry(db) as registry:
                while time.monotonic() < deadline and not all(
                        r.report_count >= 2 for r in registry.services(binary="fastrpc-compute")):
                    time.sleep(0.2)
            services[2].stop()  # a graceful stop: shown down at once
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                cli_main(["--db", db, "service-list"])
        finally:
            for service in services:
                service.stop()
            conductor.stop()
            transport.cleanup()
    table = out.getvalue()
    print("\nfastrpc service-list (three services reporting through a conductor, host-3 stopped):",
          file=stream or sys.stdout)
    print(table, file=stream or sys.stdout, end="")
    return table


def rpc_available() -> bool:
    try:
        import fastrpc
        import fastrpc.drivers.amqp  # noqa: F401
    except ImportError:
        return False
    return hasattr(fastrpc, "get_rpc_server")


def services_available() -> bool:
    """Whether the service registry can run (it needs SQLAlchemy)."""
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastrpc.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("FASTRPC_DEMO_URL"), help="use this broker (amqp://...)")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="time for the measured phases")
    p.add_argument("--raw", action="store_true", help="connection layer only: publish and consume")
    args = p.parse_args(argv)
    raw = args.raw or not rpc_available()
    t0 = time.monotonic()
    try:
        with demo_broker(args.url) as url:
            results = run_raw_demo(url, args.seconds) if raw else run_rpc_demo(url, args.seconds)
            if not raw and services_available():
                run_services_demo(url)
    except Exception as exc:
        print(f"\ndemo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    from fastrpc import _impl

    title = "fastrpc demo (connection layer)" if raw else "fastrpc demo (RPC over RabbitMQ)"
    print(f"\n{title}, compiled codec: {'yes' if _impl.compiled('fastrpc.amqp.codec') else 'no'}")
    print_summary(results)
    print(f"total {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
