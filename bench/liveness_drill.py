"""Service liveness drill: do services that report through a conductor stay
``up`` while a broker node dies, hangs or is cut off?

One throwaway 3-node RabbitMQ cluster (``fastrpc.testing.RabbitCluster``,
partition handling ``pause_minority``, net_ticktime 60 unless told). Per
drill, in child processes of their own:

* a conductor: it owns the registry (a SQLite file) and answers
  ``service_update``; its URL lists node 2 first, so its queue lives on a
  node that stays healthy (a hung node holding the conductor's queue stops
  every report until the cluster drops that node: docs/RELIABILITY.md);
* ten services in one process, each with a transport of its own (so
  connections of its own, as ten service processes would have), each with
  an RPC server on ``compute.<host>`` and a report every ``report_interval``
  (10 s) through the conductor. Service ``i``'s URL lists the nodes starting
  at node ``i mod 3 + 1``: four of them are on node 1.

Contenders:

* ``fastrpc``: ``fastrpc.service.Service`` with ``ConductorClient`` (each
  report a call with a 10 s timeout) and ``fastrpc.service.Conductor``, on
  fastrpc's transport with its defaults;
* ``oslo``: the same services written with oslo.messaging's API on its rabbit
  driver (oslo's defaults): an RPC server per service, the report an
  ``RPCClient.call('service_update')`` every 10 s with oslo's default timeout
  (60 s), as nova's conductor path does, and the conductor an oslo RPC
  server whose endpoint writes to the same kind of registry.

Once every service has reported twice, node 1 gets the fault (``kill``,
``freeze`` for ``--freeze-seconds``, ``cut_off`` likewise). The runner reads
the registry every 0.5 s with its database clock for ``--observe-seconds``
(default 120 s) and records, per drill: how many services were ever shown
``down`` (``service_down_time`` 60 s), the longest time one was shown down,
when the first was, the longest gap between two reports of one service, and
the reports that failed. ``--markdown`` prints a table, ``--json`` writes
everything. Needs root (iptables for the cut off) and the Debian
rabbitmq-server package; ``make liveness-drill``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import drills  # noqa: E402

CONTENDERS = ("fastrpc", "oslo")
FAULTS = ("kill", "freeze", "cut_off")
SERVICES = 10
REPORT_INTERVAL = 10.0
DOWN_TIME = 60.0
BINARY = "drill-compute"
LABELS = {"fastrpc": "fastrpc (Service, Conductor)", "oslo": "oslo.messaging (rabbit://)"}


# -- child processes ----------------------------------------------------------------------

class Compute:
    """The services' RPC endpoint (nothing calls it: it is there to be served)."""

    def ping(self, ctxt: Any) -> str:
        return "pong"


def _report_loop(report: Any, host: str, stop: threading.Event) -> None:
    """Report now and then every REPORT_INTERVAL (right after a report that overran it)."""
    next_at = time.monotonic()
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        started = time.monotonic()
        try:
            report()
            drills.emit(ev="report", t=started, end=time.monotonic(), host=host, ok=True)
        except Exception as exc:
            drills.emit(ev="report", t=started, end=time.monotonic(), host=host, ok=False,
                        error=f"{type(exc).__name__}: {exc}"[:200])
        next_at = max(started + REPORT_INTERVAL, time.monotonic())


def child_conductor(lib: str, url: str, db: str) -> int:
    drills._setup_logging()
    from fastrpc.service import Registry

    if lib == "fastrpc":
        import fastrpc
        from fastrpc.service import Conductor

        conductor = Conductor(fastrpc.get_rpc_transport(url=url), "ctl-1", registry=db,
                              report_interval=REPORT_INTERVAL, periodic_fuzzy_delay=0)
        conductor.start()
    else:
        from fastrpc.service.conductor import CONDUCTOR_TOPIC, ConductorManager

        om, transport = drills.make_transport(lib, url)
        registry = Registry(db)
        server = om.get_rpc_server(transport, om.Target(topic=CONDUCTOR_TOPIC, server="ctl-1"),
                                   [ConductorManager(registry)], executor="threading")
        server.start()
    drills.emit(ev="ready", t=time.monotonic())
    sys.stdin.read()  # the runner kills us or closes stdin
    return 0


