"""``fastrpc bench``: RPC scenarios measured against a broker.

The server runs in a process of its own (``python -m fastrpc.benchmark
--serve``), so client and server do not share an interpreter, as in a real
deployment; the client runs in this process. Scenarios:

* ``sequential``: one caller, one call after another;
* ``concurrent-N``: N threads calling through one client;
* ``casts``: casts end to end, from the first cast published until the
  server has dispatched the last one.

Each scenario runs in ``--rounds`` rounds of ``--seconds`` split between them,
and the table shows the median rate over the rounds, with the latency
percentiles of all calls. Against a private RabbitMQ node started for the run
(as ``fastrpc demo``), or ``--url``. The comparisons with oslo.messaging, aio-pika
and a C client live in the source tree's ``bench/`` (they need those installed).

Exit status: 0 done, 1 a scenario failed (a wrong answer, a timeout, a server
that would not start), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from fastrpc.argtypes import positive, positive_int
from fastrpc.console import Progress, render_table
from fastrpc.demo import DemoFailure, PhaseResult, demo_broker, rpc_url, timed_loop

SCENARIOS = ("sequential", "concurrent-16", "casts")
EXECUTORS = ("threading", "blocking")
CALL_TIMEOUT = 30.0
READY_TIMEOUT = 60.0
PROBE_TIMEOUT = 5.0
# Casts may run ahead of the server by this many before the client waits for it
# (a call queued behind them): the rate is what the server sustains.
CAST_WINDOW = 2000
TABLE_KEYS = ("scenario", "ops/s", "p50 ms", "p99 ms", "rounds", "note")
HEADERS = {"ops/s": "Ops/s", "p50 ms": "p50 ms", "p99 ms": "p99 ms"}


class BenchEndpoint:
    """What the benchmark server answers."""

    def __init__(self) -> None:
        self._hits = 0
        self._cond = threading.Condition()

    def echo(self, ctxt: Any, payload: str) -> str:
        return payload

    def hit(self, ctxt: Any, i: int) -> None:
        with self._cond:
            self._hits += 1
            self._cond.notify_all()

    def hits(self, ctxt: Any) -> int:
        with self._cond:
            return self._hits

    def wait_hits(self, ctxt: Any, n: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._hits >= n, timeout=timeout)
            return self._hits


def serve(url: str, topic: str, executor: str) -> int:
    """The server side: answers until standard input closes."""
    import fastrpc

    try:
        transport = fastrpc.get_rpc_transport(url=url)
        server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic=topic, server="bench"), [BenchEndpoint()],
                                        executor=executor)
        server.start()
    except Exception as exc:  # said in one line; fastrpc's errors never hold the password
        print(f"fastrpc bench server: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        print("ready", flush=True)
        sys.stdin.read()  # the parent closes it to stop us
    finally:
        server.stop()
        server.wait()
        transport.cleanup()
    return 0


class ServerProcess:
    """The benchmark server in its own process, stopped by closing its stdin."""

    def __init__(self, url: str, topic: str, executor: str) -> None:
        cmd = [sys.executable, "-m", "fastrpc.benchmark", "--serve", "--topic", topic, "--executor", executor]
        env = dict(os.environ, FASTRPC_BENCH_URL=url)  # not on the command line: it may hold a password
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.kill()  # it may be stuck waiting for the broker: no graceful stop
            raise DemoFailure(f"the benchmark server did not start within {READY_TIMEOUT:g} s "
                              f"(exit status {self.proc.returncode})")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _threads(scenario: str) -> int:
    if scenario == "sequential":
        return 1
    prefix, _, count = scenario.partition("-")
    if prefix != "concurrent" or not count.isdigit() or int(count) < 1:
        raise ValueError(scenario)
    return int(count)


def cast_round(client: Any, seconds: float) -> PhaseResult:
    """Cast for ``seconds``, then wait until the server has dispatched them all."""
    start_hits = client.call({}, "hits")
    with Progress("casts", seconds) as progress:
        t0 = time.monotonic()
        n = 0
        while n % 100 or time.monotonic() - t0 < seconds:
            client.cast({}, "hit", i=n)
            n += 1
            if n % CAST_WINDOW == 0:
                progress.update(n)
                client.call({}, "hits")  # queued behind the casts: the server has caught up
        # The server gives up before the call does: a short count, not a timeout.
        got = client.call({}, "wait_hits", n=start_hits + n, timeout=CALL_TIMEOUT - 5)
        elapsed = time.monotonic() - t0
        progress.done(n)
    if got - start_hits != n:
        raise DemoFailure(f"casts: the server dispatched {got - start_hits} of {n}")
    return PhaseResult("casts", n, elapsed)


def probe_broker(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail at once, with the address, when no host of ``url`` accepts a TCP
    connection (the server would wait for the broker instead)."""
    from fastrpc.transport_url import TransportURL

    errors = []
    for host in TransportURL.parse(None, url).hosts or []:
        address = (host.hostname or "localhost", host.port or 5672)
        try:
            socket.create_connection(address, timeout=timeout).close()
            return
        except OSError as exc:
            errors.append(f"{address[0]}:{address[1]}: {exc.strerror or exc}")
    raise DemoFailure("no broker answers: " + ("; ".join(errors) or "the URL names no host"))


