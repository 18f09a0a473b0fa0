"""Throughput A/B of fastrpc servers from several source trees (or pool sizes), in one run.

Each SERVER is a fastrpc source tree, built (``setup.py build_ext --inplace``),
optionally with a pool size: ``PATH`` or ``PATH:POOL`` (``executor_thread_pool_size``;
the same tree may be named twice with different sizes). Every server runs in
its own process with the ``rpc_scenarios.py`` endpoint, on its own topic, and
is driven by the same client code (this tree's ``rpc_scenarios.py --client``).
The C client of ``rpc_scenarios.py`` (topic exchange) runs beside them as the
yardstick.

Rounds are short and alternate: in each round, each scenario runs the C pair
and then every server, in an order rotated from round to round, so that
whatever load the shared host carries hits all of them alike. Ratios are taken
within a round (to C, and to the first SERVER, S1) and the medians over the rounds
are reported, with every round's ratio to C listed. Around each run the
server reports its worker threads (the threading executor's pool as grown)
and its process's CPU time and context switches (getrusage), printed per
request (the client's are not in them); with the benchmark's own broker
node, the broker's CPU time per request too, for the C pair as for each
server (the broker takes the larger share of this host's CPUs).

    python bench/tree_ab.py [--scenarios casts,concurrent-16,sequential] [--executor threading]
        [--rounds 8] [--seconds 2] [--json out.json] SERVER [SERVER ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.rpc_scenarios import C_TOPIC, CContender, Child, ServerAndClients

SCENARIOS = {"sequential": 1, "concurrent-16": 16, "concurrent-8": 8, "casts": 1}

_SERVER = r"""
import json, os, resource, sys, threading
tree, root = os.environ["FASTRPC_AB_TREE"], os.environ["FASTRPC_AB_ROOT"]
sys.path[:0] = [tree, root]
import fastrpc
from fastrpc import _impl
from bench.rpc_scenarios import BenchEndpoint, _quiet_logging

url, topic, executor, pool = sys.argv[1:5]
_quiet_logging()
options = fastrpc.Options(executor_thread_pool_size=int(pool)) if int(pool) else None
transport = fastrpc.get_rpc_transport(options, url=url)
server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic=topic, server="bench-server"), [BenchEndpoint()],
                                executor=executor)
server.start()
if not os.path.realpath(fastrpc.__file__).startswith(os.path.realpath(tree) + os.sep):
    sys.exit(f"imported fastrpc from {fastrpc.__file__}, not from {tree}")
if not all(_impl.compiled_modules().values()):
    sys.exit(f"{tree} runs without its compiled modules (build it: setup.py build_ext --inplace)")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    workers = getattr(server, "_workers", [])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"workers": len(workers), "threads": threading.active_count(),
                      "cpu": usage.ru_utime + usage.ru_stime, "switches": usage.ru_nvcsw + usage.ru_nivcsw}),
          flush=True)
