"""CPU instructions per sequential RPC call, client side and server side.

Counted with valgrind's callgrind, which counts instructions instead of
timing them: the figures do not move with the load of a shared machine, so
two versions (or fastrpc and the C client) compare exactly. Each side is
counted twice, with ``--calls`` N1 and N2 sequential calls of the 150-byte
echo used by ``rpc_scenarios.py``; (count(N2) - count(N1)) / (N2 - N1) is the
cost of one call, start-up and shutdown cancelling out. While one side is
counted the other runs normally. Time spent in the kernel (sends, receives)
is not counted: these are user-space instructions of the process.

Contenders: fastrpc with each of ``--executors``, oslo.messaging (rabbit
driver, threading executor; ``--skip-oslo`` leaves it out, it is slow under
valgrind) and the C request/reply pair (librabbitmq). ``--metrics`` adds
fastrpc with its metrics on (``?metrics=true`` in both sides' transport
URL) beside each executor, and prints what they cost per call.
``--msgpack`` adds fastrpc with msgpack bodies (``?serialization=msgpack``)
beside each executor.

``--syscalls`` counts system calls instead, with ``strace -f -c`` in place of
callgrind, the same way (N1 and N2 calls, the difference per call): how
often each process wakes and writes per call, by system call name.

    python bench/call_cost.py [--calls 200,1200] [--executors blocking,threading]
        [--skip-oslo] [--metrics] [--msgpack] [--syscalls] [--markdown] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.rpc_scenarios import PAYLOAD, Child, delete_queue, open_client, publish_stop

COUNT_TIMEOUT = 900.0  # valgrind runs Python 30-50x slower
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


# strace -c's summary line of one system call: % time, seconds, usecs/call,
# calls, [errors,] name.
_SYSCALL_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", re.MULTILINE)
# What is counted: "instructions" (callgrind) or "syscalls" (strace); --syscalls sets it.
COUNTING = "instructions"


def valgrind_cmd(cmd: list[str]) -> list[str]:
    """``cmd`` run under the counter: callgrind, or strace with --syscalls."""
    if COUNTING == "syscalls":
        exe = shutil.which("strace")
        if exe is None:
            raise common.BenchError("strace is not installed (Debian package: strace)")
        return [exe, "-f", "-c", *cmd]
    exe = shutil.which("valgrind")
    if exe is None:
        raise common.BenchError("valgrind is not installed (Debian package: valgrind)")
    return [exe, "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]


def instructions(stderr: str, what: str) -> Any:
    """The count in a counted process's stderr: its instructions, or (with
    --syscalls) its system calls by name."""
    if COUNTING == "syscalls":
        calls = {name: int(n) for n, name in _SYSCALL_LINE.findall(stderr) if name != "total"}
        if not calls:
            raise common.BenchError(f"{what}: no strace summary in its output: {stderr[-1000:]!r}")
        return calls
    found = _COLLECTED.findall(stderr)
    if not found:
        raise common.BenchError(f"{what}: no callgrind total in its output: {stderr[-1000:]!r}")
    return int(found[-1])


def run_counted(cmd: list[str], env: dict[str, str], what: str) -> int:
    """Instructions of a command that runs to its end by itself."""
    done = subprocess.run(valgrind_cmd(cmd), capture_output=True, text=True, env=env, timeout=COUNT_TIMEOUT)
    if done.returncode != 0:
        raise common.BenchError(f"{what} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return instructions(done.stderr, what)


def start_counted(cmd: list[str], env: dict[str, str], what: str, stop: Any = None) -> Child:
    return Child(valgrind_cmd(cmd), env, what, stop=stop, ready_timeout=COUNT_TIMEOUT)


def stop_counted(child: Child) -> int:
    """Stop a counted server and return its instructions."""
    return instructions(child.stop(timeout=COUNT_TIMEOUT), child.what)


def calls_client(lib: str, url: str, topic: str, calls: int) -> int:  # runs in its own process
    """Client process: warm up, then make ``calls`` sequential calls."""
    transport, client = open_client(lib, url, topic)
    for _ in range(calls):
        if client.call({}, "echo", payload=PAYLOAD) != PAYLOAD:
            raise common.BenchError("echo returned a different payload")
    transport.cleanup()
    print(json.dumps({"calls": calls}), flush=True)
    sys.stdout.flush()
    os._exit(0)


class LibSides:
    """A Python library (fastrpc with one executor, or oslo): its two sides counted."""

    def __init__(self, lib: str, b: common.Broker, executor: str, metrics: bool = False,
                 msgpack: bool = False) -> None:
        self.url = b.transport_url("fastrpc" if lib == "fastrpc" else "rabbit")
        query = (["metrics=true"] if metrics else []) + (["serialization=msgpack"] if msgpack else [])
        if query:
            self.url += "?" + "&".join(query)
        self.lib, self.executor = lib, executor
        self.env = common.python_env()
        self.what = f"{lib} ({executor})" + (" +metrics" if metrics else "") + (" msgpack" if msgpack else "")

    def _server_cmd(self, topic: str) -> list[str]:
        return common.python_cmd("rpc_scenarios.py", "--serve", self.lib, "--url", self.url, "--topic", topic,
                                 "--executor", self.executor)

    def _client_cmd(self, topic: str, calls: int) -> list[str]:
        return common.python_cmd("call_cost.py", "--count-client", self.lib, "--url", self.url, "--topic", topic,
                                 "--calls", str(calls))

    def client(self, calls: int) -> int:
        topic = f"cost_{self.lib}_{uuid.uuid4().hex[:8]}"
        server = Child(self._server_cmd(topic), self.env, f"{self.what} server")
        try:
            return run_counted(self._client_cmd(topic, calls), self.env, f"{self.what} counted client")
        finally:
            server.stop()

    def server(self, calls: int) -> int:
        topic = f"cost_{self.lib}_{uuid.uuid4().hex[:8]}"
        server = start_counted(self._server_cmd(topic), self.env, f"{self.what} counted server")
        try:
            common.run_json(self._client_cmd(topic, calls), env=self.env, what=f"{self.what} client",
                            timeout=COUNT_TIMEOUT)
        except BaseException:
            server.kill()
            raise
        return stop_counted(server)


class CSides:
    """The C request/reply pair (``amqp_bench rpc-server`` / ``rpc-call``)."""

    what = "C (librabbitmq)"

    def __init__(self, b: common.Broker) -> None:
        self.b = b
        self.exe = str(common.c_client())
        self.env = b.c_env()

    def _server(self, queue: str, counted: bool) -> Child:
        cmd = [self.exe, "rpc-server", self.b.host, str(self.b.port), queue]
        stop = lambda: publish_stop(self.b.url, queue)  # noqa: E731
        if counted:
            return start_counted(cmd, self.env, f"{self.what} counted server", stop)
        return Child(cmd, self.env, f"{self.what} server", stop=stop)

    def _client_cmd(self, queue: str, calls: int) -> list[str]:
        # N calls and no time limit (0).
        return [self.exe, "rpc-call", self.b.host, str(self.b.port), queue, str(calls), str(len(PAYLOAD)), "0"]

    def client(self, calls: int) -> int:
        queue = f"cost.c.{uuid.uuid4().hex[:12]}"
        server = self._server(queue, counted=False)
        try:
            return run_counted(self._client_cmd(queue, calls), self.env, f"{self.what} counted client")
        finally:
            server.stop()
            delete_queue(self.b.url, queue)

    def server(self, calls: int) -> int:
        queue = f"cost.c.{uuid.uuid4().hex[:12]}"
        server = self._server(queue, counted=True)
        try:
            common.run_json(self._client_cmd(queue, calls), env=self.env, what=f"{self.what} client",
                            timeout=COUNT_TIMEOUT)
            return stop_counted(server)
        except BaseException:
            server.kill()
            raise
        finally:
            delete_queue(self.b.url, queue)


def per_call(count: Any, low: int, high: int) -> Any:
    """(count(high) - count(low)) / (high - low); by name for system calls."""
    a, b = count(low), count(high)
    if isinstance(b, dict):
        return {name: (n - a.get(name, 0)) / (high - low) for name, n in b.items() if n > a.get(name, 0)}
    return (b - a) / (high - low)


def fmt_syscalls(calls: dict[str, float]) -> str:
    """The system calls of one call, most frequent first (those under 0.05 left out)."""
    shown = sorted(((n, name) for name, n in calls.items() if n >= 0.05), reverse=True)
    total = sum(calls.values())
    return ", ".join(f"{n:.2f} {name}" for n, name in shown) + f" (all: {total:.2f})"


def fmt(value: float) -> str:
    return f"{value / 1000:,.1f}k"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="200,1200", help="the two call counts N1,N2 (default 200,1200)")
    p.add_argument("--executors", default="blocking,threading", help="fastrpc executors to count")
    p.add_argument("--skip-oslo", action="store_true", help="leave oslo.messaging out")
    p.add_argument("--metrics", action="store_true", help="also count fastrpc with its metrics on")
    p.add_argument("--msgpack", action="store_true", help="also count fastrpc with msgpack bodies")
    p.add_argument("--syscalls", action="store_true", help="count system calls (strace) instead of instructions")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--count-client", choices=("fastrpc", "oslo"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.count_client:
        return calls_client(args.count_client, args.url, args.topic, int(args.calls))
    low, high = common.call_counts(p, args.calls)
    global COUNTING
    COUNTING = "syscalls" if args.syscalls else "instructions"
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    if not executors or any(e not in ("blocking", "threading") for e in executors):
        p.error("--executors takes blocking and/or threading")

    results: dict[str, dict[str, float]] = {}
    with common.broker() as b:
        contenders: list[Any] = [CSides(b)]
        for e in executors:
            contenders.append(LibSides("fastrpc", b, e))
            if args.metrics:
                contenders.append(LibSides("fastrpc", b, e, metrics=True))
            if args.msgpack:
                contenders.append(LibSides("fastrpc", b, e, msgpack=True))
        if not args.skip_oslo:
            contenders.append(LibSides("oslo", b, "threading"))
        for c in contenders:
            common.info(f"counting {c.what}")
            results[c.what] = {"client": per_call(c.client, low, high), "server": per_call(c.server, low, high)}

    if args.syscalls:
        rows = [[name, fmt_syscalls(r["client"]), fmt_syscalls(r["server"])] for name, r in results.items()]
        print((common.format_markdown if args.markdown else common.format_table)(
            ["contender", "client: system calls per call", "server: system calls per call"], rows))
        common.write_json(args.json, {"calls": [low, high], "syscalls_per_call": results})
        return 0
    c_total = results["C (librabbitmq)"]["client"] + results["C (librabbitmq)"]["server"]
    rows = []
    for name, r in results.items():
        total = r["client"] + r["server"]
        rows.append([name, fmt(r["client"]), fmt(r["server"]), fmt(total), f"{total / c_total:.1f}x"])
    header = ["contender", "client", "server", "client + server", "vs C"]
    print((common.format_markdown if args.markdown else common.format_table)(header, rows))
    for e in executors if args.metrics else []:
        off, on = results[f"fastrpc ({e})"], results[f"fastrpc ({e}) +metrics"]
        print(f"metrics on, {e}: " + ", ".join(
            f"{side} {on[side] - off[side]:+,.0f} instructions ({(on[side] / off[side] - 1) * 100:+.2f}%)"
            for side in ("client", "server")))
    common.write_json(args.json, {"calls": [low, high], "instructions_per_call": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
