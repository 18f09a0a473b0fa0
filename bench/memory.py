"""fastrpc's memory per connection and per call in flight, and where it goes.

The figures are those of ``rpc_scenarios.py``'s memory table, measured the
same way (its ``--memory`` step, in a child process): 20 connections with one
channel each, then 400 calls waiting on a queue without a consumer; Python
heap growth (tracemalloc) and RSS growth divided by 20 or 400. Here they are
measured twice, compiled and pure Python (``FASTRPC_NO_EXTENSIONS=1``).

``--top N`` adds, for each figure, the N allocation sites that grew most
(tracemalloc snapshots taken at the moments the figure is measured, grouped by
the innermost line of fastrpc, else the innermost line; compiled code
allocates under the Python line that called into it, so the pure Python run
is the one that names the connection layer's lines). Those runs are separate:
snapshots cost memory of their own.

Last, the RSS of 20 connections without tracemalloc (whose bookkeeping is in
the table's RSS column), split into thread stacks (each connection has a
reader and a watchdog thread; a stack is reserved virtual memory, of which
only the pages a thread touched are resident) and everything else.

    python bench/memory.py [--top 12] [--json out.json] [--markdown]

``FASTRPC_BENCH_URL=amqp://user:pass@host:port/vhost`` uses an existing broker
instead of starting a private node.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

CONNECTIONS = 20  # for the RSS split
FRAMES = 16
PHASES = (("connection", "per connection"), ("inflight", "per in-flight call"))


# -- child processes ---------------------------------------------------------------

def attribute(url: str, topic: str, top: int) -> dict[str, Any]:
    """rpc_scenarios' measurement with a snapshot at each heap reading: the sites that grew."""
    from bench import rpc_scenarios

    snapshots: list[tracemalloc.Snapshot] = []
    real_start, real_get = tracemalloc.start, tracemalloc.get_traced_memory

    def get_traced_memory() -> tuple[int, int]:
        snapshots.append(tracemalloc.take_snapshot())
        return real_get()

    tracemalloc.start = lambda nframe=FRAMES: real_start(FRAMES)  # type: ignore[assignment, misc]
    tracemalloc.get_traced_memory = get_traced_memory  # type: ignore[assignment]
    try:
        figures = rpc_scenarios.client_memory(url, topic)
    finally:
        tracemalloc.start, tracemalloc.get_traced_memory = real_start, real_get  # type: ignore[method-assign]
    if len(snapshots) != 2 * len(PHASES):
        raise common.BenchError(f"expected {2 * len(PHASES)} heap readings, saw {len(snapshots)}")
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    result: dict[str, Any] = {}
    for i, (key, _) in enumerate(PHASES):
        count = figures["connections" if key == "connection" else "inflight_calls"]
        before, after = (s.filter_traces(ignore) for s in snapshots[2 * i:2 * i + 2])
        grew: Counter[str] = Counter()
        blocks: Counter[str] = Counter()
        for stat in after.compare_to(before, "traceback"):
            site = _site(stat.traceback)
            grew[site] += stat.size_diff
            blocks[site] += stat.count_diff
        result[key] = [{"site": site, "bytes": size / count, "blocks": blocks[site] / count}
                       for site, size in grew.most_common(top)]
    return result


def _site(tb: tracemalloc.Traceback) -> str:
    """The innermost frame in fastrpc, else the innermost frame: "file:line"."""
    frames = list(tb)  # most recent call last
    for frame in reversed(frames):
        if "/fastrpc/" in frame.filename:
            return f"{_short(frame.filename)}:{frame.lineno}"
    frame = frames[-1]
    return f"{_short(frame.filename)}:{frame.lineno}"


def _short(filename: str) -> str:
    for marker in ("/fastrpc/", "/bench/", "/lib/python"):
        at = filename.rfind(marker)
        if at >= 0:
            return filename[at + 1:]
    return filename