server.stop()
server.wait()
transport.cleanup()
"""


class TreeServer(ServerAndClients):
    """A server from one tree (one pool size) and its clients (this tree's code), kept running."""

    def __init__(self, label: str, tree: Path, pool: int, b: common.Broker, executor: str,
                 thread_counts: list[int]) -> None:
        self.label = label
        url = b.transport_url("fastrpc")
        topic = f"bench_ab_{uuid.uuid4().hex[:8]}"
        env = dict(common.python_env(), FASTRPC_AB_TREE=str(tree), FASTRPC_AB_ROOT=str(common.ROOT))
        self.server = Child([sys.executable, "-c", _SERVER, url, topic, executor, str(pool)], env,
                            f"server {label}")
        self._start_clients("fastrpc", url, topic, thread_counts, common.python_env(), label)

    def usage(self) -> dict[str, Any]:
        """Its worker threads, and the CPU time and context switches of its process so far."""
        return self.server.ask("usage", 30)


def parse_server(spec: str) -> tuple[Path, int]:
    path, _, pool = spec.rpartition(":") if ":" in spec else (spec, "", "0")
    tree = Path(path).resolve()
    if not (tree / "fastrpc" / "__init__.py").is_file():
        raise common.BenchError(f"{tree} is not a fastrpc source tree")
    try:
        size = int(pool)
    except ValueError:
        raise common.BenchError(f"{spec!r}: the pool size after ':' must be a number") from None
    return tree, size


def _median_of(results: list[dict[str, Any]], key: str) -> float | None:
    """The median of ``key`` over a scenario's rounds; None where it was not measured."""
    values = [x[key] for x in results if x.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("servers", nargs="+", metavar="SERVER", help="PATH or PATH:POOL")
    p.add_argument("--scenarios", default="casts,concurrent-16,sequential",
                   help=f"comma-separated, of {', '.join(SCENARIOS)} (default casts,concurrent-16,sequential)")
    p.add_argument("--executor", default="threading", choices=("blocking", "threading"))
    p.add_argument("--rounds", type=int, default=8, help="rounds (default 8)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per run in a round (default 2)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = p.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not chosen or any(s not in SCENARIOS for s in chosen):
        p.error(f"--scenarios takes some of {', '.join(SCENARIOS)}")
    if args.rounds < 1 or args.seconds <= 0:
        p.error("--rounds must be at least 1 and --seconds positive")
    try:
        specs = [parse_server(spec) for spec in args.servers]
    except common.BenchError as exc:
        p.error(str(exc))
    labels = [f"S{i + 1} {tree}" + (f" pool {pool}" if pool else "") for i, (tree, pool) in enumerate(specs)]
    thread_counts = sorted({SCENARIOS[s] for s in chosen})
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {label: {s: [] for s in chosen} for label in labels}
    raw[C_TOPIC] = {s: [] for s in chosen}
    with common.broker() as b:
        servers: list[TreeServer] = []
        c: CContender | None = None
        try:
            common.info("starting servers and clients")
            for label, (tree, pool) in zip(labels, specs, strict=True):
                servers.append(TreeServer(label, tree, pool, b, args.executor, thread_counts))
            c = CContender(b, topic_exchange=True)
            common.info("warming up")
            for s in chosen:
                c.run(s, SCENARIOS[s], 0.5)
                for srv in servers:
                    srv.run(s, SCENARIOS[s], 0.5)
            for r in range(args.rounds):
                for s in chosen:
                    common.info(f"round {r + 1}/{args.rounds}: {s}")
                    order: list[Any] = [c, *servers]
                    shift = r % len(order)
                    order = order[shift:] + order[:shift]
                    for who in order:
                        broker_before = None if b.pid is None else common.process_cpu_seconds(b.pid)
                        if isinstance(who, TreeServer):
                            key = who.label
                            before = who.usage()
                            res = who.run(s, SCENARIOS[s], args.seconds)
                            after = who.usage()
                            # Per request: its share of the server process's CPU and context switches.
                            requests = max(1, res["n"])
                            res["workers"] = after["workers"]
                            res["cpu_us"] = (after["cpu"] - before["cpu"]) / requests * 1e6
                            res["switches"] = (after["switches"] - before["switches"]) / requests
                        else:
                            key = C_TOPIC
                            res = who.run(s, SCENARIOS[s], args.seconds)
                        if broker_before is not None:
                            # The broker's CPU per request (the run's start and end included).
                            res["broker_us"] = ((common.process_cpu_seconds(b.pid) - broker_before)
                                                / max(1, res["n"]) * 1e6)
                        raw[key][s].append(res)
        finally:
            for srv in servers:
                srv.close()
            if c is not None:
                c.close()

    summary: dict[str, Any] = {}
    print(f"{args.rounds} rounds of {args.seconds:g} s, {args.executor} executor; "
          "ratios taken within each round, medians over the rounds")
    for s in chosen:
        c_rates = [x["rate"] for x in raw[C_TOPIC][s]]
        first = [x["rate"] for x in raw[labels[0]][s]]
        c_broker = _median_of(raw[C_TOPIC][s], "broker_us")
        print(f"\n{s}: C median {statistics.median(c_rates):.0f}/s"
              + ("" if c_broker is None else f", broker CPU {c_broker:.1f} µs per request"))
        summary.setdefault(C_TOPIC, {})[s] = {"rate": statistics.median(c_rates), "broker_us": c_broker}
        for label in labels:
            rates = [x["rate"] for x in raw[label][s]]
            vs_c = [a / b for a, b in zip(rates, c_rates, strict=True)]
            vs_s1 = [a / b for a, b in zip(rates, first, strict=True)]
            workers = [x["workers"] for x in raw[label][s]]
            cpu_us = statistics.median(x["cpu_us"] for x in raw[label][s])
            switches = statistics.median(x["switches"] for x in raw[label][s])
            broker_us = _median_of(raw[label][s], "broker_us")
            summary.setdefault(label, {})[s] = {"vs_c": statistics.median(vs_c), "vs_s1": statistics.median(vs_s1),
                                                "vs_c_rounds": vs_c, "workers": workers,
                                                "rate": statistics.median(rates), "cpu_us": cpu_us,
                                                "switches": switches, "broker_us": broker_us}
            print(f"  {label}: vs C {statistics.median(vs_c):.2f}x  vs S1 {statistics.median(vs_s1):.3f}  "
                  f"server CPU {cpu_us:.1f} µs and {switches:.2f} context switches per request  "
                  + ("" if broker_us is None else f"broker CPU {broker_us:.1f} µs  ")
                  + f"rounds vs C [{', '.join(f'{x:.2f}' for x in vs_c)}]  workers {workers}")
    common.write_json(args.json, {"benchmark": "tree_ab", "executor": args.executor, "rounds": args.rounds,
                                  "seconds": args.seconds, "summary": summary, "rounds_raw": raw})
    return 0


if __name__ == "__main__":
    common.run_main(main, "tree_ab")
