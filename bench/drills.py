"""Failure drills: what a dead, hung or cut-off RabbitMQ node costs RPC callers.

One 3-node cluster (``fastrpc.testing.RabbitCluster``, partition handling
``pause_minority``, net_ticktime 60 unless ``--net-ticktime`` says otherwise)
serves every contender in turn, in the same run:

* ``oslo``: oslo.messaging's own rabbit driver (``rabbit://``, oslo defaults);
* ``oslo-fastrpc``: oslo.messaging's API on fastrpc (``fastrpc://``, oslo's
  default options: a service that changes only its URL);
* ``fastrpc``: fastrpc's own API with its defaults;
* ``fastrpc-quorum``: the same with ``rabbit_quorum_queue=true`` and
  ``rabbit_transient_quorum_queue=true`` in the URL;
* ``fastrpc-quorum-casts`` (optional): numbered casts with
  ``TransportOptions(at_least_once=True)`` over quorum queues; the server
  reports each number it handles, so lost and duplicated casts are counted.

Each drill runs one RPC server and one client, each in a child process of its
own, both connected to node 1 (the URL lists node 1 first). The client calls
every 0.2 s with a 5 s timeout and reports every call (start, end, outcome),
every change of its connections' health (fastrpc: ``health()``) and every
warning its libraries log. After a baseline, node 1 gets the fault:

* ``kill``: SIGKILL of the node (a crash, a power cut that resets sockets);
* ``freeze``: SIGSTOP of the node for ``--freeze-seconds`` (a hung VM: sockets
  open, nothing answers), then SIGCONT;
* ``cut_off``: the same freeze plus iptables DROP of its ports (the host
  vanished from the network: nothing answers, not even TCP).

The client goes on until it is healthy (10 consecutive successful calls) or
``--observe-seconds`` passed; a freeze or cut off ends at ``--freeze-seconds``
or once the client is healthy, whichever comes first. Then both processes are
killed and the cluster restored (node restarted, thawed, partitions healed)
before the next drill.

Per drill: when the client abandoned its dead connection, when the first call
started after the fault succeeded, when it became healthy, how many calls
failed or ended past their deadline (timeout + 1 s), how many reconnect
attempts its health reported, and when nodes 2 and 3 declared node 1 down
(their logs). ``--markdown`` prints a table (p50 / p99 over repeats), ``--json``
writes every drill and every call.

Needs root (iptables) and the Debian rabbitmq-server package; ``make drills``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CONTENDERS = ("oslo", "oslo-fastrpc", "fastrpc", "fastrpc-quorum", "fastrpc-quorum-casts")
DEFAULT_CONTENDERS = ("oslo", "oslo-fastrpc", "fastrpc", "fastrpc-quorum")
FAULTS = ("kill", "freeze", "cut_off")
LABELS = {
    "oslo": "oslo.messaging (rabbit://)",
    "oslo-fastrpc": "oslo.messaging on fastrpc://",
    "fastrpc": "fastrpc",
    "fastrpc-quorum": "fastrpc, quorum queues",
    "fastrpc-quorum-casts": "fastrpc, quorum, at-least-once casts",
}
QUORUM_QUERY = "rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true"
HEALTHY_RUN = 10  # consecutive successes that make a client healthy
BASELINE = 2.0  # seconds of calls before the fault
DRAIN = 10.0  # seconds the casts drill waits for casts still under way


# -- child processes: RPC server and client ------------------------------------------------

_OUT_LOCK = threading.Lock()


def emit(**event: Any) -> None:
    line = json.dumps(event, default=str)
    with _OUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _die_with_parent() -> None:
    """SIGKILL this process when the drill runner dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)


class _Events(logging.Handler):
    """Every warning the libraries log, as an event with its time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            emit(ev="log", t=time.monotonic(), level=record.levelname, name=record.name,
                 msg=record.getMessage()[:300])
        except Exception:  # never let logging break the drill
            pass


# The libraries whose log lines are reported (INFO and above: oslo's rabbit
# driver says at INFO level that it lost and re-established a connection).
_LOGGERS = ("oslo.messaging", "oslo_messaging", "kombu", "amqp", "fastrpc")


def _setup_logging() -> None:
    warnings.simplefilter("ignore")
    logging.getLogger().setLevel(logging.WARNING)
    handler = _Events()
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if os.environ.get("DRILLS_DEBUG") else logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)


class _KeepOrder:
    """``random`` for oslo's rabbit driver, without its shuffle of the hosts."""

    def __getattr__(self, name: str) -> Any:
        import random

        return getattr(random, name)

    @staticmethod
    def shuffle(items: list[Any]) -> None:
        pass