def run(url: str, scenarios: Sequence[str], seconds: float, rounds: int, executor: str,
        payload_bytes: int) -> list[dict[str, Any]]:
    """Every scenario, ``rounds`` times; one row per scenario."""
    import fastrpc

    topic = f"bench_{uuid.uuid4().hex[:8]}"
    probe_broker(url)
    transport = fastrpc.get_rpc_transport(url=url)
    server: ServerProcess | None = None
    rows = []
    try:
        server = ServerProcess(url, topic, executor)
        client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic=topic), timeout=CALL_TIMEOUT)
        payload = "x" * payload_bytes
        if client.call({}, "echo", payload=payload) != payload:
            raise DemoFailure("echo returned something else")

        def call(i: int) -> None:
            if client.call({}, "echo", payload=payload) != payload:
                raise DemoFailure("echo returned something else")

        per_round = seconds / rounds
        for scenario in scenarios:
            results = [cast_round(client, per_round) if scenario == "casts"
                       else timed_loop(f"{scenario} {r + 1}/{rounds}", per_round, _threads(scenario), call)
                       for r in range(rounds)]
            everything = PhaseResult(scenario, 0, 0.0, [x for res in results for x in res.latencies])
            p50, p99 = everything.percentile_ms(0.5), everything.percentile_ms(0.99)
            rows.append({"scenario": scenario, "ops/s": round(statistics.median(r.rate for r in results)),
                         "p50 ms": None if p50 != p50 else round(p50, 3),
                         "p99 ms": None if p99 != p99 else round(p99, 3), "rounds": rounds,
                         "note": "end to end" if scenario == "casts" else f"{_threads(scenario)} caller(s)"})
    finally:
        transport.cleanup()
        if server is not None:
            server.stop()
    return rows


def _scenarios(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name != "casts":
            try:
                _threads(name)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"unknown scenario {name!r} (sequential, concurrent-N, casts)") from None
    if not names:
        raise argparse.ArgumentTypeError("no scenario given")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="use this broker instead of a private one (rabbit://... or amqp://...)")
    parser.add_argument("--scenarios", type=_scenarios, default=list(SCENARIOS), metavar="LIST",
                        help=f"comma-separated: sequential, concurrent-N, casts (default {','.join(SCENARIOS)})")
    parser.add_argument("--seconds", type=positive, default=6.0, metavar="SECONDS",
                        help="per scenario, split between the rounds (default 6)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="rounds per scenario (default 3)")
    parser.add_argument("--executor", choices=EXECUTORS, default="threading", help="the server's executor")
    parser.add_argument("--payload", type=positive_int, default=150, metavar="BYTES",
                        help="size of the echoed string (default 150)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def run_command(args: argparse.Namespace) -> int:
    """``fastrpc bench`` with parsed arguments."""
    try:
        with demo_broker(args.url) as url:
            rows = run(rpc_url(url), args.scenarios, args.seconds, args.rounds, args.executor, args.payload)
    except Exception as exc:  # a failed scenario or broker: one line, the status says it
        print(f"fastrpc bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from fastrpc import _impl

        compiled = "yes" if _impl.compiled("fastrpc.amqp.codec") else "no"
        render_table(rows, TABLE_KEYS, sys.stdout, right=TABLE_KEYS[1:5], headers=HEADERS,
                     title=f"fastrpc bench: {args.executor} executor, {args.payload}-byte payload, "
                     f"compiled: {compiled}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastrpc.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(os.environ["FASTRPC_BENCH_URL"], args.topic, args.executor)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