def rss_split(url: str) -> dict[str, Any]:
    """RSS growth per connection without tracemalloc: thread stacks and the rest."""
    from fastrpc.amqp.connection import Connection

    amqp_url = "amqp" + url[url.index("://"):]
    warm = Connection(amqp_url)
    warm.connect()
    warm.channel()
    gc.collect()
    before = _resident()
    conns = common.open_connections(Connection, amqp_url, CONNECTIONS)
    gc.collect()
    after = _resident()
    for c in [warm, *conns]:
        c.close()
    return {"connections": CONNECTIONS,
            "stacks_bytes": (after["stacks"] - before["stacks"]) / CONNECTIONS,
            "other_bytes": (after["other"] - before["other"]) / CONNECTIONS}


def _resident() -> dict[str, int]:
    """Resident bytes of thread stacks (anonymous mappings of the stack size) and of the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    stack_size = soft if soft != resource.RLIM_INFINITY else 2 << 20  # what glibc gives threads then
    out = {"stacks": 0, "other": 0}
    kind = "other"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                anonymous = len(head) == 5
                kind = "stacks" if anonymous and end - start == stack_size and head[1].startswith("rw") else "other"
            elif head[0] == "Rss:":
                out[kind] += int(head[1]) * 1024
    return out


# -- orchestration -----------------------------------------------------------------

def child(mode: str, url: str, topic: str, top: int, pure: bool) -> dict[str, Any]:
    return common.run_json(common.python_cmd("memory.py", "--child", mode, "--url", url, "--topic", topic,
                                             "--top", str(top)),
                           env=common.python_env(no_extensions=pure), what=f"memory {mode}", timeout=180)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=0, help="list the N allocation sites behind each figure")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--child", choices=("attribute", "rss"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "attribute":
        print(json.dumps(attribute(args.url, args.topic, args.top)), flush=True)
        return 0
    if args.child == "rss":
        print(json.dumps(rss_split(args.url)), flush=True)
        return 0
    if args.top < 0:
        p.error("--top must not be negative")

    builds = (("compiled", False), ("pure Python", True))
    results: dict[str, Any] = {}
    with common.broker() as b:
        url = b.transport_url("fastrpc")
        for name, pure in builds:
            common.info(f"{name}: memory")
            topic = f"bench_mem_{uuid.uuid4().hex[:8]}"
            figures = common.run_json(common.python_cmd("rpc_scenarios.py", "--memory", "--url", url, "--topic", topic),
                                      env=common.python_env(no_extensions=pure), what=f"{name} memory", timeout=120)
            entry: dict[str, Any] = {"figures": figures, "rss_split": child("rss", url, topic, 0, pure)}
            if args.top:
                entry["sites"] = child("attribute", url, f"bench_mem_{uuid.uuid4().hex[:8]}", args.top, pure)
            results[name] = entry

    fmt = common.format_markdown if args.markdown else common.format_table
    rows = []
    for name, _ in builds:
        f = results[name]["figures"]
        rows.append([f"per connection ({f['connections']} opened), {name}",
                     f"{f['connection_heap_bytes'] / 1024:.1f} KiB", f"{f['connection_rss_bytes'] / 1024:.1f} KiB"])
        rows.append([f"per in-flight call ({f['inflight_calls']} waiting), {name}",
                     f"{f['inflight_heap_bytes'] / 1024:.2f} KiB", f"{f['inflight_rss_bytes'] / 1024:.2f} KiB"])
    print(fmt(["fastrpc memory", "Python heap (tracemalloc)", "RSS delta"], rows))
    print()
    print(fmt(["RSS per connection, no tracemalloc", "thread stacks", "everything else"], [
        [name, f"{results[name]['rss_split']['stacks_bytes'] / 1024:.1f} KiB",
         f"{results[name]['rss_split']['other_bytes'] / 1024:.1f} KiB"] for name, _ in builds]))
    if args.top:
        for name, _ in builds:
            for key, label in PHASES:
                print()
                print(fmt([f"{label}, {name}: where the heap grew", "bytes", "blocks"], [
                    [s["site"], f"{s['bytes']:,.0f}", f"{s['blocks']:.2f}"] for s in results[name]["sites"][key]]))
    common.write_json(args.json, {"benchmark": "memory", "results": results})
    return 0


if __name__ == "__main__":
    common.run_main(main, "memory")