def make_transport(lib: str, url: str) -> tuple[Any, Any]:
    if lib.startswith("oslo"):
        import oslo_messaging as om
        from oslo_config import cfg

        if lib == "oslo":
            # oslo's rabbit driver shuffles a URL's hosts for every connection;
            # the drills keep their order so that its server and client start
            # on node 1 like the other contenders' (kombu's round-robin then
            # fails over to node 2, then 3).
            from oslo_messaging._drivers import impl_rabbit

            impl_rabbit.random = _KeepOrder()
        cfg.CONF([], project="fastrpc-drills")
        return om, om.get_rpc_transport(cfg.CONF, url=url)
    import fastrpc

    return fastrpc, fastrpc.get_rpc_transport(url=url)


def _health_source(lib: str, transport: Any) -> Any:
    """A callable returning fastrpc's health list, or None (oslo's own driver has none)."""
    if lib == "oslo":
        return None
    if lib == "oslo-fastrpc":
        return transport._driver._driver.health  # oslo Transport -> fastrpc OsloDriver -> AmqpDriver
    return transport.health


def _watch_health(source: Any, stop: threading.Event) -> None:
    """Report each change of the connections' health (state, host, attempt)."""
    offset = time.time() - time.monotonic()
    last: Any = None
    while not stop.wait(0.05):
        try:
            links = source()
        except Exception as exc:
            links = [{"name": "?", "state": "error", "error": repr(exc)}]
        key = [(x.get("name"), x.get("state"), x.get("host"), x.get("attempt")) for x in links]
        if key != last:
            last = key
            for x in links:
                if x.get("since") is not None:
                    x["since"] = x["since"] - offset  # as monotonic time
            emit(ev="health", t=time.monotonic(), links=links)


class DrillEndpoint:
    def echo(self, ctxt: Any, n: int) -> int:
        return n

    def hit(self, ctxt: Any, n: int) -> None:
        emit(ev="hit", t=time.monotonic(), n=n)


def child_server(lib: str, url: str, topic: str) -> int:
    _setup_logging()
    mod, transport = make_transport(lib, url)
    server = mod.get_rpc_server(transport, mod.Target(topic=topic, server="drill-server"), [DrillEndpoint()],
                                executor="threading")
    server.start()
    stop = threading.Event()
    source = _health_source(lib, transport)
    if source is not None:
        threading.Thread(target=_watch_health, args=(source, stop), daemon=True).start()
    emit(ev="ready", t=time.monotonic())
    sys.stdin.read()  # the runner kills us or closes stdin
    return 0


def _outcome(exc: BaseException) -> str:
    name = type(exc).__name__
    return "timeout" if name == "MessagingTimeout" else name


def child_client(lib: str, url: str, topic: str, timeout: float, interval: float, casts: bool) -> int:
    _setup_logging()
    mod, transport = make_transport(lib, url)
    options = None
    if casts:
        options = mod.TransportOptions(at_least_once=True)
    client = mod.get_rpc_client(transport, mod.Target(topic=topic), timeout=timeout, transport_options=options)
    # Warm up: the server's queue exists and a call goes through.
    deadline = time.monotonic() + 60
    while True:
        try:
            client.call({}, "echo", n=-1)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    stop = threading.Event()
    source = _health_source(lib, transport)
    if source is not None:
        threading.Thread(target=_watch_health, args=(source, stop), daemon=True).start()
    emit(ev="ready", t=time.monotonic())
    n = 0
    while True:
        start = time.monotonic()
        try:
            if casts:
                client.cast({}, "hit", n=n)
            else:
                if client.call({}, "echo", n=n) != n:
                    raise RuntimeError("wrong answer")
            outcome, error = "ok", None
        except Exception as exc:
            outcome, error = _outcome(exc), str(exc)[:200]
        end = time.monotonic()
        emit(ev="call", n=n, start=start, end=end, outcome=outcome, error=error)
        n += 1
        pause = start + interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)


# -- the runner's side -----------------------------------------------------------------------

