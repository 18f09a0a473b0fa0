"""The RPC benchmark command from the README runs and prints its table.

A smoke test of the harness (processes, rounds, ratios), not a measurement:
no rate is asserted, only that every contender produced one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


C_DEFAULT, C_TOPIC = "C (librabbitmq)", "C (librabbitmq), topic exchange"
LIB_ROWS = {"fastrpc": "fastrpc [threading]", "fastrpc [blocking]": "fastrpc [blocking]", "oslo": "oslo.messaging",
            "oslo-fastrpc": "oslo.messaging on fastrpc://", "aio-pika": "aio-pika (patterns.JsonRPC)"}


def test_rpc_scenarios_runs_every_contender_in_rounds(broker, tmp_path):
    out = tmp_path / "rpc.json"
    env = dict(os.environ, FASTRPC_BENCH_URL=broker.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rpc_scenarios.py"), "--seconds", "0.6", "--rounds", "2",
         "--scenarios", "sequential,concurrent-16,casts", "--executors", "threading,blocking", "--skip-memory",
         "--markdown", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # (scenario, client) -> the row's cells
    rows = {tuple(cells[:2]): cells for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in done.stdout.splitlines()
             if line.startswith("| ") and not line.startswith("| scenario"))}
    every = {"sequential": [*LIB_ROWS.values(), C_DEFAULT, C_TOPIC],
             "concurrent-16": [*LIB_ROWS.values(), C_TOPIC], "casts": [*LIB_ROWS.values(), C_TOPIC]}
    for scenario, clients in every.items():
        for client in clients:
            assert (scenario, client) in rows, (scenario, client, done.stdout)
    assert ("concurrent-16", C_DEFAULT) not in rows and ("casts", C_DEFAULT) not in rows
    # aio-pika's RPC pattern has no cast: said so, not measured
    assert rows[("casts", LIB_ROWS["aio-pika"])][2] == "n/a"

    data = json.loads(out.read_text())
    summary = data["summary"]
    assert set(summary) == {*LIB_ROWS, C_DEFAULT, C_TOPIC}
    assert summary["aio-pika"]["casts"] is None
    for key in LIB_ROWS:
        for scenario in every:
            if key == "aio-pika" and scenario == "casts":
                continue
            result = summary[key][scenario]
            assert result["rounds"] == 2 and result["rate"] > 0
            assert result["vs_oslo"] > 0 and result["vs_c_topic"] > 0
            assert scenario == "casts" or result["vs_aio_pika"] > 0
        assert summary[key]["sequential"]["vs_c"] > 0
    for scenario in every:
        assert summary[C_TOPIC][scenario]["rate"] > 0
    assert summary[C_DEFAULT]["sequential"]["rate"] > 0
    # every round of every contender is kept, for whoever wants to look again
    assert len(data["rounds_raw"]["oslo"]["casts"]) == 2
    c_casts = data["rounds_raw"][C_TOPIC]["casts"]
    assert len(c_casts) == 2 and all(r["n"] >= 100 for r in c_casts)


def test_call_cost_counts_both_sides_of_fastrpc_and_c(broker, tmp_path):
    """bench/call_cost.py under valgrind: every side of every contender gets a count.

    Instruction counts are exact, so this can check what speed tests cannot:
    one call costs something on each side, and a larger N costs more.
    """
    out = tmp_path / "cost.json"
    env = dict(os.environ, FASTRPC_BENCH_URL=broker.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "call_cost.py"), "--calls", "20,60", "--executors", "blocking",
         "--skip-oslo", "--msgpack", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("fastrpc (blocking)", "fastrpc (blocking) msgpack", "C (librabbitmq)"):
        assert row in done.stdout, done.stdout
    data = json.loads(out.read_text())
    assert data["calls"] == [20, 60]
    costs = data["instructions_per_call"]
    assert set(costs) == {"C (librabbitmq)", "fastrpc (blocking)", "fastrpc (blocking) msgpack"}
    for sides in costs.values():
        # A call cannot be free on either side: at the least a publish is
        # encoded and a delivery parsed (thousands of instructions in C).
        assert sides["client"] > 1000 and sides["server"] > 1000, costs


def test_envelope_cost_counts_every_step_of_both_formats(tmp_path):
    """bench/envelope_cost.py under valgrind: a count for each step with JSON and with msgpack."""
    out = tmp_path / "envelope.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "envelope_cost.py"), "--ops", "50,150", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["ops"] == [50, 150]
    costs = data["instructions_per_step"]
    assert set(costs) == {"json", "msgpack"}
    for mode, steps in costs.items():
        # a count for every step (50 and 150 runs are too few for the figures to mean much)
        assert set(steps) == {"encode request", "decode request", "encode reply", "decode reply"}, mode
        assert all(isinstance(count, float) for count in steps.values()), costs
    assert "all four" in done.stdout and "msgpack / json" in done.stdout, done.stdout


def test_call_cost_counts_system_calls_of_both_sides(broker, tmp_path):
    """bench/call_cost.py --syscalls under strace: every side reads and writes for every call."""
    out = tmp_path / "syscalls.json"
    env = dict(os.environ, FASTRPC_BENCH_URL=broker.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "call_cost.py"), "--syscalls", "--calls", "20,60", "--executors",
         "blocking", "--skip-oslo", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fastrpc (blocking)" in done.stdout and "C (librabbitmq)" in done.stdout, done.stdout
    data = json.loads(out.read_text())
    calls = data["syscalls_per_call"]
    assert set(calls) == {"C (librabbitmq)", "fastrpc (blocking)"}
    for sides in calls.values():
        for side in ("client", "server"):
            # A call is at least one write and one read on each side.
            writes = sum(n for name, n in sides[side].items() if name.startswith(("send", "write")))
            reads = sum(n for name, n in sides[side].items() if name.startswith(("recv", "read")))
            assert writes >= 0.9 and reads >= 0.9, calls


def test_pair_ab_compares_two_trees_call_by_call(broker, tmp_path):
    out = tmp_path / "pair.json"
    env = dict(os.environ, FASTRPC_BENCH_URL=broker.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pair_ab.py"), "--calls", "50", str(ROOT), str(ROOT),
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "B/A: mean" in done.stdout, done.stdout
    data = json.loads(out.read_text())
    assert data["pairs"] == 50 and data["executor"] == "blocking"
    assert data["a"]["mean_us"] > 0 and data["b"]["mean_us"] > 0
    assert data["mean_ratio"] == pytest.approx(data["b"]["mean_us"] / data["a"]["mean_us"])
    # Not a tree: a clear error, not a traceback.
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "pair_ab.py"), str(tmp_path), str(ROOT)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a fastrpc source tree" in bad.stderr


def test_tree_ab_runs_servers_of_trees_and_pool_sizes_beside_c(tmp_path):
    out = tmp_path / "ab.json"
    # Its own broker node (no FASTRPC_BENCH_URL): the broker's CPU is measured then.
    env = {k: v for k, v in os.environ.items() if k != "FASTRPC_BENCH_URL"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tree_ab.py"), "--scenarios", "casts,sequential", "--rounds", "2",
         "--seconds", "0.3", str(ROOT), f"{ROOT}:2", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    servers = {f"S1 {ROOT}", f"S2 {ROOT} pool 2"}
    assert set(data["summary"]) == servers | {C_TOPIC}
    for label in servers:
        scenarios = data["summary"][label]
        assert set(scenarios) == {"casts", "sequential"}
        for result in scenarios.values():
            assert result["rate"] > 0 and len(result["vs_c_rounds"]) == 2
            assert result["cpu_us"] > 0 and result["switches"] >= 0 and result["broker_us"] > 0
            # Each round's server reports its workers; the pool of B never exceeds its size.
            assert all(1 <= n <= (2 if "pool 2" in label else 64) for n in result["workers"])
    assert data["summary"][f"S1 {ROOT}"]["casts"]["vs_s1"] == pytest.approx(1.0)
    assert len(data["rounds_raw"][C_TOPIC]["casts"]) == 2
    assert all(data["summary"][C_TOPIC][s]["broker_us"] > 0 for s in ("casts", "sequential"))
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "tree_ab.py"), str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a fastrpc source tree" in bad.stderr


def test_drills_kill_one_contender(tmp_path):
    """bench/drills.py: one kill of node 1 under fastrpc, then the cluster restored.

    A smoke test of the harness (cluster, child processes, fault, restore,
    table and JSON), not of the figures: it asserts only that calls were
    recorded around the fault and that the client recovered while watched.
    """
    out = tmp_path / "drills.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "drills.py"), "--contenders", "fastrpc", "--faults", "kill",
         "--observe-seconds", "20", "--markdown", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| fastrpc | kill |" in done.stdout, done.stdout
    data = json.loads(out.read_text())
    (drill,) = data["drills"]
    assert drill["contender"] == "fastrpc" and drill["fault"] == "kill"
    calls = drill["calls"]
    assert any(c["start"] < 0 for c in calls) and any(c["start"] > 0 for c in calls)
    assert drill["metrics"]["healthy_s"] is not None


def test_liveness_drill_kill_under_fastrpc(tmp_path):
    """bench/liveness_drill.py: ten services and a conductor through one kill
    of node 1, the registry watched, the cluster restored. A smoke test of
    the harness: the row is printed and the services went on reporting
    after the kill."""
    out = tmp_path / "liveness.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "liveness_drill.py"), "--contenders", "fastrpc", "--faults", "kill",
         "--observe-seconds", "15", "--markdown", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| fastrpc (Service, Conductor) | kill |" in done.stdout, done.stdout
    (drill,) = json.loads(out.read_text())["drills"]
    assert drill["contender"] == "fastrpc" and drill["fault"] == "kill"
    assert drill["metrics"]["reports_ok"] >= 10, drill["metrics"]
    assert drill["metrics"]["services_shown_down"] == 0, drill
