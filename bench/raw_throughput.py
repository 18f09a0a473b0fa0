"""Raw AMQP throughput: fastrpc's connection layer against the C client (rabbitmq-c).

One run, one broker: for each round, each client publishes N messages of SIZE
bytes to its own queue through the default exchange (no confirms), then consumes
them back (prefetch 1000, ack multiple every 100). The clock of a publish run
stops after a synchronous round trip on the same channel, so every message has
reached the broker; a consume run stops when the last message arrived.

Every measurement runs in its own process, the C client and fastrpc alike; the
pure-Python codec row runs with ``FASTRPC_NO_EXTENSIONS=1``. Clients alternate
their order between rounds and the table shows the median over rounds.

    python bench/raw_throughput.py [--messages 200000] [--rounds 3] [--json out.json]

``FASTRPC_BENCH_URL=amqp://user:pass@host:port/vhost`` uses an existing broker
instead of starting a private node.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PREFETCH = 1000
ACK_EVERY = 100
BATCH = 64  # publishes encoded into one send
WAIT_SECONDS = 120.0

CLIENTS = ("C (librabbitmq)", "fastrpc", "fastrpc (pure Python)")


# -- workers (run in a subprocess) ----------------------------------------------

def _open(url: str) -> tuple[Any, Any]:
    from fastrpc.amqp.connection import Connection

    conn = Connection(url)
    conn.connect()
    return conn, conn.channel()


def worker_publish(url: str, queue: str, n: int, size: int) -> dict[str, Any]:
    conn, ch = _open(url)
    try:
        ch.queue_declare(queue, durable=True)
        body = b"x" * size
        props = {"delivery_mode": 1}
        batch = [("", queue, body, props)] * BATCH
        full, rest = divmod(n, BATCH)
        t0 = time.perf_counter()
        for _ in range(full):
            ch.publish_many(batch)
        if rest:
            ch.publish_many(batch[:rest])
        # Same channel, so the broker answers only after it took every publish.
        ch.queue_declare(queue, durable=True)
        dt = time.perf_counter() - t0
    finally:
        conn.close()
    return {"mode": "publish", "n": n, "seconds": dt, "rate": n / dt}


def worker_consume(url: str, queue: str, n: int) -> dict[str, Any]:
    conn, ch = _open(url)
    done = threading.Event()
    state = {"count": 0, "acked": 0}

    def on_message(delivery: Any) -> None:
        # Runs in the reader thread: count, ack in batches, nothing else.
        state["count"] += 1
        tag = delivery.delivery_tag
        if tag - state["acked"] >= ACK_EVERY or state["count"] == n:
            ch.basic_ack(tag, multiple=True)
            state["acked"] = tag
        if state["count"] == n:
            done.set()

    try:
        ch.queue_declare(queue, durable=True)
        ch.basic_qos(prefetch_count=PREFETCH)
        t0 = time.perf_counter()
        ch.basic_consume(queue, on_message)
        if n and not done.wait(WAIT_SECONDS):
            raise common.BenchError(f"consumed {state['count']} of {n} messages in {WAIT_SECONDS:.0f} s")
        dt = time.perf_counter() - t0
    finally:
        conn.close()
    return {"mode": "consume", "n": n, "seconds": dt, "rate": n / dt if dt else 0.0}


def delete_queue(url: str, queue: str) -> None:
    conn, ch = _open(url)
    try:
        ch.queue_delete(queue)
    finally:
        conn.close()


# -- orchestration ----------------------------------------------------------------

def run_client(client: str, b: common.Broker, queue: str, n: int, size: int) -> tuple[float, float]:
    if client.startswith("C "):
        exe = str(common.c_client())
        env = b.c_env()
        pub = common.run_json([exe, "publish", b.host, str(b.port), queue, str(n), str(size)],
                              env=env, what="C publish", timeout=WAIT_SECONDS * 2)
        con = common.run_json([exe, "consume", b.host, str(b.port), queue, str(n)],
                              env=env, what="C consume", timeout=WAIT_SECONDS * 2)
    else:
        env = common.python_env(no_extensions="pure" in client)
        base = ["--url", b.url, "--queue", queue, "--messages", str(n)]
        pub = common.run_json(common.python_cmd("raw_throughput.py", "--worker", "publish", *base, "--size", str(size)),
                              env=env, what=f"{client} publish", timeout=WAIT_SECONDS * 2)
        con = common.run_json(common.python_cmd("raw_throughput.py", "--worker", "consume", *base),
                              env=env, what=f"{client} consume", timeout=WAIT_SECONDS * 2)
    for result in (pub, con):
        if result["n"] != n:
            raise common.BenchError(f"{client} {result['mode']} handled {result['n']} of {n} messages")
    return float(pub["rate"]), float(con["rate"])


def check_compiled() -> bool:
    """True when the normal (non pure-Python) rows really use the compiled codec."""
    out = common.run_json([sys.executable, "-c", "import json, fastrpc._impl as i; "
                           "print(json.dumps({'compiled': i.compiled('fastrpc.amqp.codec')}))"],
                          env=common.python_env(), what="codec check")
    return bool(out["compiled"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000, help="messages per run (default 200000)")
    p.add_argument("--size", type=int, default=200, help="message body size in bytes (default 200)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--no-pure", action="store_true", help="skip the pure-Python codec row")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    # Internal: one measurement in this process.
    p.add_argument("--worker", choices=("publish", "consume"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--queue", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        if args.worker == "publish":
            result = worker_publish(args.url, args.queue, args.messages, args.size)
        else:
            result = worker_consume(args.url, args.queue, args.messages)
        print(json.dumps(result), flush=True)
        return 0

    if args.messages < 1 or args.rounds < 1:
        p.error("--messages and --rounds must be at least 1")
    clients = [c for c in CLIENTS if not (args.no_pure and "pure" in c)]
    compiled = check_compiled()
    if not compiled:
        common.info("warning: the compiled codec is not importable; the 'fastrpc' row uses pure Python")
    samples: dict[str, dict[str, list[float]]] = {c: {"publish": [], "consume": []} for c in clients}
    with common.broker() as b:
        common.c_client()
        for r in range(args.rounds):
            order = clients if r % 2 == 0 else list(reversed(clients))
            for client in order:
                queue = f"bench.raw.{uuid.uuid4().hex[:12]}"
                try:
                    pub, con = run_client(client, b, queue, args.messages, args.size)
                finally:
                    delete_queue(b.url, queue)
                samples[client]["publish"].append(pub)
                samples[client]["consume"].append(con)
                common.info(f"round {r + 1}/{args.rounds} {client:22s} publish {pub:>10,.0f}/s  consume {con:>10,.0f}/s")

    med = {c: {k: common.median(v) for k, v in s.items()} for c, s in samples.items()}
    ref = med[CLIENTS[0]]
    headers = ["client", "publish msg/s", "consume msg/s", "publish vs C", "consume vs C"]
    rows = [[c, common.fmt_rate(m["publish"]), common.fmt_rate(m["consume"]),
             common.fmt_ratio(m["publish"], ref["publish"]), common.fmt_ratio(m["consume"], ref["consume"])]
            for c, m in med.items()]
    print(f"raw throughput: {args.messages} x {args.size}-byte messages, median of {args.rounds} rounds"
          f" (compiled codec: {'yes' if compiled else 'NO'})")
    print(common.format_markdown(headers, rows) if args.markdown else common.format_table(headers, rows))
    common.write_json(args.json, {
        "benchmark": "raw_throughput", "messages": args.messages, "size": args.size, "rounds": args.rounds,
        "compiled": compiled, "samples": samples, "median": med,
    })
    return 0


if __name__ == "__main__":
    common.run_main(main, "raw_throughput")