class ChildProcess:
    """A child process whose JSON lines (events) are collected as they come;
    its stderr goes to ``logfile``."""

    def __init__(self, role: str, cmd: list[str], logfile: Path) -> None:
        self.role = role
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._stderr = open(logfile, "w")  # noqa: SIM115 (closed in kill())
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=common.python_env(), text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("ev") == "ready":
                self.ready.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise common.BenchError(f"the {self.role} did not start (see {self._stderr.name})")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("ev") == kind]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        self._reader.join(5)
        self._stderr.close()


class Child(ChildProcess):
    """A drill's RPC server or client."""

    def __init__(self, role: str, contender: str, url: str, topic: str, args: argparse.Namespace,
                 logdir: Path) -> None:
        lib = "fastrpc" if contender.startswith("fastrpc") else contender
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", role, "--lib", lib, "--url", url,
               "--topic", topic, "--timeout", str(args.timeout), "--interval", str(args.interval)]
        if contender.endswith("-casts"):
            cmd.append("--casts")
        super().__init__(role, cmd, logdir / f"{topic}-{role}.log")


class DownWatch:
    """When nodes 2.. log that node 1 is down (read from their log files)."""

    def __init__(self, cluster: Any, i: int) -> None:
        self.name = cluster.nodes[i].nodename
        self.files = [n.log_file for j, n in enumerate(cluster.nodes) if j != i]
        self.offsets = {f: (f.stat().st_size if f.exists() else 0) for f in self.files}
        self.first: float | None = None
        self.lines: list[str] = []
        self._pattern = re.compile(re.escape(self.name) + r".*\bdown\b|\bdown\b.*" + re.escape(self.name))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2) and self.first is None:
            for f in self.files:
                try:
                    with open(f, errors="replace") as fh:
                        fh.seek(self.offsets[f])
                        text = fh.read()
                        self.offsets[f] = fh.tell()
                except OSError:
                    continue
                for line in text.splitlines():
                    if self._pattern.search(line):
                        self.lines.append(line.strip()[:300])
                        if self.first is None:
                            self.first = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def vhost(contender: str) -> str:
    """Each contender has a virtual host of its own: exchanges declared
    durable (quorum queues) or not by one do not clash with another's."""
    return "drills-" + contender


def add_vhosts(cluster: Any, contenders: list[str]) -> None:
    node = cluster.nodes[0]
    for contender in contenders:
        node.ctl("add_vhost", vhost(contender))
        node.ctl("set_permissions", "-p", vhost(contender), "guest", ".*", ".*", ".*")


def contender_url(cluster: Any, contender: str) -> str:
    base = cluster.url + vhost(contender)  # amqp://guest:guest@node1,node2,node3/vhost : node 1 first
    if contender == "oslo":
        return "rabbit" + base[base.index("://"):]
    url = "fastrpc" + base[base.index("://"):]
    if "quorum" in contender:
        url += "?" + QUORUM_QUERY
    return url


def healthy_index(calls: list[dict[str, Any]], timeout: float) -> int | None:
    """Index of the first call of the first run of HEALTHY_RUN successes
    (a call that answered past its deadline is no success for its caller)."""
    run = 0
    for k, c in enumerate(calls):
        run = run + 1 if c["outcome"] == "ok" and c["end"] - c["start"] <= timeout + 1.0 else 0
        if run == HEALTHY_RUN:
            return k - HEALTHY_RUN + 1
    return None


def apply_fault(cluster: Any, fault: str) -> None:
    {"kill": cluster.kill, "freeze": cluster.freeze, "cut_off": cluster.cut_off}[fault](0)


def end_fault(cluster: Any, fault: str) -> None:
    if fault == "freeze":
        cluster.thaw(0)
    elif fault == "cut_off":
        cluster.reconnect(0)