def child_services(lib: str, urls: list[str], db: str) -> int:
    drills._setup_logging()
    stop = threading.Event()
    hosts = [f"compute-{i}" for i in range(SERVICES)]
    if lib == "fastrpc":
        import fastrpc
        from fastrpc.service import ConductorClient, Service

        for i, host in enumerate(hosts):
            transport = fastrpc.get_rpc_transport(url=urls[i % len(urls)])
            service = Service(transport, host, BINARY, "compute", Compute(), report_interval=REPORT_INTERVAL,
                              periodic_fuzzy_delay=0, registry=ConductorClient(transport))
            service.start()
            # Service reports on its own; its outcomes are read from it here.
            threading.Thread(target=_watch_service, args=(service, stop), daemon=True).start()
    else:
        from fastrpc.service.conductor import CONDUCTOR_TOPIC

        for i, host in enumerate(hosts):
            om, transport = drills.make_transport(lib, urls[i % len(urls)])
            server = om.get_rpc_server(transport, om.Target(topic="compute", server=host), [Compute()],
                                       executor="threading")
            server.start()
            client = om.RPCClient(transport, om.Target(topic=CONDUCTOR_TOPIC))

            def report(client: Any = client, host: str = host) -> Any:
                return client.call({}, "service_update", host=host, binary=BINARY, topic="compute",
                                   availability_zone=None)

            threading.Thread(target=_report_loop, args=(report, host, stop), daemon=True).start()
    drills.emit(ev="ready", t=time.monotonic())
    sys.stdin.read()
    return 0


def _watch_service(service: Any, stop: threading.Event) -> None:
    """Emit a report event whenever a fastrpc Service's counts move."""
    seen = (service.reports, service.report_failures)
    while not stop.wait(0.2):
        now = (service.reports, service.report_failures)
        if now != seen:
            ok = now[0] > seen[0]
            drills.emit(ev="report", t=time.monotonic(), end=time.monotonic(), host=service.host, ok=ok)
            seen = now


# -- the runner's side ----------------------------------------------------------------------

def _urls(cluster: Any, contender: str, first: int) -> str:
    """The contender's URL listing the nodes from node ``first`` (0-based) on."""
    order = [cluster.nodes[(first + k) % len(cluster.nodes)] for k in range(len(cluster.nodes))]
    hosts = ",".join(f"guest:guest@127.0.0.1:{n.port}" for n in order)
    return f"rabbit://{hosts}/{drills.vhost('liveness-' + contender)}"


def _child_cmd(role: str, contender: str, urls: list[str], db: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", role, "--lib", contender,
            "--db", db, "--child-urls", "|".join(urls)]


