"""RPC scenarios: fastrpc against oslo.messaging (rabbit driver), aio-pika's RPC pattern and the C client.

One run, one broker. Scenarios:

* ``sequential``: one caller, calls with a ~150-byte payload, one after another
  (every contender; the C pair ``rpc-call`` against ``rpc-server`` twice:
  requests through the default exchange, and through a topic exchange as the
  RPC libraries route theirs; "vs C" and "vs C, topic exchange" compare with
  each);
* ``concurrent-16`` / ``concurrent-8``: that many callers at once. fastrpc and
  oslo.messaging: one client process whose threads call through one client
  (one connection, one reply queue) against one server process. aio-pika: one
  client process whose asyncio tasks call through one channel, against one
  server process. C, through the topic exchange: one ``rpc-callers`` process
  with that many threads, each with its own connection and reply queue
  (rabbitmq-c connections are not shared between threads), against one
  ``rpc-server`` process (single-threaded, one consumer, acking each request
  after its reply);
* ``casts``: casts end to end, from the first cast published until the server
  has received the last one. The libraries: one client process casting, one
  server process dispatching. C, through the topic exchange: one ``cast``
  process publishing, one ``cast-server`` process consuming (prefetch
  unlimited as fastrpc's listener, one ack per socket read of up to 16
  deliveries). aio-pika's RPC pattern has no cast: n/a.

Beside fastrpc's own API and oslo.messaging on its rabbit driver, a third
contender is oslo.messaging's API on fastrpc's driver (``fastrpc://`` URL,
client and server): what a service gets by changing its transport URL only.
aio-pika's ``patterns.JsonRPC`` (bench/aio_pika_rpc.py) is what a Python user
would pick instead of an oslo-style library.

Servers and clients each run in their own process, all started up front (each
library on its own topic) and kept running; the C clients run once per round.
Every scenario is measured in ``--rounds`` short rounds (``--seconds`` split
between them), and within a round the contenders run one after another, in
an order that alternates from round to round. A ratio is taken inside each
round, between runs seconds apart, and the table reports the median over the
rounds: on a shared machine whose speed drifts over minutes, that is what
stays comparable. Servers use the threading executor unless ``--executors``
names others for fastrpc (each gets its own rows). fastrpc's memory per
connection and per in-flight call are measured in a separate process with
tracemalloc (Python heap) and RSS deltas.

    python bench/rpc_scenarios.py [--seconds 5] [--rounds 5] [--json out.json] [--markdown]
        [--executors threading,blocking] [--scenarios sequential,casts] [--skip-aio-pika]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import aio_pika_rpc, common

PAYLOAD = "x" * 150
CALL_TIMEOUT = 30
READY_TIMEOUT = 60.0
MAX_CASTS = 200_000
MEMORY_CONNECTIONS = 20
MEMORY_CALLS = 400
# oslo-fastrpc: oslo.messaging's API, fastrpc:// driver; aio-pika: its patterns.JsonRPC (bench/aio_pika_rpc.py)
LIBS = ("fastrpc", "oslo", "oslo-fastrpc", "aio-pika")
AIO_PIKA = "aio-pika"


# -- library glue (runs in the server and client processes) ----------------------

def _quiet_logging() -> None:
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore", DeprecationWarning)


def make_transport(lib: str, url: str) -> tuple[Any, Any]:
    """(library module, transport) for fastrpc or oslo.messaging (on the driver the URL names)."""
    if lib.startswith("oslo"):
        import oslo_messaging as om
        from oslo_config import cfg

        # The global CONF, as services use it: oslo registers some options
        # (e.g. tracing) only there.
        cfg.CONF([], project="fastrpc-bench")
        return om, om.get_rpc_transport(cfg.CONF, url=url)
    import fastrpc

    return fastrpc, fastrpc.get_rpc_transport(url=url)


class BenchEndpoint:
    """What the benchmark servers expose."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._hits = 0
        self._first = 0.0
        self._last = 0.0
        # wait_hits' target: hit() wakes the waiter once it is reached, not
        # on every cast (that cost the threading executor a thread wake-up
        # per cast while the server worked through its backlog).
        self._want = sys.maxsize

    def echo(self, ctxt: Any, payload: str) -> str:
        return payload

    def reset(self, ctxt: Any) -> int:
        with self._cond:
            self._hits, self._first, self._last = 0, 0.0, 0.0
        return 0

    def hit(self, ctxt: Any, i: int) -> None:
        now = time.monotonic()
        with self._cond:
            self._hits += 1
            if self._hits == 1:
                self._first = now
            self._last = now
            if self._hits >= self._want:
                self._cond.notify_all()

    def wait_hits(self, ctxt: Any, n: int, timeout: float) -> dict[str, Any]:
        # CLOCK_MONOTONIC is system-wide on Linux, so the caller can compare times.
        with self._cond:
            self._want = n
            try:
                self._cond.wait_for(lambda: self._hits >= n, timeout=timeout)
            finally:
                self._want = sys.maxsize
            return {"hits": self._hits, "first": self._first, "last": self._last}