def run_drill(cluster: Any, contender: str, fault: str, repeat: int, args: argparse.Namespace,
              logdir: Path, children: list[Child]) -> dict[str, Any]:
    topic = f"drill-{contender}-{fault}-{repeat}-{secrets.token_hex(3)}"
    url = contender_url(cluster, contender)
    common.info(f"-- {contender} / {fault} / repeat {repeat + 1}")
    server = Child("server", contender, url, topic, args, logdir)
    children.append(server)
    server.wait_ready(90)
    client = Child("client", contender, url, topic, args, logdir)
    children.append(client)
    client.wait_ready(90)
    time.sleep(BASELINE)

    t_fault = time.monotonic()
    apply_fault(cluster, fault)
    watch = DownWatch(cluster, 0)
    t_thaw: float | None = None
    try:
        while True:
            now = time.monotonic()
            after = [c for c in client.of("call") if c["start"] >= t_fault]
            if healthy_index(after, args.timeout) is not None:
                break
            if now - t_fault >= args.observe_seconds:
                break
            if fault != "kill" and t_thaw is None and now - t_fault >= args.freeze_seconds:
                end_fault(cluster, fault)
                t_thaw = time.monotonic()
                common.info(f"   node 1 thawed after {t_thaw - t_fault:.1f} s")
            time.sleep(0.1)
        t_end = time.monotonic()
        if contender.endswith("-casts"):
            # Let casts still queued reach the server before counting.
            sent = {c["n"] for c in client.of("call") if c["outcome"] == "ok"}
            drain = time.monotonic() + DRAIN
            while time.monotonic() < drain and not sent <= {h["n"] for h in server.of("hit")}:
                time.sleep(0.2)
    finally:
        client.kill()
        server.kill()
        watch.stop()
    result = measure(contender, fault, repeat, args, client, server, watch, t_fault, t_thaw, t_end)
    common.info("   " + ", ".join(f"{k}={v}" for k, v in result["metrics"].items()))
    return result


def _rel(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 2)


def _link_lost(events: list[dict[str, Any]], t_fault: float, sender_only: bool) -> tuple[float | None, int]:
    """(when the first link left "connected" after the fault, most attempts any link reported)."""
    lost: float | None = None
    attempts = 0
    for e in events:
        links = e["links"][:1] if sender_only else e["links"]
        for x in links:
            if e["t"] < t_fault:
                continue
            attempts = max(attempts, int(x.get("attempt") or 0))
            if x.get("state") != "connected" and lost is None:
                lost = x.get("since") or e["t"]
                lost = max(lost, t_fault)
    return lost, attempts


def measure(contender: str, fault: str, repeat: int, args: argparse.Namespace, client: Child, server: Child,
            watch: DownWatch, t_fault: float, t_thaw: float | None, t_end: float) -> dict[str, Any]:
    calls = sorted(client.of("call"), key=lambda c: c["n"])
    touched = [c for c in calls if c["end"] >= t_fault]
    after = [c for c in calls if c["start"] >= t_fault]
    failed = [c for c in touched if c["outcome"] != "ok"]
    late = [c for c in calls if c["end"] - c["start"] > args.timeout + 1.0]
    first_ok = next((c for c in after if c["outcome"] == "ok"), None)
    k = healthy_index(after, args.timeout)
    healthy = after[k]["start"] if k is not None else None
    outcomes: dict[str, int] = {}
    for c in failed:
        outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1

    client_logs = [e for e in client.of("log") if e["t"] >= t_fault]
    if contender == "oslo":
        # oslo's driver has no health report: its first log line after the
        # fault (a lost connection, missed heartbeats, a reconnect) is when it
        # gave up on the connection.
        abandoned = client_logs[0]["t"] if client_logs else None
        # Each failed reconnect attempt logs "... is unreachable" (any of the
        # client's connections: the reply listener's and the sender's).
        attempts: int | None = sum(1 for e in client_logs if "is unreachable" in e["msg"])
    else:
        abandoned, attempts = _link_lost(client.of("health"), t_fault, sender_only=True)
        # A reconnect quicker than the health poll shows no "reconnecting"
        # state: the log line of the loss has the time as well.
        lost_lines = [e["t"] for e in client_logs if "lost the connection" in e["msg"]]
        if lost_lines and (abandoned is None or lost_lines[0] < abandoned):
            abandoned = lost_lines[0]
    server_lost, server_attempts = _link_lost(server.of("health"), t_fault, sender_only=False)
    metrics: dict[str, Any] = {
        "abandoned_s": _rel(abandoned, t_fault),
        "first_ok_s": _rel(first_ok["end"] if first_ok else None, t_fault),
        "healthy_s": _rel(healthy, t_fault),
        "failed": len(failed),
        "past_deadline": len(late),
        "max_call_s": round(max((c["end"] - c["start"] for c in touched), default=0.0), 2),
        "attempts": attempts,
        "server_abandoned_s": None if contender == "oslo" else _rel(server_lost, t_fault),
        "server_attempts": None if contender == "oslo" else server_attempts,
        "cluster_down_s": _rel(watch.first, t_fault),
        "thawed_s": _rel(t_thaw, t_fault),
        "observed_s": round(t_end - t_fault, 2),
    }
    if contender.endswith("-casts"):
        sent = [c["n"] for c in calls if c["outcome"] == "ok"]
        hits = [h["n"] for h in server.of("hit") if h["n"] >= 0]
        counts: dict[int, int] = {}
        for n in hits:
            counts[n] = counts.get(n, 0) + 1
        metrics["lost"] = sum(1 for n in sent if n not in counts)
        metrics["duplicated"] = sum(v - 1 for v in counts.values() if v > 1)
    return {
        "contender": contender,
        "fault": fault,
        "repeat": repeat,
        "metrics": metrics,
        "failed_outcomes": outcomes,
        "client_log": [dict(e, t=round(e["t"] - t_fault, 2)) for e in client.of("log")[:40]],
        "server_log": [dict(e, t=round(e["t"] - t_fault, 2)) for e in server.of("log")[:40]],
        "cluster_log": watch.lines[:5],
        "calls": [dict(n=c["n"], start=round(c["start"] - t_fault, 3), end=round(c["end"] - t_fault, 3),
                       outcome=c["outcome"], **({"error": c["error"]} if c["error"] else {}))
                  for c in calls],
    }


