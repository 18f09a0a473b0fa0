"""What the broker still answers while one node of the cluster is hung.

Starts a 3-node cluster (``fastrpc.testing.RabbitCluster``, partition
handling ``pause_minority``, RabbitMQ's default net_ticktime unless
``--net-ticktime`` says otherwise), declares on node 1 a durable topic
exchange, quorum queues (their leader on node 1) and a classic queue, and on
node 2 a quorum queue and a classic queue of its own; then freezes node 1
(SIGSTOP) and, from a connection to node 2, times every operation a client
makes when it reconnects and consumes again: passive and full declarations,
bindings, consumes, confirmed publishes, new queues. Each operation gets
``--op-timeout`` seconds; after the list it reports when the cluster dropped
node 1, then thaws it.

This is the broker's part of a hung-node outage (docs/RELIABILITY.md): on
RabbitMQ 3.x a binding is a cluster-wide transaction, and a quorum queue
whose leader is on the hung node takes no consumer and confirms no publish,
until the cluster drops that node. No client can do better than that.

    .venv/bin/python bench/hung_node_ops.py [--markdown] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from fastrpc.amqp.connection import Connection  # noqa: E402
from fastrpc.amqp.url import ConnectionParams  # noqa: E402
from fastrpc.testing import RabbitCluster  # noqa: E402

QUORUM = {"x-queue-type": "quorum"}
CLASSIC = {"x-expires": 600_000}


def _connect(node: Any) -> Connection:
    # No heartbeat and no probe: the point is to see how long the broker takes.
    return Connection(ConnectionParams(host=node.host, port=node.port, heartbeat=0, probe_after=0)).connect()


def _operations(cluster: RabbitCluster, t: float) -> list[tuple[str, Any]]:
    """(what, function of a fresh channel), in the order they run."""

    def confirmed_publish(key: str) -> Any:
        def run(ch: Any) -> None:
            ch.confirm_select(timeout=t)
            ch.basic_publish("drill-ex", key, b"x", {}).result(timeout=t)
        return run

    return [
        ("open a connection to node 2", lambda ch: _connect(cluster.nodes[1]).close()),
        ("exchange.declare, passive", lambda ch: ch.exchange_declare("drill-ex", "topic", passive=True, timeout=t)),
        ("exchange.declare of an existing exchange",
         lambda ch: ch.exchange_declare("drill-ex", "topic", durable=True, timeout=t)),
        ("queue.declare, passive: quorum, leader on node 2",
         lambda ch: ch.queue_declare("qq-2", passive=True, timeout=t)),
        ("queue.declare, passive: quorum, leader on the hung node",
         lambda ch: ch.queue_declare("qq-1a", passive=True, timeout=t)),
        ("queue.declare of an existing quorum queue, leader on the hung node",
         lambda ch: ch.queue_declare("qq-1a", durable=True, arguments=QUORUM, timeout=t)),
        ("queue.bind of an existing binding (quorum queue, leader on node 2)",
         lambda ch: ch.queue_bind("qq-2", "drill-ex", "qq-2", timeout=t)),
        ("basic.consume: quorum, leader on node 2", lambda ch: ch.basic_consume("qq-2", _drop, timeout=t)),
        ("basic.consume: quorum, leader on the hung node",
         lambda ch: ch.basic_consume("qq-1a", _drop, timeout=t)),
        ("confirmed publish: quorum, leader on node 2", confirmed_publish("qq-2")),
        ("confirmed publish: quorum, leader on the hung node", confirmed_publish("qq-1b")),
        ("queue.declare, passive: classic on node 2", lambda ch: ch.queue_declare("cq-2", passive=True, timeout=t)),
        ("basic.consume: classic on node 2", lambda ch: ch.basic_consume("cq-2", _drop, timeout=t)),
        ("queue.declare, passive: classic on the hung node",
         lambda ch: ch.queue_declare("cq-1", passive=True, timeout=t)),
        ("queue.declare: a new classic queue",
         lambda ch: ch.queue_declare(f"new-{uuid.uuid4().hex}", exclusive=True, timeout=t)),
        ("queue.declare: a new quorum queue",
         lambda ch: ch.queue_declare(f"new-{uuid.uuid4().hex}", durable=True, arguments=QUORUM, timeout=t)),
    ]


def _drop(delivery: Any) -> None:
    pass


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with RabbitCluster(size=3, partition_handling="pause_minority", net_ticktime=args.net_ticktime) as cluster:
        first = _connect(cluster.nodes[0])
        ch = first.channel()
        ch.exchange_declare("drill-ex", "topic", durable=True)
        for name in ("qq-1a", "qq-1b"):
            ch.queue_declare(name, durable=True, arguments=QUORUM)
            ch.queue_bind(name, "drill-ex", name)
        ch.queue_declare("cq-1", arguments=CLASSIC)
        first.close()
        second = _connect(cluster.nodes[1])
        ch = second.channel()
        ch.queue_declare("qq-2", durable=True, arguments=QUORUM)
        ch.queue_bind("qq-2", "drill-ex", "qq-2")
        ch.queue_declare("cq-2", arguments=CLASSIC)
        rows = []
        cluster.freeze(0)
        frozen_at = time.monotonic()
        try:
            for what, op in _operations(cluster, args.op_timeout):
                common.info(f"-- {what}")
                started = time.monotonic()
                try:
                    op(second.channel(args.op_timeout))
                    outcome = "answered"
                except Exception as exc:  # the outcome is the figure
                    outcome = f"{type(exc).__name__}"
                rows.append({"operation": what, "at_s": round(started - frozen_at, 2),
                             "took_s": round(time.monotonic() - started, 2), "outcome": outcome})
            # When did the cluster drop node 1? Node 2's own view, polled.
            dropped = None
            limit = frozen_at + args.net_ticktime_wait
            while time.monotonic() < limit:
                if cluster.nodes[0].nodename not in cluster.view(1).running_nodes:
                    dropped = round(time.monotonic() - frozen_at, 1)
                    break
                time.sleep(1.0)
        finally:
            cluster.thaw(0)
            second.close()
        return {"rows": rows, "cluster_dropped_node_s": dropped, "op_timeout_s": args.op_timeout,
                "net_ticktime": args.net_ticktime or "default (60)"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op-timeout", type=float, default=8.0, help="seconds each operation may take (default 8)")
    p.add_argument("--net-ticktime", type=int, default=None, help="the cluster's net_ticktime (default: 60)")
    p.add_argument("--net-ticktime-wait", type=float, default=150.0,
                   help="seconds to wait for the cluster to drop the hung node (default 150)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    result = measure(args)
    headers = ["operation (from node 2, node 1 hung)", "started (s)", "took (s)", "outcome"]
    rows = [[r["operation"], f"{r['at_s']:.1f}", f"{r['took_s']:.2f}", r["outcome"]] for r in result["rows"]]
    print(common.format_markdown(headers, rows) if args.markdown else common.format_table(headers, rows))
    print(f"\nEach operation on a fresh channel, {result['op_timeout_s']:g} s allowed; the cluster dropped "
          f"node 1 after {result['cluster_dropped_node_s']} s (net_ticktime {result['net_ticktime']}).")
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    common.run_main(main, "hung_node_ops")
