"""Helpers shared by the benchmark runners: broker, C client, subprocesses, tables."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
C_SOURCE = ROOT / "bench" / "c_client" / "amqp_bench.c"
C_BINARY = ROOT / "bench" / "c_client" / "amqp_bench"
BENCH_URL_ENV = "FASTRPC_BENCH_URL"


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which one and why."""


def run_main(main: Callable[[], int], name: str) -> None:
    """Exit with ``main()``'s status; a BenchError is one line on stderr and status 1, not a traceback."""
    try:
        status = main()
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        status = 1
    sys.exit(status)


def call_counts(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """The two call counts N1,N2 of a ``--calls`` argument, 0 < N1 < N2; a
    usage error from ``parser`` otherwise."""
    try:
        low, high = (int(n) for n in text.split(","))
    except ValueError:
        parser.error("--calls takes two integers, N1,N2")
    if not 0 < low < high:
        parser.error("--calls needs 0 < N1 < N2")
    return low, high


@dataclass(frozen=True)
class Broker:
    """Where the benchmarks connect. ``repr`` hides the password."""

    url: str
    host: str
    port: int
    username: str
    password: str
    virtual_host: str
    # The Erlang VM's pid when the node is this run's own (its CPU time can
    # then be read from /proc); None for a broker named by FASTRPC_BENCH_URL.
    pid: int | None = None

    def __repr__(self) -> str:
        return f"Broker(host={self.host!r}, port={self.port}, user={self.username!r}, vhost={self.virtual_host!r})"

    def c_env(self) -> dict[str, str]:
        """Environment for the C client: credentials travel there, not in argv."""
        env = dict(os.environ)
        env.update(AMQP_BENCH_USER=self.username, AMQP_BENCH_PASSWORD=self.password,
                   AMQP_BENCH_VHOST=self.virtual_host)
        return env

    def transport_url(self, scheme: str = "rabbit") -> str:
        """The same broker as an oslo-style transport URL (``rabbit://`` or ``fastrpc://``)."""
        return scheme + self.url[self.url.index("://"):]


def broker_from_url(url: str) -> Broker:
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "rabbit", "fastrpc"):
        raise BenchError(f"{BENCH_URL_ENV} must be an amqp:// URL")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return Broker(
        url="amqp" + url[url.index("://"):],
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        username=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=vhost,
    )


@contextlib.contextmanager
def broker() -> Iterator[Broker]:
    """The broker in ``FASTRPC_BENCH_URL``, else a private throwaway node."""
    url = os.environ.get(BENCH_URL_ENV)
    if url:
        yield broker_from_url(url)
        return
    from fastrpc.testing import RabbitNode

    with tempfile.TemporaryDirectory(prefix="fastrpc-bench-") as workdir:
        info(f"starting a private RabbitMQ node in {workdir}")
        node = RabbitNode(workdir)
        try:
            yield dataclasses.replace(broker_from_url(node.url), pid=node.beam_pid())
        finally:
            node.stop()


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def c_client() -> Path:
    """Path of the compiled C client, building it when missing or older than its source."""
    if not C_BINARY.exists() or C_BINARY.stat().st_mtime < C_SOURCE.stat().st_mtime:
        cmd = ["cc", "-O2", "-Wall", "-pthread", "-o", str(C_BINARY), str(C_SOURCE), "-lrabbitmq"]
        info("building " + " ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"cannot build the C client (is librabbitmq-dev installed?):\n{done.stderr}")
    return C_BINARY


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise BenchError(f"no JSON result in output: {text[-500:]!r}")


def run_json(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 300,
             what: str = "") -> dict[str, Any]:
    """Run a benchmark step in a subprocess and return the JSON object it prints last."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what or cmd[0]} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{what or cmd[0]} failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")
    return last_json_line(done.stdout)


def python_cmd(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / script), *args]


def python_env(no_extensions: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if no_extensions:
        env["FASTRPC_NO_EXTENSIONS"] = "1"
    else:
        env.pop("FASTRPC_NO_EXTENSIONS", None)
    return env


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (``p`` in 0..1)."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(p * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_summary(latencies_s: list[float], seconds: float) -> dict[str, Any]:
    values = sorted(latencies_s)
    return {
        "n": len(values),
        "seconds": seconds,
        "rate": len(values) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(values, 0.50) * 1e3,
        "p99_ms": percentile(values, 0.99) * 1e3,
    }


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError("VmRSS not found in /proc/self/status")


def open_connections(connection_class: Any, amqp_url: str, count: int) -> list[Any]:
    """``count`` connections of ``connection_class`` (fastrpc's ``Connection``,
    imported by the caller before it measures) to ``amqp_url``, each with one
    channel open."""
    conns = []
    for _ in range(count):
        c = connection_class(amqp_url)
        c.connect()
        c.channel()
        conns.append(c)
    return conns


def fmt_rate(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"


def fmt_ratio(value: float | None, reference: float | None) -> str:
    if not value or not reference or math.isnan(value) or math.isnan(reference):
        return "-"
    return f"{value / reference:.2f}x"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def format_markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        info(f"results written to {path}")
