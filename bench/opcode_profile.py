"""Where a sequential call's Python runs: bytecodes per call on each side, by
package and by function.

callgrind (``call_cost.py``) counts every instruction but cannot say which
Python function ran them; this counts the bytecodes the interpreter executes
(``sys.settrace`` opcode events, installed before anything else in the
process, on every thread), grouped by the package of the code object, so
oslo.messaging's own layers, fastrpc's driver, the connection layer and the
standard library (threading, queue) read apart. Compiled code (the codecs,
the connection layer in the compiled build, orjson) runs no bytecodes and does
not show: this is the interpreted part only.

Like ``call_cost.py``, each side is counted with N1 and N2 sequential calls
and the difference divided by N2 - N1, so start-up, warm-up and shutdown
cancel out. Contenders: ``fastrpc`` (its own API) and ``oslo-fastrpc``
(oslo.messaging's API on the ``fastrpc://`` driver), and ``oslo`` (its rabbit
driver) with ``--libs``. Servers use ``--executor`` (threading by default).

    python bench/opcode_profile.py [--libs fastrpc,oslo-fastrpc] [--calls 100,600]
        [--executor threading] [--top 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PROFILE_TIMEOUT = 600.0  # tracing every opcode runs Python 20-50x slower
LIBS = ("fastrpc", "oslo-fastrpc", "oslo")

# Package groups, first match wins (by the code object's file path).
GROUPS = (
    ("oslo_messaging", "oslo.messaging"),
    ("oslo_context", "oslo.context"),
    ("oslo_config", "oslo.config"),
    ("oslo_utils", "oslo.utils"),
    ("futurist", "futurist"),
    ("kombu", "kombu"),
    ("amqp/", "py-amqp"),  # checked after fastrpc/amqp below by order of GROUPS_FASTRPC
)
GROUPS_FASTRPC = (
    ("fastrpc/oslo_driver", "fastrpc: oslo driver"),
    ("fastrpc/drivers", "fastrpc: AMQP driver"),
    ("fastrpc/amqp", "fastrpc: connection layer"),
    ("fastrpc/", "fastrpc: RPC layer"),
)


def group_of(filename: str) -> str:
    for needle, name in GROUPS_FASTRPC:
        if needle in filename:
            return name
    for needle, name in GROUPS:
        if needle in filename:
            return name
    if "/bench/" in filename:
        return "benchmark harness"
    if "site-packages" in filename:
        return "other packages"
    return "standard library"


class OpcodeCounter:
    """Counts opcode events per code object on every thread started after ``install``."""

    def __init__(self) -> None:
        self.counts: collections.Counter[Any] = collections.Counter()

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            self.counts[frame.f_code] += 1
        return self._local

    def _global(self, frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._local

    def install(self) -> None:
        threading.settrace(self._global)
        sys.settrace(self._global)

    def remove(self) -> None:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]

    def dump(self, path: str) -> None:
        by_function: dict[str, int] = collections.Counter()
        for code, n in self.counts.items():
            by_function[f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}"] += n
        Path(path).write_text(json.dumps(by_function))


def _short(key: str) -> str:
    filename, line, name = key.rsplit(":", 2)
    for marker in ("site-packages/", "/fastrpc/", "/bench/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1] if marker != "/fastrpc/" else "fastrpc/" + filename.split(
                marker, 1)[1]
            break
    return f"{name} ({filename}:{line})"


# -- the profiled processes ---------------------------------------------------------

def profiled_server(lib: str, url: str, topic: str, executor: str, out: str) -> int:
    counter = OpcodeCounter()
    counter.install()
    from bench.rpc_scenarios import serve

    try:
        return serve(lib, url, topic, executor)
    finally:
        counter.remove()
        counter.dump(out)


def profiled_client(lib: str, url: str, topic: str, calls: int, out: str) -> int:
    counter = OpcodeCounter()
    counter.install()
    from bench.rpc_scenarios import PAYLOAD, open_client

    transport, client = open_client(lib, url, topic)
    for _ in range(calls):
        if client.call({}, "echo", payload=PAYLOAD) != PAYLOAD:
            raise common.BenchError("echo returned a different payload")
    transport.cleanup()
    counter.remove()
    counter.dump(out)
    print(json.dumps({"calls": calls}), flush=True)
    sys.stdout.flush()
    os._exit(0)


# -- orchestration ------------------------------------------------------------------

def _url(b: common.Broker, lib: str) -> str:
    return b.transport_url("fastrpc" if lib in ("fastrpc", "oslo-fastrpc") else "rabbit")


def _load(path: str) -> collections.Counter[str]:
    return collections.Counter(json.loads(Path(path).read_text()))


def count_side(b: common.Broker, lib: str, side: str, calls: int, executor: str, workdir: str) -> Any:
    from bench.rpc_scenarios import Child

    url = _url(b, lib)
    env = common.python_env()
    topic = f"opcodes_{lib}_{uuid.uuid4().hex[:8]}"
    out = os.path.join(workdir, f"{lib}-{side}-{calls}.json")
    server_cmd = common.python_cmd("rpc_scenarios.py", "--serve", lib, "--url", url, "--topic", topic,
                                   "--executor", executor)
    client_cmd = common.python_cmd("opcode_profile.py", "--profile-client", lib, "--url", url, "--topic", topic,
                                   "--calls", str(calls), "--out", out)
    if side == "server":
        server_cmd = common.python_cmd("opcode_profile.py", "--profile-server", lib, "--url", url, "--topic", topic,
                                       "--executor", executor, "--out", out)
        client_cmd = common.python_cmd("call_cost.py", "--count-client", "fastrpc" if lib == "fastrpc" else "oslo",
                                       "--url", url, "--topic", topic, "--calls", str(calls))
    server = Child(server_cmd, env, f"{lib} {side} server", ready_timeout=PROFILE_TIMEOUT)
    try:
        common.run_json(client_cmd, env=env, what=f"{lib} {side} client", timeout=PROFILE_TIMEOUT)
    except BaseException:
        server.kill()
        raise
    server.stop(timeout=PROFILE_TIMEOUT)
    return _load(out)


def per_call(low: collections.Counter[str], high: collections.Counter[str], calls: int) -> dict[str, float]:
    keys = set(low) | set(high)
    return {k: (high[k] - low[k]) / calls for k in keys if high[k] - low[k] > 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--libs", default="fastrpc,oslo-fastrpc", help=f"comma-separated, of {', '.join(LIBS)}")
    p.add_argument("--calls", default="100,600", help="the two call counts N1,N2 (default 100,600)")
    p.add_argument("--executor", default="threading", choices=("threading", "blocking"))
    p.add_argument("--top", type=int, default=15, help="functions listed per side (default 15)")
    p.add_argument("--json", metavar="FILE", help="write the per-call counts as JSON")
    p.add_argument("--profile-server", choices=LIBS, help=argparse.SUPPRESS)
    p.add_argument("--profile-client", choices=LIBS, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.profile_server:
        return profiled_server(args.profile_server, args.url, args.topic, args.executor, args.out)
    if args.profile_client:
        return profiled_client(args.profile_client, args.url, args.topic, int(args.calls), args.out)
    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    if not libs or any(lib not in LIBS for lib in libs):
        p.error(f"--libs takes {', '.join(LIBS)}")
    low, high = common.call_counts(p, args.calls)

    results: dict[str, dict[str, dict[str, float]]] = {}
    with common.broker() as b, tempfile.TemporaryDirectory(prefix="fastrpc-opcodes-") as workdir:
        for lib in libs:
            for side in ("client", "server"):
                common.info(f"counting the bytecodes of {lib}'s {side}")
                counts = [count_side(b, lib, side, n, args.executor, workdir) for n in (low, high)]
                results[f"{lib} {side}"] = per_call(counts[0], counts[1], high - low)

    for name, functions in results.items():
        groups: collections.Counter[str] = collections.Counter()
        for key, n in functions.items():
            groups[group_of(key.rsplit(":", 2)[0])] += n
        total = sum(groups.values())
        print(f"\n{name}: {total:,.0f} bytecodes per call")
        print(common.format_table(["package", "per call", "share"],
                                  [[g, f"{n:,.0f}", f"{n / total:.0%}"] for g, n in groups.most_common()]))
        top = sorted(functions.items(), key=lambda item: -item[1])[: args.top]
        print(common.format_table(["function", "per call"], [[_short(k), f"{n:,.0f}"] for k, n in top]))
    common.write_json(args.json, {"calls": [low, high], "executor": args.executor, "bytecodes_per_call": results})
    return 0


if __name__ == "__main__":
    common.run_main(main, "opcode_profile.py")
