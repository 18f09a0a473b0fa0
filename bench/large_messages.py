"""Large messages, two fastrpc source trees side by side: connection layer and RPC calls.

For each ``--sizes`` entry and each tree (both must be built:
``setup.py build_ext --inplace``), every round measures, A then B (the order
alternates between rounds, so a machine whose speed drifts hits both alike):

* ``publish``: one new connection publishes ``--mbytes`` worth of messages of
  that size to a queue (a synchronous round trip on the same channel ends the
  clock, so the broker has them all);
* ``consume``: another new connection, in another process (as a consumer
  usually is: what one process allocated would change how the C allocator
  serves the other's), consumes them back (prefetch 32, acks every 8th,
  multiple);
* ``rpc``: sequential calls through fastrpc's API, a string payload of that
  size echoed by a server of the same tree (threading executor), for
  ``--seconds`` per round.

``--instructions`` counts instead, with valgrind's callgrind, the
instructions a process spends per MiB published and per MiB consumed (runs
of one and of three connections' worth of ``--mbytes``, the difference
divided by the extra MiB): on a loaded machine rates drift by tens of
percent, instruction counts do not (page faults and the kernel's side of
the sockets are not in them).

New connections each round, so a connection's read buffer starts from its
initial size every time. Each tree runs in its own publishing and calling,
consuming and serving processes. The table shows the median MB/s (payload bytes) over the rounds and
the median of the per-round ratios B/A (above 1: B moves more), and the same
for the CPU time the client process spent per MB (all its threads; below 1: B
costs less), which a loaded machine disturbs less than the rates.

    python bench/large_messages.py TREE_A TREE_B [--sizes 65536,1048576,4194304]
        [--rounds 5] [--seconds 2] [--mbytes 64] [--only raw|rpc] [--instructions] [--json out.json] [--markdown]

``FASTRPC_BENCH_URL=amqp://user:pass@host:port/vhost`` uses an existing broker
instead of starting a private node.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PREFETCH = 32
ACK_EVERY = 8
CALL_TIMEOUT = 120
WAIT_SECONDS = 300.0
KINDS = ("publish", "consume", "rpc")
INSTRUCTION_REPS = 3  # --instructions: runs of 1 and of this many connections' worth

# Imports fastrpc from the tree first, then this benchmark from its own tree.
_CHILD = r"""
import sys
tree, root = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)
import fastrpc, fastrpc.amqp.connection, fastrpc.envelope
sys.path.insert(0, root)
from bench.large_messages import child
child(tree, sys.argv[3:])
"""


# -- child processes (fastrpc from the tree under test) ----------------------------

def child(tree: str, argv: list[str]) -> None:
    import fastrpc
    from fastrpc import _impl

    logging.basicConfig(level=logging.ERROR)
    if not Path(fastrpc.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"imported fastrpc from {fastrpc.__file__}, not from {tree}")
    if not all(_impl.COMPILED_MODULES.values()):
        raise SystemExit(f"{tree} runs without its compiled modules (build it: setup.py build_ext --inplace)")
    mode, url = argv[0], argv[1]
    if mode == "serve":
        _serve(url, argv[2], argv[3])
    elif mode in ("publish", "consume"):  # reps runs of one connection each, queue.0, queue.1, ...
        queue, size, count, reps = argv[2], int(argv[3]), int(argv[4]), int(argv[5])
        for rep in range(reps):
            (_publish if mode == "publish" else _consume)("amqp" + url[url.index("://"):], f"{queue}.{rep}",
                                                          size, count)
    else:
        _client(url)


def _serve(url: str, topic: str, executor: str) -> None:
    import fastrpc

    class Echo:
        def echo(self, ctxt: Any, payload: str) -> str:
            return payload

    transport = fastrpc.get_rpc_transport(url=url)
    server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic=topic, server="s1"), [Echo()],
                                    executor=executor)
    server.start()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()
    server.stop()
    server.wait()
    transport.cleanup()


def _client(url: str) -> None:
    import fastrpc

    transport = fastrpc.get_rpc_transport(url=url)
    amqp_url = "amqp" + url[url.index("://"):]
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        kind, size = words[0], int(words[1])
        if kind == "publish":
            result = _publish(amqp_url, words[2], size, int(words[3]))
        elif kind == "consume":
            result = _consume(amqp_url, words[2], size, int(words[3]))
        else:
            client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic=words[2]), timeout=CALL_TIMEOUT)
            result = _rpc(client, size, float(words[3]))
        print(json.dumps(result), flush=True)
    transport.cleanup()


def _publish(url: str, queue: str, size: int, count: int) -> dict[str, Any]:
    from fastrpc.amqp.connection import Connection

    body = b"x" * size
    with Connection(url) as conn:
        ch = conn.channel()
        ch.queue_declare(queue, auto_delete=False)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            ch.basic_publish("", queue, body, {"delivery_mode": 1})
        ch.queue_declare(queue, auto_delete=False)  # same channel: the broker has every publish
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"publish": size * count / seconds, "publish_cpu": cpu / (size * count)}


def _consume(url: str, queue: str, size: int, count: int) -> dict[str, Any]:
    from fastrpc.amqp.connection import Connection

    done = threading.Event()
    state = {"count": 0, "acked": 0, "bytes": 0}
    with Connection(url) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=PREFETCH)

        def on_message(delivery: Any) -> None:
            state["count"] += 1
            state["bytes"] += len(delivery.body)
            tag = delivery.delivery_tag
            if tag - state["acked"] >= ACK_EVERY or state["count"] == count:
                ch.basic_ack(tag, multiple=True)
                state["acked"] = tag
            if state["count"] == count:
                done.set()

        started, cpu = time.perf_counter(), time.process_time()
        ch.basic_consume(queue, on_message)
        if not done.wait(WAIT_SECONDS):
            raise common.BenchError(f"consumed {state['count']} of {count} messages in {WAIT_SECONDS:.0f} s")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        ch.queue_delete(queue)
    if state["bytes"] != size * count:
        raise common.BenchError(f"consumed {state['bytes']} bytes, expected {size * count}")
    return {"consume": size * count / seconds, "consume_cpu": cpu / (size * count)}


def _rpc(client: Any, size: int, seconds: float) -> dict[str, Any]:
    payload = "x" * size
    if client.call({}, "echo", payload=payload) != payload:  # warm-up, and a check
        raise common.BenchError("echo returned a different payload")
    calls = 0
    started, cpu = time.perf_counter(), time.process_time()
    while True:
        client.call({}, "echo", payload=payload)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return {"rpc": size * calls / elapsed, "rpc_cpu": (time.process_time() - cpu) / (size * calls)}


# -- orchestration -----------------------------------------------------------------

class Proc:
    """One child process of a tree, JSON lines on stdout."""

    def __init__(self, tree: Path, args: list[str], what: str) -> None:
        self.what = what
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tree), str(common.ROOT), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=common.python_env())
        self.read(60.0)

    def read(self, timeout: float) -> dict[str, Any]:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or not box[0].strip():
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise common.BenchError(f"{self.what}: no answer in {timeout:.0f} s {err[-2000:]}")
        return common.last_json_line(box[0])

    def ask(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


Series = dict[str, list[list[float]]]  # "rate" (MB/s) / "cpu" (client CPU ms per MB) -> per tree, per round


def measure(url: str, trees: list[Path], sizes: list[int], rounds: int, seconds: float,
            mbytes: float, executor: str, kinds: tuple[str, ...] = KINDS) -> dict[int, dict[str, Series]]:
    """size -> kind -> the series of each tree."""
    tag = uuid.uuid4().hex[:8]
    topics = [f"bench_large_{tag}_{i}" for i in range(len(trees))]
    procs: list[Proc] = []
    try:
        for i, tree in enumerate(trees):
            procs.append(Proc(tree, ["serve", url, topics[i], executor], f"server of {tree}"))
        clients = [Proc(tree, ["client", url], f"client of {tree}") for tree in trees]
        procs.extend(clients)
        consumers = [Proc(tree, ["client", url], f"consumer of {tree}") for tree in trees]
        procs.extend(consumers)
        results: dict[int, dict[str, Series]] = {}
        for size in sizes:
            per_kind: dict[str, Series] = {k: {"rate": [[] for _ in trees], "cpu": [[] for _ in trees]}
                                           for k in kinds}
            count = max(8, int(mbytes * 2**20) // size)
            for r in range(rounds):
                order = range(len(trees)) if r % 2 == 0 else reversed(range(len(trees)))
                for i in order:
                    common.info(f"size {size}, round {r + 1}/{rounds}, tree {'AB'[i]}")
                    answer: dict[str, Any] = {}
                    if "publish" in kinds or "consume" in kinds:
                        queue = f"bench_large_{tag}_q{i}"
                        answer.update(clients[i].ask(f"publish {size} {queue} {count}", WAIT_SECONDS))
                        answer.update(consumers[i].ask(f"consume {size} {queue} {count}", WAIT_SECONDS))
                    if "rpc" in kinds:
                        answer.update(clients[i].ask(f"rpc {size} {topics[i]} {seconds}", seconds + CALL_TIMEOUT * 2))
                    for kind in kinds:
                        per_kind[kind]["rate"][i].append(answer[kind] / 1e6)
                        per_kind[kind]["cpu"][i].append(answer[kind + "_cpu"] * 1e9)
            results[size] = per_kind
        return results
    finally:
        for p in procs:
            p.stop()


def fmt_size(size: int) -> str:
    if size % 2**20 == 0:
        return f"{size // 2**20} MiB"
    if size % 2**10 == 0:
        return f"{size // 2**10} KiB"
    return f"{size} B"


def count_instructions(url: str, trees: list[Path], sizes: list[int], mbytes: float,
                       reps: int) -> dict[int, dict[str, list[float]]]:
    """size -> publish / consume -> instructions per MiB of each tree (callgrind).

    Runs with 1 and with ``reps`` connections' worth of messages; the
    difference divided by the extra MiB leaves out starting Python.
    """
    from bench.call_cost import run_counted

    results: dict[int, dict[str, list[float]]] = {}
    for size in sizes:
        count = max(8, int(mbytes * 2**20) // size)
        per_kind: dict[str, list[float]] = {"publish": [], "consume": []}
        for i, tree in enumerate(trees):
            counted: dict[str, list[int]] = {"publish": [], "consume": []}
            for n in (1, reps):
                queue = f"bench_large_{uuid.uuid4().hex[:8]}"
                for kind in ("publish", "consume"):
                    common.info(f"size {size}, tree {'AB'[i]}, {kind} x{n} under callgrind")
                    cmd = [sys.executable, "-c", _CHILD, str(tree), str(common.ROOT), kind, url, queue, str(size),
                           str(count), str(n)]
                    counted[kind].append(run_counted(cmd, common.python_env(), f"{kind} of {tree}"))
            mib = (reps - 1) * count * size / 2**20
            for kind, (low, high) in counted.items():
                per_kind[kind].append((high - low) / mib)
        results[size] = per_kind
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tree_a", type=Path)
    p.add_argument("tree_b", type=Path)
    p.add_argument("--sizes", default="65536,1048576,4194304", help="message sizes in bytes, comma-separated")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of RPC calls per round and tree (default 2)")
    p.add_argument("--mbytes", type=float, default=64.0, help="MiB published and consumed per round (default 64)")
    p.add_argument("--executor", default="threading", choices=("blocking", "threading"))
    p.add_argument("--only", choices=("raw", "rpc"), help="measure only the connection layer, or only RPC calls")
    p.add_argument("--instructions", action="store_true",
                   help="count the instructions of publishing and consuming with callgrind instead (no rates)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args()
    trees = [args.tree_a.resolve(), args.tree_b.resolve()]
    for tree in trees:
        if not (tree / "fastrpc" / "__init__.py").is_file():
            p.error(f"{tree} is not a fastrpc source tree")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes takes whole numbers of bytes, comma-separated")
    if not sizes or min(sizes) < 1 or args.rounds < 1 or args.seconds <= 0 or args.mbytes <= 0:
        p.error("--sizes, --rounds, --seconds and --mbytes must be positive")
    if args.instructions:
        with common.broker() as b:
            counts = count_instructions(b.transport_url("fastrpc"), trees, sizes, args.mbytes, INSTRUCTION_REPS)
        rows = [[fmt_size(size), kind, f"{a / 1e6:.2f}", f"{b_ / 1e6:.2f}", f"{b_ / a:.2f}x"]
                for size, per_kind in counts.items() for kind, (a, b_) in per_kind.items()]
        print(f"A = {trees[0]}\nB = {trees[1]}")
        print((common.format_markdown if args.markdown else common.format_table)(
            ["size", "what", "A M instructions/MiB", "B M instructions/MiB", "B/A"], rows))
        common.write_json(args.json, {"benchmark": "large_messages", "a": str(trees[0]), "b": str(trees[1]),
                                      "instructions_per_mib": counts})
        return 0
    kinds = {"raw": ("publish", "consume"), "rpc": ("rpc",), None: KINDS}[args.only]
    with common.broker() as b:
        results = measure(b.transport_url("fastrpc"), trees, sizes, args.rounds, args.seconds, args.mbytes,
                          args.executor, kinds)
    rows = []
    out: dict[str, Any] = {"benchmark": "large_messages", "a": str(trees[0]), "b": str(trees[1]),
                           "rounds": args.rounds, "executor": args.executor, "sizes": {}}
    for size, per_kind in results.items():
        out["sizes"][size] = {}
        for kind in per_kind:
            rate, cpu = per_kind[kind]["rate"], per_kind[kind]["cpu"]
            rate_ratio = common.median([y / x for x, y in zip(*rate, strict=True) if x])
            cpu_ratio = common.median([y / x for x, y in zip(*cpu, strict=True) if x])
            out["sizes"][size][kind] = {"a_mb_s": rate[0], "b_mb_s": rate[1], "ratio": rate_ratio,
                                        "a_cpu_ms_per_mb": cpu[0], "b_cpu_ms_per_mb": cpu[1], "cpu_ratio": cpu_ratio}
            rows.append([fmt_size(size), kind, f"{common.median(rate[0]):,.0f}", f"{common.median(rate[1]):,.0f}",
                         f"{rate_ratio:.2f}x", f"{common.median(cpu[0]):.2f}", f"{common.median(cpu[1]):.2f}",
                         f"{cpu_ratio:.2f}x"])
    headers = ["size", "what", "A MB/s", "B MB/s", "B/A", "A CPU ms/MB", "B CPU ms/MB", "B/A CPU"]
    print(f"A = {trees[0]}\nB = {trees[1]}")
    print((common.format_markdown if args.markdown else common.format_table)(headers, rows))
    common.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    common.run_main(main, "large_messages")