def run_drill(cluster: Any, contender: str, fault: str, repeat: int, args: argparse.Namespace,
              workdir: Path, children: list[drills.ChildProcess]) -> dict[str, Any]:
    from fastrpc.service import Registry
    from fastrpc.service.registry import is_up

    common.info(f"-- {contender} / {fault} / repeat {repeat + 1}")
    tag = f"{contender}-{fault}-{repeat}-{secrets.token_hex(3)}"
    db = f"sqlite:///{workdir / (tag + '.sqlite')}"
    conductor_cmd = _child_cmd("conductor", contender, [_urls(cluster, contender, 1)], db)
    conductor = drills.ChildProcess("conductor", conductor_cmd, workdir / f"{tag}-conductor.log")
    children.append(conductor)
    conductor.wait_ready(90)
    services_cmd = _child_cmd("services", contender, [_urls(cluster, contender, k) for k in range(3)], db)
    services = drills.ChildProcess("services", services_cmd, workdir / f"{tag}-services.log")
    children.append(services)
    services.wait_ready(120)
    registry = Registry(db)
    try:
        deadline = time.monotonic() + 4 * REPORT_INTERVAL
        while True:
            records = registry.services(binary=BINARY)
            if len(records) == SERVICES and all(r.report_count >= 2 for r in records):
                break
            if time.monotonic() > deadline:
                raise common.BenchError(f"the services did not report twice within {4 * REPORT_INTERVAL:.0f} s")
            time.sleep(0.5)
        t_fault = time.monotonic()
        drills.apply_fault(cluster, fault)
        watch = drills.DownWatch(cluster, 0)
        t_thaw: float | None = None
        down_since: dict[str, float] = {}
        down_spans: dict[str, list[tuple[float, float]]] = {}
        last_update: dict[str, Any] = {r.host: r.updated_at for r in registry.services(binary=BINARY)}
        last_change: dict[str, float] = {h: t_fault for h in last_update}
        gaps: dict[str, float] = dict.fromkeys(last_update, 0.0)
        try:
            while time.monotonic() - t_fault < args.observe_seconds:
                now_t = time.monotonic()
                if fault != "kill" and t_thaw is None and now_t - t_fault >= args.freeze_seconds:
                    drills.end_fault(cluster, fault)
                    t_thaw = time.monotonic()
                now = registry.now()
                for r in registry.services(binary=BINARY):
                    up = is_up(r, DOWN_TIME, now)
                    if not up and r.host not in down_since:
                        down_since[r.host] = now_t
                    elif up and r.host in down_since:
                        down_spans.setdefault(r.host, []).append((down_since.pop(r.host), now_t))
                    if r.updated_at != last_update.get(r.host):
                        last_update[r.host] = r.updated_at
                        last_change[r.host] = now_t
                    gaps[r.host] = max(gaps.get(r.host, 0.0), now_t - last_change.get(r.host, t_fault))
                time.sleep(0.5)
            t_end = time.monotonic()
            for host, since in down_since.items():
                down_spans.setdefault(host, []).append((since, t_end))
        finally:
            watch.stop()
    finally:
        registry.close()
        for child in (services, conductor):
            child.kill()
    reports = [e for e in services.of("report") if e["t"] >= t_fault]
    spans = [(a - t_fault, b - t_fault) for v in down_spans.values() for a, b in v]
    metrics = {
        "services_shown_down": len(down_spans),
        "first_down_s": round(min(a for a, _ in spans), 1) if spans else None,
        "longest_down_s": round(max(b - a for a, b in spans), 1) if spans else 0.0,
        "longest_report_gap_s": round(max(gaps.values()), 1) if gaps else None,
        "reports_failed": sum(1 for e in reports if not e["ok"]),
        "reports_ok": sum(1 for e in reports if e["ok"]),
        "cluster_down_s": None if watch.first is None else round(watch.first - t_fault, 1),
        "fault_ended_s": None if t_thaw is None else round(t_thaw - t_fault, 1),
    }
    common.info("   " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return {"contender": contender, "fault": fault, "repeat": repeat, "metrics": metrics,
            "down_spans": {h: [(round(a - t_fault, 1), round(b - t_fault, 1)) for a, b in v]
                           for h, v in down_spans.items()},
            "failed_reports": [e for e in reports if not e["ok"]][:50]}


COLUMNS = [("services_shown_down", "services ever shown down (of 10)"), ("first_down_s", "first shown down (s)"),
           ("longest_down_s", "longest shown down (s)"), ("longest_report_gap_s", "longest gap between reports (s)"),
           ("reports_failed", "reports failed"), ("cluster_down_s", "cluster declared node down (s)"),
           ("fault_ended_s", "fault ended (s)")]


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| contender | fault | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for r in results:
        cells = ["-" if r["metrics"][k] is None else str(r["metrics"][k]) for k, _ in COLUMNS]
        lines.append(f"| {LABELS[r['contender']]} | {r['fault']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Seconds from the fault; service_down_time 60 s, report_interval 10 s; '-': did not happen.")
    lines.append("Targets: no service ever shown down (a kill, a freeze, a cut off).")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fastrpc.testing import RabbitCluster

    started = time.time()
    children: list[drills.ChildProcess] = []
    results: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="fastrpc-liveness-"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    cluster = None
    version = "?"
    try:
        common.info(f"starting a 3-node cluster (net_ticktime {args.net_ticktime or 60})")
        cluster = RabbitCluster(3, partition_handling="pause_minority", net_ticktime=args.net_ticktime,
                                management=False)
        version = cluster.nodes[0].ctl("eval", "rabbit_misc:version().").strip().strip('"')
        drills.add_vhosts(cluster, ["liveness-" + c for c in args.contenders])
        common.info(f"RabbitMQ {version} ready")
        for repeat in range(args.repeats):
            for fault in args.faults:
                for contender in args.contenders:
                    try:
                        results.append(run_drill(cluster, contender, fault, repeat, args, workdir, children))
                    except common.BenchError as exc:
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
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.time() - started
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d", time.gmtime(started)), "rabbitmq": version,
            "command": " ".join(sys.argv), "seconds": round(seconds), "drills": results}, indent=1, default=str))
    if args.markdown:
        print(markdown(results))
    else:
        for r in results:
            print(json.dumps({"contender": r["contender"], "fault": r["fault"], **r["metrics"]}))
    common.info(f"done in {seconds / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contenders", type=lambda v: drills._split(v, CONTENDERS), default=list(CONTENDERS))
    p.add_argument("--faults", type=lambda v: drills._split(v, FAULTS), default=list(FAULTS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--freeze-seconds", type=float, default=90.0, help="how long a freeze or cut off lasts")
    p.add_argument("--observe-seconds", type=float, default=120.0, help="how long the registry is watched")
    p.add_argument("--net-ticktime", type=int, default=None, help="the cluster's net_ticktime (default: 60)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", action="store_true", help="keep the registries and the children's logs")
    p.add_argument("--child", choices=("conductor", "services"), help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--child-urls", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        drills._die_with_parent()
        urls = args.child_urls.split("|")
        if args.child == "conductor":
            return child_conductor(args.lib, urls[0], args.db)
        return child_services(args.lib, urls, args.db)
    return run(args)


if __name__ == "__main__":
    try:
        common.run_main(main, "liveness-drill")
    except KeyboardInterrupt:
        sys.exit(130)