# -- summary ---------------------------------------------------------------------------------

COLUMNS = [
    ("abandoned_s", "dead connection abandoned (s)"),
    ("first_ok_s", "first success (s)"),
    ("healthy_s", "healthy (s)"),
    ("failed", "failed calls"),
    ("past_deadline", "calls past deadline"),
    ("max_call_s", "longest call (s)"),
    ("attempts", "reconnect attempts"),
    ("cluster_down_s", "cluster declared node down (s)"),
    ("thawed_s", "fault ended (s)"),
]


def _stat(values: list[Any], repeats: int) -> str:
    if any(v is None for v in values):
        missing = sum(1 for v in values if v is None)
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        suffix = f" ({missing} none)"
    else:
        suffix = ""
    ordered = sorted(values)
    p50 = common.percentile(ordered, 0.5)
    p99 = common.percentile(ordered, 0.99)
    fmt = (lambda v: f"{v:.1f}") if any(isinstance(v, float) for v in ordered) else (lambda v: str(v))
    if repeats > 1:
        return f"{fmt(p50)} / {fmt(p99)}{suffix}"
    return fmt(p50) + suffix


def summarize(results: list[dict[str, Any]], repeats: int) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["contender"], r["fault"]), []).append(r["metrics"])
    rows = []
    for (contender, fault), ms in groups.items():
        row: dict[str, Any] = {"contender": contender, "fault": fault, "repeats": len(ms)}
        for key in {k for m in ms for k in m}:
            row[key] = _stat([m.get(key) for m in ms], repeats)
        row["targets"] = targets(contender, fault, ms)
        rows.append(row)
    return rows


def targets(contender: str, fault: str, ms: list[dict[str, Any]]) -> dict[str, bool]:
    """The issue's targets, for every repeat (False when one misses)."""
    out: dict[str, bool] = {}

    def every(check: Any) -> bool:
        return all(check(m) for m in ms)

    if fault == "kill":
        out["kill: 0 failed calls"] = every(lambda m: m["failed"] == 0)
        out["kill: healthy within 3 s"] = every(lambda m: m["healthy_s"] is not None and m["healthy_s"] <= 3)
    else:
        out[f"{fault}: 0 calls past their deadline"] = every(lambda m: m["past_deadline"] == 0)
        out[f"{fault}: dead connection abandoned within 10 s"] = every(
            lambda m: m["abandoned_s"] is not None and m["abandoned_s"] <= 10)
        if "quorum" in contender:
            out[f"{fault}: quorum queues healthy within 15 s"] = every(
                lambda m: m["healthy_s"] is not None and m["healthy_s"] <= 15)
        else:
            out[f"{fault}: classic queues healthy within 10 s of the cluster declaring the node down"] = every(
                lambda m: m["healthy_s"] is not None and m["cluster_down_s"] is not None
                and m["healthy_s"] <= m["cluster_down_s"] + 10)
    return out


