"""Paired per-call A/B of two fastrpc source trees: server latency side by side.

One server process per tree (each imports fastrpc from its tree, which must be
built: ``setup.py build_ext --inplace``), each on its own topic, and one client
(this tree) that calls them in turn: A then B, then B then A, and so on, for
``--calls`` pairs of the 150-byte echo of ``rpc_scenarios.py``. Consecutive
calls are milliseconds apart, so the load of a shared machine hits both alike,
where runs seconds apart (``rpc_scenarios.py``'s rounds) still drift. The
client is the same for both, so what differs is the server's side of a call.

    python bench/pair_ab.py [--calls 3000] [--executor blocking] TREE_A TREE_B
        [--json out.json]

Prints the mean and median latency of each and the ratios B/A (below 1: B
answers sooner). Comparing a tree with itself shows the noise floor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.rpc_scenarios import CALL_TIMEOUT, PAYLOAD

WARMUP_PAIRS = 200
_SERVER = r"""
import os, sys
sys.path.insert(0, os.environ["FASTRPC_PAIR_TREE"])
import logging
logging.basicConfig(level=logging.ERROR)
import fastrpc

class Echo:
    def echo(self, ctxt, payload):
        return payload

url, topic, executor = sys.argv[1:4]
transport = fastrpc.get_rpc_transport(url=url)
server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic=topic, server="s1"), [Echo()], executor=executor)
server.start()
from fastrpc import _impl
if hasattr(_impl, "compiled_modules"):
    compiled = all(_impl.compiled_modules().values())
else:  # a tree from before every twin had a public module
    compiled = _impl.COMPILED and _impl.ENVELOPE_COMPILED and all(_impl.TWINS_COMPILED.values())
print("ready", fastrpc.__file__, "compiled" if compiled else "pure-python", flush=True)
sys.stdin.read()
server.stop()
server.wait()
transport.cleanup()
"""


def start_server(tree: Path, url: str, topic: str, executor: str) -> subprocess.Popen[str]:
    env = dict(common.python_env(), FASTRPC_PAIR_TREE=str(tree))
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, url, topic, executor], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    problem = None
    if not words or words[0] != "ready":
        problem = "did not start"
    elif not Path(words[1]).resolve().is_relative_to(tree):
        problem = f"imported fastrpc from {words[1]}, not from the tree"
    elif words[2] != "compiled":
        problem = "runs without its compiled modules (build it: setup.py build_ext --inplace)"
    if problem is not None:
        proc.kill()
        proc.wait(30)
        raise common.BenchError(f"the server from {tree} {problem}")
    return proc


def measure(url: str, topics: list[str], pairs: int) -> list[list[float]]:
    import fastrpc

    transport = fastrpc.get_rpc_transport(url=url)
    try:
        return _calls(fastrpc, transport, topics, pairs)
    except fastrpc.MessagingTimeout as exc:
        raise common.BenchError(f"a server stopped answering: {exc}") from None
    finally:
        transport.cleanup()


def _calls(fastrpc: Any, transport: Any, topics: list[str], pairs: int) -> list[list[float]]:
    clients = [fastrpc.get_rpc_client(transport, fastrpc.Target(topic=t), timeout=CALL_TIMEOUT) for t in topics]
    for _ in range(WARMUP_PAIRS):
        for client in clients:
            if client.call({}, "echo", payload=PAYLOAD) != PAYLOAD:
                raise common.BenchError("echo returned a different payload")
    latencies: list[list[float]] = [[] for _ in topics]
    for k in range(pairs):
        order = (0, 1) if k % 2 == 0 else (1, 0)
        for i in order:
            started = time.perf_counter()
            clients[i].call({}, "echo", payload=PAYLOAD)
            latencies[i].append(time.perf_counter() - started)
    return latencies


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tree_a", type=Path)
    p.add_argument("tree_b", type=Path)
    p.add_argument("--calls", type=int, default=3000, help="pairs of calls (default 3000)")
    p.add_argument("--executor", default="blocking", choices=("blocking", "threading"))
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = p.parse_args()
    if args.calls < 1:
        p.error("--calls must be at least 1")
    trees = [args.tree_a.resolve(), args.tree_b.resolve()]
    for tree in trees:
        if not (tree / "fastrpc" / "__init__.py").is_file():
            p.error(f"{tree} is not a fastrpc source tree")
    with common.broker() as b:
        url = b.transport_url("rabbit")
        tag = uuid.uuid4().hex[:8]
        topics = [f"bench_pair_{tag}_a", f"bench_pair_{tag}_b"]
        servers: list[subprocess.Popen[str]] = []
        try:
            for tree, topic in zip(trees, topics, strict=True):
                servers.append(start_server(tree, url, topic, args.executor))
            latencies = measure(url, topics, args.calls)
        finally:
            for proc in servers:
                if proc.stdin is not None:
                    proc.stdin.close()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)
    result: dict[str, Any] = {"benchmark": "pair_ab", "executor": args.executor, "pairs": args.calls}
    for name, tree, values in zip(("a", "b"), trees, latencies, strict=True):
        result[name] = {"tree": str(tree), "mean_us": statistics.mean(values) * 1e6,
                        "median_us": statistics.median(values) * 1e6}
        print(f"{name.upper()} {tree}: mean {result[name]['mean_us']:.1f} µs, "
              f"median {result[name]['median_us']:.1f} µs")
    result["mean_ratio"] = result["b"]["mean_us"] / result["a"]["mean_us"]
    result["median_ratio"] = result["b"]["median_us"] / result["a"]["median_us"]
    print(f"B/A: mean {result['mean_ratio']:.3f}, median {result['median_ratio']:.3f} "
          f"({args.calls} pairs, {args.executor} executor)")
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    common.run_main(main, "pair_ab")