def serve(lib: str, url: str, topic: str, executor: str = "threading") -> int:
    """Run an RPC server until stdin closes."""
    _quiet_logging()
    mod, transport = make_transport(lib, url)
    target = mod.Target(topic=topic, server="bench-server")
    server = mod.get_rpc_server(transport, target, [BenchEndpoint()], executor=executor)
    server.start()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()  # the parent closes our stdin to stop us
    server.stop()
    server.wait()
    transport.cleanup()
    print(json.dumps({"stopped": True}), flush=True)
    return 0


def make_client(mod: Any, transport: Any, topic: str) -> Any:
    return mod.get_rpc_client(transport, mod.Target(topic=topic), timeout=CALL_TIMEOUT)


def open_client(lib: str, url: str, topic: str) -> tuple[Any, Any]:
    """(transport, client), warmed up: reply queue, connection pool, code paths."""
    mod, transport = make_transport(lib, url)
    client = make_client(mod, transport, topic)
    for _ in range(20):
        if client.call({}, "echo", payload=PAYLOAD) != PAYLOAD:
            raise common.BenchError("echo returned a different payload")
    return transport, client


def client_calls(client: Any, threads: int, seconds: float) -> dict[str, Any]:
    """``threads`` callers through one client for ``seconds``."""
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def caller(out: list[float]) -> None:
        try:
            start.wait(timeout=30)
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline[0]:
                    return
                if client.call({}, "echo", payload=PAYLOAD) != PAYLOAD:
                    raise common.BenchError("echo returned a different payload")
                out.append(time.perf_counter() - t0)
        except BaseException as exc:  # reported by the parent
            errors.append(exc)

    workers = [threading.Thread(target=caller, args=(per_thread[i],), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter() + seconds
    t_start = time.perf_counter()
    start.wait(timeout=30)
    for w in workers:
        w.join(timeout=seconds + CALL_TIMEOUT + 5)
    elapsed = time.perf_counter() - t_start
    if errors:
        raise common.BenchError(f"{len(errors)} caller(s) failed: {errors[0]!r}")
    if any(w.is_alive() for w in workers):
        raise common.BenchError("a caller thread did not finish")
    return common.latency_summary([x for lat in per_thread for x in lat], elapsed)


def client_casts(client: Any, seconds: float) -> dict[str, Any]:
    """Casts for ``seconds``, then wait until the server dispatched them all."""
    client.call({}, "reset")
    t_first = time.monotonic()
    n = 0
    publish_deadline = t_first + seconds
    while n < MAX_CASTS and (n % 100 or time.monotonic() < publish_deadline):
        client.cast({}, "hit", i=n)
        n += 1
    t_published = time.monotonic()
    wait_budget = max(30.0, 6 * seconds)
    got = client.prepare(timeout=wait_budget + 10).call({}, "wait_hits", n=n, timeout=wait_budget)
    if got["hits"] != n:
        raise common.BenchError(f"server dispatched {got['hits']} of {n} casts within {wait_budget:.0f} s")
    elapsed = got["last"] - t_first
    return {"n": n, "seconds": elapsed, "rate": n / elapsed, "publish_rate": n / (t_published - t_first)}


def client_loop(lib: str, url: str, topic: str, threads: int) -> int:
    """A client kept between rounds: one command per stdin line, one JSON line back.

    Commands: ``calls SECONDS`` and ``casts SECONDS``.
    """
    _quiet_logging()
    transport, client = open_client(lib, url, topic)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        what, seconds = line.split()
        if what == "calls":
            res = client_calls(client, threads, float(seconds))
        elif what == "casts":
            res = client_casts(client, float(seconds))
        else:
            raise common.BenchError(f"unknown command {what!r}")
        print(json.dumps(res), flush=True)
    transport.cleanup()
    return 0


def client_memory(url: str, topic: str) -> dict[str, Any]:
    """fastrpc's memory per connection and per in-flight call (this process only)."""
    import gc
    import tracemalloc

    import fastrpc
    from fastrpc.amqp.connection import Connection
    from fastrpc.drivers.topology import Topology

    _quiet_logging()
    result: dict[str, Any] = {}
    amqp_url = "amqp" + url[url.index("://"):]  # the connection layer speaks amqp:// only

    # Per connection: K connections with one channel each.
    tracemalloc.start()
    gc.collect()
    rss0, heap0 = common.rss_bytes(), tracemalloc.get_traced_memory()[0]
    conns = common.open_connections(Connection, amqp_url, MEMORY_CONNECTIONS)
    gc.collect()
    rss1, heap1 = common.rss_bytes(), tracemalloc.get_traced_memory()[0]
    result["connection_heap_bytes"] = (heap1 - heap0) / MEMORY_CONNECTIONS
    result["connection_rss_bytes"] = (rss1 - rss0) / MEMORY_CONNECTIONS
    for c in conns[1:]:
        c.close()
    probe = conns[0]

    # Per in-flight call: requests go to a queue with no consumer and wait there,
    # so every call stays in flight until we have measured.
    topo = Topology()
    ex, q = topo.topic_exchange(topo.control_exchange), topo.topic_queue(topic)
    ch = probe.channel()
    ch.exchange_declare(ex.name, ex.type, durable=ex.durable, auto_delete=ex.auto_delete)
    ch.queue_declare(q.name, durable=q.durable, auto_delete=q.auto_delete, arguments=q.arguments)
    ch.queue_bind(q.name, ex.name, topo.routing_key(topic))

    transport = fastrpc.get_rpc_transport(url=url)
    hold_timeout = 8
    client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic=topic), timeout=hold_timeout)
    go = threading.Event()
    outcomes: list[str] = []

    def caller() -> None:
        go.wait(30)
        try:
            client.call({}, "echo", payload=PAYLOAD)
            outcomes.append("answered")
        except Exception as exc:  # the expected end is a timeout
            outcomes.append(type(exc).__name__)

    # Warm up the reply path with one call that times out, like the others will.
    warm = fastrpc.get_rpc_client(transport, fastrpc.Target(topic=topic), timeout=1)
    try:
        warm.call({}, "echo", payload=PAYLOAD)
    except Exception:
        pass
    ch.queue_purge(q.name)
    threads = [threading.Thread(target=caller, daemon=True) for _ in range(MEMORY_CALLS)]
    for t in threads:
        t.start()
    gc.collect()
    rss0, heap0 = common.rss_bytes(), tracemalloc.get_traced_memory()[0]
    go.set()
    deadline = time.monotonic() + hold_timeout - 2
    depth = 0
    while time.monotonic() < deadline:  # broker state has no event to wait on: poll, bounded
        depth = ch.queue_declare(q.name, passive=True)[1]
        if depth >= MEMORY_CALLS:
            break
        time.sleep(0.02)
    if depth < MEMORY_CALLS:
        raise common.BenchError(f"only {depth} of {MEMORY_CALLS} calls reached the broker")
    gc.collect()
    rss1, heap1 = common.rss_bytes(), tracemalloc.get_traced_memory()[0]
    result["inflight_heap_bytes"] = (heap1 - heap0) / MEMORY_CALLS
    result["inflight_rss_bytes"] = (rss1 - rss0) / MEMORY_CALLS
    for t in threads:
        t.join(hold_timeout + 10)
    if len(outcomes) != MEMORY_CALLS or "answered" in outcomes:
        raise common.BenchError(f"unexpected in-flight call outcomes: {sorted(set(outcomes))}")
    ch.queue_delete(q.name)
    transport.cleanup()
    probe.close()
    tracemalloc.stop()
    result["connections"] = MEMORY_CONNECTIONS
    result["inflight_calls"] = MEMORY_CALLS
    return result