def markdown(rows: list[dict[str, Any]], repeats: int) -> str:
    casts = any("lost" in r for r in rows)
    cols = COLUMNS + ([("lost", "casts lost"), ("duplicated", "casts duplicated")] if casts else [])
    head = ["contender", "fault", *[title for _, title in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [LABELS.get(r["contender"], r["contender"]), r["fault"], *[r.get(k, "-") for k, _ in cols]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    lines.append("Seconds from the fault. '-': did not happen while observed (fault ended: the node was "
                 "thawed / reconnected at the end of the freeze, before the client was healthy).")
    if repeats > 1:
        lines.append(f"Each cell: p50 / p99 over {repeats} repeats (nearest rank).")
    lines.append("Targets (met in every repeat?):")
    lines.append("")
    for r in rows:
        for name, ok in r["targets"].items():
            lines.append(f"- {LABELS.get(r['contender'], r['contender'])}, {name}: "
                         f"{'met' if ok else 'NOT met'}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------

def _split(value: str, allowed: tuple[str, ...]) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    for v in items:
        if v not in allowed:
            raise argparse.ArgumentTypeError(f"{v!r} is not one of {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contenders", type=lambda v: _split(v, CONTENDERS), default=list(DEFAULT_CONTENDERS),
                   help=f"comma-separated, of {', '.join(CONTENDERS)} (default: {','.join(DEFAULT_CONTENDERS)})")
    p.add_argument("--faults", type=lambda v: _split(v, FAULTS), default=list(FAULTS),
                   help=f"comma-separated, of {', '.join(FAULTS)} (default: all)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--freeze-seconds", type=float, default=90.0,
                   help="how long a freeze or cut off lasts at most (default 90; it ends earlier once the "
                        "client is healthy)")
    p.add_argument("--observe-seconds", type=float, default=180.0,
                   help="how long the client is watched after the fault at most (default 180)")
    p.add_argument("--timeout", type=float, default=5.0, help="call timeout (default 5)")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between call starts (default 0.2)")
    p.add_argument("--net-ticktime", type=int, default=None, help="the cluster's net_ticktime (default: 60)")
    p.add_argument("--partition-handling", default="pause_minority")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--json", metavar="PATH", help="write every drill and call as JSON")
    p.add_argument("--logs", metavar="DIR", help="keep the children's stderr in DIR")
    p.add_argument("--child", choices=("server", "client"), help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--casts", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        _die_with_parent()
        if args.child == "server":
            return child_server(args.lib, args.url, args.topic)
        return child_client(args.lib, args.url, args.topic, args.timeout, args.interval, args.casts)
    return run(args)


def run(args: argparse.Namespace) -> int:
    from fastrpc.testing import RabbitCluster

    started = time.time()
    children: list[Child] = []
    results: list[dict[str, Any]] = []
    logdir = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="fastrpc-drills-"))
    logdir.mkdir(parents=True, exist_ok=True)
    # SIGTERM ends the run like Ctrl-C: through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    cluster = None
    try:
        common.info(f"starting a 3-node cluster (partition handling {args.partition_handling}, "
                    f"net_ticktime {args.net_ticktime or 60})")
        cluster = RabbitCluster(3, partition_handling=args.partition_handling, net_ticktime=args.net_ticktime,
                                management=False)
        version = cluster.nodes[0].ctl("eval", "rabbit_misc:version().").strip().strip('"')
        add_vhosts(cluster, args.contenders)
        nodes = [{"node": n.nodename, "amqp_port": n.port} for n in cluster.nodes]
        common.info(f"RabbitMQ {version} ready")
        for repeat in range(args.repeats):
            for contender in args.contenders:
                for fault in args.faults:
                    try:
                        results.append(run_drill(cluster, contender, fault, repeat, args, logdir, children))
                    except common.BenchError as exc:  # one drill that could not run; go on
                        common.info(f"   drill failed: {exc}")
                    finally:
                        for child in children:
                            child.kill()
                        children.clear()
                    common.info("   restoring the cluster")
                    cluster.restore()
    finally:
        for child in children:
            child.kill()
        if cluster is not None:
            cluster.stop()
        if not args.logs:
            import shutil

            shutil.rmtree(logdir, ignore_errors=True)
    rows = summarize(results, args.repeats)
    seconds = time.time() - started
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
            "rabbitmq": version,
            "nodes": nodes,
            "command": " ".join(sys.argv),
            "seconds": round(seconds),
            "options": {k: v for k, v in vars(args).items() if k not in ("child", "lib", "url", "topic", "casts")},
            "summary": rows,
            "drills": results,
        }, indent=1, default=str))
    if args.markdown:
        print(markdown(rows, args.repeats))
    else:
        for r in rows:
            print(json.dumps(r))
    common.info(f"done in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        common.run_main(main, "drills")
    except KeyboardInterrupt:
        sys.exit(130)
