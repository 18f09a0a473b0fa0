"""``fastrpc bench`` against the shared broker: every scenario asked for gives
a row with a rate, the server process is stopped afterwards, and a failure is
one line and exit status 1."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from fastrpc import benchmark
from fastrpc.cli import main


def test_bench_measures_each_scenario(broker: Any, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[benchmark.ServerProcess] = []
    original = benchmark.ServerProcess.__init__

    def noting(self: benchmark.ServerProcess, *args: Any) -> None:
        original(self, *args)
        started.append(self)

    monkeypatch.setattr(benchmark.ServerProcess, "__init__", noting)
    status = main(["bench", "--url", broker.url, "--scenarios", "sequential,concurrent-4,casts", "--seconds", "1.5",
                   "--rounds", "1", "--executor", "blocking", "--payload", "64", "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    rows = json.loads(captured.out)
    assert [row["scenario"] for row in rows] == ["sequential", "concurrent-4", "casts"]
    assert all(row["ops/s"] > 0 and row["rounds"] == 1 for row in rows)
    assert rows[0]["p50 ms"] > 0 and rows[0]["p99 ms"] >= rows[0]["p50 ms"] and rows[2]["p50 ms"] is None
    assert len(started) == 1 and started[0].proc.returncode == 0  # stopped, and cleanly


def test_bench_table(broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", broker.url, "--scenarios", "sequential", "--seconds", "0.5", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "fastrpc bench: threading executor, 150-byte payload" in out
    assert out.splitlines()[1].split()[:2] == ["Scenario", "Ops/s"] and "sequential" in out


def test_no_broker_at_the_url_is_one_line_and_status_1(capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    status = main(["bench", "--url", "rabbit://user:s3cret@127.0.0.1:1/", "--scenarios", "sequential",
                   "--seconds", "0.5", "--rounds", "1"])
    err = capfd.readouterr().err
    assert status == 1 and err.splitlines() == ["fastrpc bench: DemoFailure: no broker answers: 127.0.0.1:1: "
                                                "Connection refused"]
    assert time.monotonic() - started < 10  # at once, not after the server's start timeout


def test_a_server_that_cannot_start_is_one_line_and_status_1(broker: Any, capfd: pytest.CaptureFixture[str]) -> None:
    # The broker answers but refuses the password: the server process says why and exits.
    host = f"{broker.host}:{broker.port}"
    status = main(["bench", "--url", f"rabbit://guest:s3cret-wrong@{host}/", "--scenarios", "sequential",
                   "--seconds", "0.5", "--rounds", "1"])
    err = capfd.readouterr().err  # this process's and the server process's
    lines = err.splitlines()
    assert status == 1 and "the benchmark server did not start" in lines[-1]
    assert lines[-2].startswith("fastrpc bench server: ") and "Traceback" not in err and "s3cret" not in err


@pytest.mark.parametrize("argv", [["--scenarios", "parallel-3"], ["--scenarios", "concurrent-0"],
                                  ["--seconds", "0"], ["--rounds", "0"]])
def test_bad_usage_is_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2 and "fastrpc bench" in capsys.readouterr().err
