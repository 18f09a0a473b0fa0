"""bench/opcode_profile.py runs both sides of both APIs and attributes their
bytecodes to packages: a smoke test of the harness, not a measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def test_opcode_profile_attributes_each_side(broker: Any, tmp_path: Path) -> None:
    out = tmp_path / "opcodes.json"
    env = dict(os.environ, FASTRPC_BENCH_URL=broker.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "opcode_profile.py"), "--libs", "fastrpc,oslo-fastrpc",
         "--calls", "10,30", "--top", "3", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(out.read_text())["bytecodes_per_call"]
    assert set(counts) == {"fastrpc client", "fastrpc server", "oslo-fastrpc client", "oslo-fastrpc server"}

    def in_files(side: str, needle: str) -> float:
        return sum(n for key, n in counts[side].items() if needle in key.rsplit(":", 2)[0])

    # Each side runs some of fastrpc's Python (most of its RPC layer and
    # driver is compiled: what is left is the transport's send, the server's
    # loop and handling of a request, the oslo driver's shim); only the oslo
    # contender runs oslo.messaging.
    ours = ("fastrpc/drivers/", "fastrpc/client", "fastrpc/server.py", "fastrpc/dispatcher",
            "fastrpc/transport.py", "fastrpc/oslo_driver.py")
    for side in counts:
        assert sum(in_files(side, needle) for needle in ours) > 0, side
    assert in_files("oslo-fastrpc client", "oslo_messaging") > 50
    assert in_files("oslo-fastrpc server", "oslo_messaging") > 50
    assert in_files("fastrpc client", "oslo_messaging") == 0
    assert "oslo-fastrpc server:" in done.stdout and "fastrpc: oslo driver" in done.stdout
