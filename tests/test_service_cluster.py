"""Service liveness through a broker node's death or hang, on the 3-node
cluster: services reporting through a conductor are never shown down while
the cluster loses, or waits for, the node they are connected to."""

from __future__ import annotations

import time
from pathlib import Path

from fastrpc import get_rpc_transport
from fastrpc.service import Conductor, ConductorClient, Registry, Service
from fastrpc.testing import RabbitCluster

INTERVAL = 1.0  # report_interval
DOWN_TIME = 5.0  # service_down_time for this test: five missed reports
WATCH = 15.0  # seconds watched after the fault
FAST_RETRY = "rabbit_retry_interval=0.2&rabbit_retry_backoff=0.2&rabbit_interval_max=2"


def _url(cluster: RabbitCluster, first: int = 0) -> str:
    """The cluster's URL listing its nodes from node ``first`` (0-based) on."""
    nodes = cluster.nodes[first:] + cluster.nodes[:first]
    hosts = ",".join(f"guest:guest@127.0.0.1:{node.port}" for node in nodes)
    return f"rabbit://{hosts}/?{FAST_RETRY}"


class Compute:
    def ping(self, ctxt: dict) -> str:
        return "pong"


def test_kill_of_the_node_every_service_is_on_shows_none_down(rabbit_cluster: RabbitCluster,
                                                              tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'services.sqlite'}"
    url = _url(rabbit_cluster)
    transports = [get_rpc_transport(url=url) for _ in range(4)]
    conductor = Conductor(transports[0], "ctl-1", registry=db, report_interval=INTERVAL, periodic_fuzzy_delay=0)
    services = [Service(t, f"host-{i}", "fastrpc-compute", "compute", Compute(), report_interval=INTERVAL,
                        periodic_fuzzy_delay=0, registry=ConductorClient(t, timeout=2.0))
                for i, t in enumerate(transports[1:], 1)]
    registry = Registry(db)
    try:
        conductor.start()
        for service in services:
            service.start()
        deadline = time.monotonic() + 30
        while not all(r.report_count >= 2 for r in registry.services(binary="fastrpc-compute")):
            assert time.monotonic() < deadline, "the services never reported"
            time.sleep(0.2)
        before = {r.host: r.report_count for r in registry.services(binary="fastrpc-compute")}
        rabbit_cluster.kill(0)
        shown_down: list[tuple[float, str]] = []
        started = time.monotonic()
        while time.monotonic() - started < WATCH:
            now = registry.now()
            shown_down += [(time.monotonic() - started, r.host) for r in registry.services()
                           if not registry.is_up(r, DOWN_TIME, now)]
            time.sleep(0.25)
        assert shown_down == []
        after = {r.host: r.report_count for r in registry.services(binary="fastrpc-compute")}
        # Reports went on: most of the watched intervals were reported.
        assert all(after[h] - before[h] >= WATCH / INTERVAL / 2 for h in before), (before, after)
    finally:
        for service in services:
            service.stop()
        conductor.stop()
        registry.close()
        for t in transports:
            t.cleanup()


FREEZE = 25.0  # seconds node 1 stays frozen: past the cluster's detection (net_ticktime 10)
FREEZE_DOWN_TIME = 20.0  # > probe detection (7 s) + a report call and its cast (2 s each) + an interval


def test_freeze_of_the_node_services_are_on_shows_none_down(rabbit_cluster: RabbitCluster,
                                                            tmp_path: Path) -> None:
    """Node 1 hangs: the services on it leave it within seconds, but their
    reply queues were there and no new one can be declared until the cluster
    drops node 1; their reports get no answer, go as confirmed casts to the
    conductor (on node 2) instead, and no service is ever shown down."""
    db = f"sqlite:///{tmp_path / 'services.sqlite'}"
    conductor_transport = get_rpc_transport(url=_url(rabbit_cluster, 1))
    transports = [get_rpc_transport(url=_url(rabbit_cluster)) for _ in range(3)]
    conductor = Conductor(conductor_transport, "ctl-1", registry=db, report_interval=INTERVAL,
                          periodic_fuzzy_delay=0)
    services = [Service(t, f"host-{i}", "fastrpc-compute", "compute", Compute(), report_interval=INTERVAL,
                        periodic_fuzzy_delay=0, registry=ConductorClient(t, timeout=2.0))
                for i, t in enumerate(transports, 1)]
    registry = Registry(db)
    try:
        conductor.start()
        for service in services:
            service.start()
        deadline = time.monotonic() + 30
        while not all(r.report_count >= 2 for r in registry.services(binary="fastrpc-compute")):
            assert time.monotonic() < deadline, "the services never reported"
            time.sleep(0.2)
        rabbit_cluster.freeze(0)
        shown_down: list[tuple[float, str]] = []
        started = time.monotonic()
        try:
            while time.monotonic() - started < FREEZE:
                now = registry.now()
                shown_down += [(round(time.monotonic() - started, 1), r.host) for r in registry.services()
                               if not registry.is_up(r, FREEZE_DOWN_TIME, now)]
                time.sleep(0.25)
        finally:
            rabbit_cluster.thaw(0)
        assert shown_down == []
        before = {r.host: r.report_count for r in registry.services(binary="fastrpc-compute")}
        # Reports go on after the hang, too.
        deadline = time.monotonic() + 15
        while not all(r.report_count > before[r.host] for r in registry.services(binary="fastrpc-compute")):
            assert time.monotonic() < deadline, "reports did not go on after the node came back"
            time.sleep(0.2)
    finally:
        for service in services:
            service.stop()
        conductor.stop()
        registry.close()
        for t in [conductor_transport, *transports]:
            t.cleanup()
