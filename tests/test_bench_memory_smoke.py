"""The memory and large-message benchmarks run and print their tables.

Smoke tests of the harnesses, not measurements: no figure is asserted beyond
its being there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run(broker: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FASTRPC_BENCH_URL=broker.url)
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_memory_reports_both_builds_and_where_the_heap_grew(broker: Any, tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    done = _run(broker, str(ROOT / "bench" / "memory.py"), "--top", "3", "--json", str(out))
    for row in ("per connection (20 opened), compiled", "per in-flight call (400 waiting), pure Python",
                "thread stacks", "per connection, pure Python: where the heap grew"):
        assert row in done.stdout, done.stdout
    results = json.loads(out.read_text())["results"]
    for build in ("compiled", "pure Python"):
        figures = results[build]["figures"]
        assert figures["connection_heap_bytes"] > 0 and figures["inflight_heap_bytes"] > 0
        assert results[build]["rss_split"]["stacks_bytes"] > 0  # each connection starts threads
        for phase in ("connection", "inflight"):
            assert len(results[build]["sites"][phase]) == 3


def test_large_messages_compares_two_trees(broker: Any, tmp_path: Path) -> None:
    out = tmp_path / "large.json"
    done = _run(broker, str(ROOT / "bench" / "large_messages.py"), str(ROOT), str(ROOT), "--sizes", "200000",
                "--rounds", "2", "--seconds", "0.2", "--mbytes", "2", "--json", str(out))
    assert "200000 B" in done.stdout, done.stdout
    kinds = json.loads(out.read_text())["sizes"]["200000"]
    assert set(kinds) == {"publish", "consume", "rpc"}
    for result in kinds.values():
        assert len(result["a_mb_s"]) == len(result["b_mb_s"]) == 2
        assert min(result["a_mb_s"] + result["b_mb_s"]) > 0


def test_large_messages_counts_instructions_of_both_trees(broker: Any, tmp_path: Path) -> None:
    out = tmp_path / "instructions.json"
    done = _run(broker, str(ROOT / "bench" / "large_messages.py"), str(ROOT), str(ROOT), "--instructions",
                "--sizes", "65536", "--mbytes", "0.25", "--json", str(out))
    assert "64 KiB" in done.stdout, done.stdout
    counts = json.loads(out.read_text())["instructions_per_mib"]["65536"]
    assert set(counts) == {"publish", "consume"}
    for a, b in counts.values():
        assert a > 0 and b > 0