# -- orchestration -----------------------------------------------------------------

class Child:
    """A benchmark process speaking JSON lines on stdout; ends when its stdin closes."""

    def __init__(self, cmd: list[str], env: dict[str, str], what: str, stop: Any = None,
                 ready_timeout: float = READY_TIMEOUT) -> None:
        self.what = what
        self._stop = stop
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        line = self.readline(ready_timeout)
        if '"ready"' not in line:
            self.kill()
            raise common.BenchError(f"{what} did not start: {line!r} {self._stderr()}")

    def readline(self, timeout: float) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()  # type: ignore[union-attr]
                                                           ), daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0] if box else ""

    def ask(self, command: str, timeout: float) -> dict[str, Any]:
        """Send one command line; its JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.readline(timeout)
        if not line.strip():
            self.kill()
            raise common.BenchError(f"{self.what}: no answer to {command!r} {self._stderr()}")
        return common.last_json_line(line)

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return (self.proc.stderr.read() if self.proc.stderr else "")[-2000:]

    def stop(self, timeout: float = 30.0) -> str:
        """Stop the process (stdin closed, or the stop action) and return its stderr."""
        if self._stop is not None:
            self._stop()
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise common.BenchError(f"{self.what} did not stop within {timeout:.0f} s") from None
        if self.proc.returncode != 0:
            raise common.BenchError(f"{self.what} exited with {self.proc.returncode}: {err[-2000:]}")
        return err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def publish_stop(url: str, queue: str) -> None:
    from fastrpc.amqp.connection import Connection

    conn = Connection(url)
    conn.connect()
    try:
        conn.channel().basic_publish("", queue, b"stop")
    finally:
        conn.close()


def delete_queue(url: str, queue: str, exchange: str | None = None) -> None:
    from fastrpc.amqp.connection import Connection

    conn = Connection(url)
    conn.connect()
    try:
        ch = conn.channel()
        try:
            ch.queue_delete(queue)
        finally:
            if exchange is not None:
                ch.exchange_delete(exchange)
    finally:
        conn.close()


C_DEFAULT = "C (librabbitmq)"
C_TOPIC = "C (librabbitmq), topic exchange"
C_KEYS = (C_DEFAULT, C_TOPIC)
# What each C row runs, printed under the table.
C_SHAPES = ("C rows: sequential = one rpc-call process against one rpc-server process; concurrent-N "
            "(topic exchange) = one rpc-callers process with N threads, each with its own connection and reply "
            "queue, against one rpc-server process; casts (topic exchange) = one cast process publishing, one "
            "cast-server process consuming and acking once per read")


class CContender:
    """The C client against C servers kept running; one C client run per round.

    With ``topic_exchange`` the requests go through a topic exchange to the
    server's queue, bound by its name, as oslo.messaging's and fastrpc's RPC
    requests must (the broker routes each one), and every scenario runs:
    sequential calls (``rpc-call``), N concurrent callers (``rpc-callers``,
    N threads) and casts (``cast`` against its own ``cast-server``).
    Otherwise the requests take the default exchange straight to the queue,
    which the broker routes more cheaply, and only sequential calls run.
    """

    def __init__(self, b: common.Broker, topic_exchange: bool = False) -> None:
        self.b = b
        self.exe = str(common.c_client())
        self.topic_exchange = topic_exchange
        tag = uuid.uuid4().hex[:12]
        self.queue = f"bench.rpc.c.{tag}"
        self.exchange = [f"bench.rpc.c.topic.{tag}"] if topic_exchange else []
        self.cast_queue = f"bench.cast.c.{tag}"
        self.cast_exchange = f"bench.cast.c.topic.{tag}"
        self.env = b.c_env()
        self.servers: list[tuple[Child, str, list[str]]] = []
        try:
            self._start("rpc-server", self.queue, self.exchange)
            if topic_exchange:
                self._start("cast-server", self.cast_queue, [self.cast_exchange])
        except BaseException:
            self.close()
            raise

    def _start(self, mode: str, queue: str, exchange: list[str]) -> None:
        b = self.b
        server = Child([self.exe, mode, b.host, str(b.port), queue, *exchange], self.env, f"C {mode}",
                       stop=lambda: publish_stop(b.url, queue))
        self.servers.append((server, queue, exchange))

    def supports(self, scenario: str) -> bool:
        return scenario == "sequential" or self.topic_exchange

    def run(self, scenario: str, threads: int, seconds: float) -> dict[str, Any]:
        b, timeout = self.b, seconds + 60
        if scenario == "casts":
            return common.run_json([self.exe, "cast", b.host, str(b.port), self.cast_queue, str(MAX_CASTS),
                                    str(len(PAYLOAD)), f"{seconds:g}", self.cast_exchange],
                                   env=self.env, what="C cast", timeout=timeout)
        if threads == 1:
            return common.run_json([self.exe, "rpc-call", b.host, str(b.port), self.queue, "100000000",
                                    str(len(PAYLOAD)), f"{seconds:g}", *self.exchange],
                                   env=self.env, what="C rpc-call", timeout=timeout)
        return common.run_json([self.exe, "rpc-callers", b.host, str(b.port), self.queue, str(threads),
                                str(len(PAYLOAD)), f"{seconds:g}", *self.exchange],
                               env=self.env, what="C rpc-callers", timeout=timeout)

    def close(self) -> None:
        failed: list[BaseException] = []
        for server, queue, exchange in self.servers:  # every one, even after a failure
            try:
                server.stop()
            except Exception as exc:
                failed.append(exc)
            finally:
                server.kill()
                delete_queue(self.b.url, queue, *exchange)
        if failed:
            raise failed[0]


class ServerAndClients:
    """A server process and one client process per thread count, kept running between rounds."""

    server: Child
    clients: dict[int, Child]

    def _start_clients(self, lib: str, url: str, topic: str, thread_counts: list[int], env: dict[str, str],
                       what: str) -> None:
        """One ``--client`` process per thread count (the server already started); all stopped on failure."""
        self.clients = {}
        try:
            for threads in thread_counts:
                self.clients[threads] = Child(
                    common.python_cmd("rpc_scenarios.py", "--client", lib, "--url", url, "--topic", topic,
                                      "--threads", str(threads)), env, f"{what} client x{threads}")
        except BaseException:
            self.close()
            raise

    def run(self, scenario: str, threads: int, seconds: float) -> dict[str, Any]:
        command = "casts" if scenario == "casts" else "calls"
        return self.clients[threads].ask(f"{command} {seconds}", timeout=seconds * 8 + 120)

    def close(self) -> None:
        for client in self.clients.values():
            try:
                client.stop()
            finally:
                client.kill()
        try:
            self.server.stop()
        finally:
            self.server.kill()


class LibContender(ServerAndClients):
    """One library (and executor): its server and one client per thread count, all kept running."""

    def __init__(self, lib: str, b: common.Broker, executor: str, thread_counts: list[int]) -> None:
        # aio-pika takes the amqp:// URL; oslo.messaging's rabbit driver rabbit://; fastrpc fastrpc://.
        url = b.url if lib == AIO_PIKA else b.transport_url("rabbit" if lib == "oslo" else "fastrpc")
        topic = f"bench_{lib}_{executor}_{uuid.uuid4().hex[:8]}"
        env = common.python_env()
        self.lib = lib
        self.what = lib if lib == AIO_PIKA else f"{lib} ({executor})"
        executor_args = [] if lib == AIO_PIKA else ["--executor", executor]  # aio-pika: its own event loop
        self.server = Child(common.python_cmd("rpc_scenarios.py", "--serve", lib, "--url", url, "--topic", topic,
                                              *executor_args), env, f"{self.what} server")
        self._start_clients(lib, url, topic, thread_counts, env, self.what)

    def supports(self, scenario: str) -> bool:
        return scenario not in self.not_applicable()

    def not_applicable(self) -> tuple[str, ...]:
        """Scenarios the library has no way to run (shown as n/a)."""
        return ("casts",) if self.lib == AIO_PIKA else ()


def run_rounds(contenders: dict[str, Any], scenarios: list[tuple[str, int]], seconds: float,
               rounds: int) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every scenario, round after round, each contender once per round (order alternating)."""
    per_round = seconds / rounds
    results: dict[str, dict[str, list[dict[str, Any]]]] = {key: {} for key in contenders}
    for r in range(rounds):
        for name, threads in scenarios:
            keys = [k for k in contenders if contenders[k].supports(name)]
            if r % 2:
                keys.reverse()
            common.info(f"round {r + 1}/{rounds}: {name}")
            for key in keys:
                results[key].setdefault(name, []).append(contenders[key].run(name, threads, per_round))
    return results


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds."""
    out: dict[str, Any] = {"rate": common.median([x["rate"] for x in rounds]), "rounds": len(rounds)}
    for key in ("p50_ms", "p99_ms"):
        values = [x[key] for x in rounds if x.get(key) is not None]
        out[key] = common.median(values) if values else None
    return out


def ratio(rounds: list[dict[str, Any]], reference: list[dict[str, Any]] | None) -> float | None:
    """The median of the per-round rate ratios (None without a reference)."""
    if not reference:
        return None
    return common.median([a["rate"] / b["rate"] for a, b in zip(rounds, reference, strict=True) if b["rate"]])


def run_memory(b: common.Broker) -> dict[str, Any]:
    topic = f"bench_mem_{uuid.uuid4().hex[:8]}"
    return common.run_json(common.python_cmd("rpc_scenarios.py", "--memory",
                                             "--url", b.transport_url("fastrpc"), "--topic", topic),
                           env=common.python_env(), what="fastrpc memory", timeout=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0,
                   help="time per scenario and contender, split into the rounds (default 5)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per scenario (default 5)")
    p.add_argument("--skip-oslo", action="store_true", help="leave oslo.messaging out (both contenders)")
    p.add_argument("--skip-oslo-api", action="store_true",
                   help="leave out oslo.messaging's API on fastrpc's driver")
    p.add_argument("--skip-aio-pika", action="store_true", help="leave out aio-pika's RPC pattern")
    p.add_argument("--skip-memory", action="store_true", help="leave the memory measurements out")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--scenarios", default="sequential,concurrent-16,concurrent-8,casts",
                   help="comma-separated scenarios to run (default all)")
    p.add_argument("--executors", default="threading",
                   help="comma-separated fastrpc server executors to run (default threading)")
    p.add_argument("--executor", default="threading", choices=("blocking", "threading"), help=argparse.SUPPRESS)
    p.add_argument("--serve", choices=LIBS, help=argparse.SUPPRESS)
    p.add_argument("--client", choices=LIBS, help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve == AIO_PIKA:
        return aio_pika_rpc.serve(args.url, args.topic)
    if args.serve:
        return serve(args.serve, args.url, args.topic, args.executor)
    if args.memory:
        print(json.dumps(client_memory(args.url, args.topic)), flush=True)
        sys.stdout.flush()
        os._exit(0)
    if args.client:
        if args.client == AIO_PIKA:
            code = aio_pika_rpc.client_loop(args.url, args.topic, args.threads, PAYLOAD)
        else:
            code = client_loop(args.client, args.url, args.topic, args.threads)
        # Leftover non-daemon threads of a library must not keep a finished client alive.
        sys.stdout.flush()
        os._exit(code)

    if args.seconds <= 0:
        p.error("--seconds must be positive")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    known = {"sequential": 1, "concurrent-16": 16, "concurrent-8": 8, "casts": 1}
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if not chosen or any(name not in known for name in chosen):
        p.error(f"--scenarios takes some of {', '.join(known)}")
    scenarios = [(name, known[name]) for name in known if name in chosen]
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    if not executors or any(e not in ("blocking", "threading") for e in executors):
        p.error("--executors takes blocking and/or threading")
    thread_counts = sorted({threads for _, threads in scenarios})
    # (result key, library, executor); the first executor keeps the plain name.
    runs = [("fastrpc" if i == 0 else f"fastrpc [{e}]", "fastrpc", e) for i, e in enumerate(executors)]
    if not args.skip_oslo:
        runs.append(("oslo", "oslo", "threading"))
        if not args.skip_oslo_api:
            runs.append(("oslo-fastrpc", "oslo-fastrpc", "threading"))
    if not args.skip_aio_pika:
        runs.append((AIO_PIKA, AIO_PIKA, "asyncio"))
    memory: dict[str, Any] = {}
    contenders: dict[str, Any] = {}
    with common.broker() as b:
        try:
            common.info("starting servers and clients")
            for key, lib, executor in runs:
                contenders[key] = LibContender(lib, b, executor, thread_counts)
            if "sequential" in chosen:
                contenders[C_DEFAULT] = CContender(b)
            contenders[C_TOPIC] = CContender(b, topic_exchange=True)
            common.info("warming up the broker (C clients, discarded)")
            for key in C_KEYS:
                for name, threads in scenarios:
                    if key in contenders and contenders[key].supports(name):
                        contenders[key].run(name, threads, 0.5)
            raw = run_rounds(contenders, scenarios, args.seconds, args.rounds)
        finally:
            for contender in contenders.values():
                contender.close()
        if not args.skip_memory:
            common.info("fastrpc: memory")
            memory = run_memory(b)

    headers = ["scenario", "client", "calls/s", "p50 ms", "p99 ms", "vs oslo", "vs aio-pika", "vs C",
               "vs C, topic exchange"]
    rows = []
    names = {key: key for key, _, _ in runs}
    names.update({"fastrpc": f"fastrpc [{executors[0]}]" if len(executors) > 1 else "fastrpc",
                  "oslo": "oslo.messaging", "oslo-fastrpc": "oslo.messaging on fastrpc://",
                  AIO_PIKA: "aio-pika (patterns.JsonRPC)", C_DEFAULT: C_DEFAULT, C_TOPIC: C_TOPIC})
    not_applicable = {key: c.not_applicable() for key, c in contenders.items() if isinstance(c, LibContender)}
    summary: dict[str, dict[str, Any]] = {}
    for scenario, _ in scenarios:
        references = {ref: raw.get(ref, {}).get(scenario) for ref in ("oslo", AIO_PIKA, C_DEFAULT, C_TOPIC)}
        for client in [key for key, _, _ in runs] + list(C_KEYS):
            if scenario in not_applicable.get(client, ()):
                rows.append([scenario, names[client], "n/a", "-", "-", "-", "-", "-", "-"])
                summary.setdefault(client, {})[scenario] = None
                continue
            found = raw.get(client, {}).get(scenario)
            if not found:
                continue
            vs = {ref: ratio(found, rounds) for ref, rounds in references.items()}
            res = summarize(found)
            res.update(vs_oslo=vs["oslo"], vs_aio_pika=vs[AIO_PIKA], vs_c=vs[C_DEFAULT], vs_c_topic=vs[C_TOPIC])
            summary.setdefault(client, {})[scenario] = res
            rows.append([scenario, names[client], common.fmt_rate(res["rate"]), common.fmt_ms(res.get("p50_ms")),
                         common.fmt_ms(res.get("p99_ms")),
                         *(fmt_x(vs[ref]) for ref in ("oslo", AIO_PIKA, C_DEFAULT, C_TOPIC))])
    fmt = common.format_markdown if args.markdown else common.format_table
    print(f"RPC scenarios, payload {len(PAYLOAD)} bytes, {args.rounds} rounds of {args.seconds / args.rounds:g} s "
          "per scenario and client; medians over the rounds, ratios taken within each round "
          "(casts: calls/s = casts/s end to end)")
    print(fmt(headers, rows))
    print(C_SHAPES + ".")
    if memory:
        print()
        print(fmt(["fastrpc memory", "Python heap (tracemalloc)", "RSS delta"], [
            [f"per connection ({memory['connections']} opened)", f"{memory['connection_heap_bytes'] / 1024:.1f} KiB",
             f"{memory['connection_rss_bytes'] / 1024:.1f} KiB"],
            [f"per in-flight call ({memory['inflight_calls']} waiting)", f"{memory['inflight_heap_bytes'] / 1024:.2f} KiB",
             f"{memory['inflight_rss_bytes'] / 1024:.2f} KiB"],
        ]))
    common.write_json(args.json, {"benchmark": "rpc_scenarios", "seconds": args.seconds, "rounds": args.rounds,
                                  "payload": len(PAYLOAD), "executors": executors, "summary": summary,
                                  "rounds_raw": raw, "memory": memory})
    return 0


def fmt_x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


if __name__ == "__main__":
    common.run_main(main, "rpc_scenarios")
