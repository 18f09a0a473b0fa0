"""The fastrpc command's service-* subcommands against SQLite files in
tmp_path. No broker needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fastrpc.cli import LIST_KEYS, main
from fastrpc.service import Registry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'services.sqlite'}"


@pytest.fixture
def fleet(db: str) -> Registry:
    """Three services: compute on h1 (fresh), compute on h2 (last report 5
    minutes ago), conductor on h1 (disabled)."""
    reg = Registry(db)
    reg.report("h1", "fastrpc-compute", "compute", availability_zone="az1")
    reg.report("h2", "fastrpc-compute", "compute", availability_zone="az2")
    reg.report("h1", "fastrpc-conductor", "conductor")
    reg.set_disabled("h1", "fastrpc-conductor", True, "upgrade")
    t = reg.table
    old = reg.now() - timedelta(minutes=5)
    with reg.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.host == "h2").values(updated_at=old, created_at=old))
    reg.close()
    return reg


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_json_keys_and_states(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--db", db, "service-list")
    assert all(list(row) == list(LIST_KEYS) for row in rows)
    assert list(LIST_KEYS) == ["binary", "host", "zone", "status", "state", "updated_at", "disabled_reason"]
    by_key = {(r["binary"], r["host"]): r for r in rows}
    assert by_key["fastrpc-compute", "h1"] | {"updated_at": None} == {
        "binary": "fastrpc-compute",
        "host": "h1",
        "zone": "az1",
        "status": "enabled",
        "state": "up",
        "updated_at": None,
        "disabled_reason": None,
    }
    assert by_key["fastrpc-compute", "h2"]["state"] == "down"
    assert by_key["fastrpc-conductor", "h1"]["status"] == "disabled"
    assert by_key["fastrpc-conductor", "h1"]["disabled_reason"] == "upgrade"
    assert by_key["fastrpc-conductor", "h1"]["state"] == "up"
    # ISO 8601 with the UTC offset.
    assert by_key["fastrpc-compute", "h1"]["updated_at"].endswith("+00:00")


def test_list_down_time(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    states = {r["host"]: r["state"] for r in run_json(capsys, "--db", db, "service-list", "--binary", "fastrpc-compute")}
    assert states == {"h1": "up", "h2": "down"}
    states = {
        r["host"]: r["state"]
        for r in run_json(capsys, "--db", db, "service-list", "--binary", "fastrpc-compute", "--down-time", "600")
    }
    assert states == {"h1": "up", "h2": "up"}


def test_list_filters(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--db", db, "service-list", "--host", "h1")
    assert sorted(r["binary"] for r in rows) == ["fastrpc-compute", "fastrpc-conductor"]
    rows = run_json(capsys, "--db", db, "service-list", "--host", "h1", "--binary", "fastrpc-compute")
    assert [(r["binary"], r["host"]) for r in rows] == [("fastrpc-compute", "h1")]
    assert run_json(capsys, "--db", db, "service-list", "--host", "nowhere") == []


def test_list_table_is_aligned(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db, "service-list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Binary", "Host", "Zone", "Status", "State", "Updated", "At", "Disabled", "Reason"]
    assert len(lines) == 4
    # Every column starts at the same offset on every line.
    for header in ("Host", "Zone", "Status", "State", "Updated At", "Disabled Reason"):
        column = lines[0].index(header)
        assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[1:]), header
    conductor = next(line for line in lines if "fastrpc-conductor" in line)
    assert conductor.split()[2:5] == ["-", "disabled", "up"]
    assert conductor.rstrip().endswith("upgrade")


def test_list_of_an_empty_registry(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db, "service-list"]) == 0
    assert capsys.readouterr().out.split() == ["Binary", "Host", "Zone", "Status", "State", "Updated", "At", "Disabled", "Reason"]
    assert run_json(capsys, "--db", db, "service-list") == []


def test_disable_enable(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db, "service-disable", "h1", "fastrpc-compute", "--reason", "disk swap"]) == 0
    [row] = run_json(capsys, "--db", db, "service-list", "--host", "h1", "--binary", "fastrpc-compute")
    assert (row["status"], row["disabled_reason"]) == ("disabled", "disk swap")
    assert main(["--db", db, "service-enable", "h1", "fastrpc-compute"]) == 0
    [row] = run_json(capsys, "--db", db, "service-list", "--host", "h1", "--binary", "fastrpc-compute")
    assert (row["status"], row["disabled_reason"]) == ("enabled", None)


def test_disable_needs_a_reason(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--db", db, "service-disable", "h1", "fastrpc-compute"])
    assert info.value.code == 2
    assert "--reason" in capsys.readouterr().err


def test_force_down(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db, "service-force-down", "h1", "fastrpc-compute"]) == 0
    [row] = run_json(capsys, "--db", db, "service-list", "--host", "h1", "--binary", "fastrpc-compute", "--down-time", "1e9")
    assert row["state"] == "down"
    assert main(["--db", db, "service-force-down", "h1", "fastrpc-compute", "--unset"]) == 0
    [row] = run_json(capsys, "--db", db, "service-list", "--host", "h1", "--binary", "fastrpc-compute")
    assert row["state"] == "up"


def test_a_stopped_service_is_down_with_no_report_time(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    with Registry(db) as reg:
        reg.mark_stopped("h1", "fastrpc-compute")
    [row] = run_json(capsys, "--db", db, "service-list", "--host", "h1", "--binary", "fastrpc-compute")
    assert (row["state"], row["updated_at"]) == ("down", None)


@pytest.mark.parametrize(
    "argv",
    [
        ["service-disable", "nohost", "fastrpc-compute", "--reason", "x"],
        ["service-enable", "h1", "nobinary"],
        ["service-force-down", "nohost", "fastrpc-compute"],
    ],
)
def test_unknown_service_exits_1(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(["--db", db, *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"fastrpc {argv[0]}: no service {argv[2]!r} on host {argv[1]!r}" in captured.err


def test_db_may_follow_the_command(db: str, fleet: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "service-list", "--db", db, "--host", "h2")
    assert [r["host"] for r in rows] == ["h2"]
    assert main(["service-force-down", "h2", "fastrpc-compute", "--db", db]) == 0
    rows = run_json(capsys, "--db", "sqlite:///elsewhere-unused.sqlite", "service-list", "--db", db, "--host", "h2")
    assert [r["state"] for r in rows] == ["down"]


def test_bad_database_exits_1_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", "nosuchdialect://admin:s3cret-pw@db.example/fleet", "service-list"]) == 1
    captured = capsys.readouterr()
    assert "cannot open the service registry nosuchdialect://admin:****@db.example/fleet" in captured.err
    assert "s3cret-pw" not in captured.err + captured.out


def test_bad_down_time_is_a_usage_error(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("-1", "soon", "nan"):
        with pytest.raises(SystemExit) as info:
            main(["--db", db, "service-list", "--down-time", value])
        assert info.value.code == 2
    capsys.readouterr()


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    capsys.readouterr()


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FASTRPC_DB"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env.update(extra)
    return env


def test_command_line_uses_fastrpc_db_then_the_default(tmp_path: Path) -> None:
    env_db = tmp_path / "env.sqlite"
    with Registry(f"sqlite:///{env_db}") as reg:
        reg.report("env-host", "b", "t")
    default = tmp_path / "state" / "fastrpc" / "fastrpc-services.sqlite"
    default.parent.mkdir(parents=True)
    with Registry(f"sqlite:///{default}") as reg:
        reg.report("default-host", "b", "t")

    def hosts(env: dict[str, str], *argv: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "fastrpc.cli", *argv, "service-list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [row["host"] for row in json.loads(done.stdout)]

    assert hosts(_cli_env(tmp_path)) == ["default-host"]
    assert hosts(_cli_env(tmp_path, FASTRPC_DB=f"sqlite:///{env_db}")) == ["env-host"]
    assert hosts(_cli_env(tmp_path, FASTRPC_DB=f"sqlite:///{env_db}"), "--db", f"sqlite:///{default}") == [
        "default-host"
    ]


def test_command_line_unknown_service_status(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastrpc.cli", "service-enable", "nohost", "nobinary"],
        env=_cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no service 'nobinary' on host 'nohost'" in done.stderr


# --- the configuration file -----------------------------------------------------


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fastrpc.conf"
    path.write_text(text)
    return str(path)


def test_config_file_gives_the_database_and_the_down_time(db: str, fleet: Registry, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FASTRPC_DB", raising=False)
    conf = _config(tmp_path, f"[DEFAULT]\nservice_down_time = 600\n\n[database]\nconnection = {db}\n")
    states = {r["host"]: r["state"]
              for r in run_json(capsys, "--config-file", conf, "service-list", "--binary", "fastrpc-compute")}
    assert states == {"h1": "up", "h2": "up"}  # h2's report of 5 minutes ago is within 600 s
    # --down-time beats the file; the file is found through $FASTRPC_CONFIG too.
    monkeypatch.setenv("FASTRPC_CONFIG", conf)
    states = {r["host"]: r["state"]
              for r in run_json(capsys, "service-list", "--binary", "fastrpc-compute", "--down-time", "60")}
    assert states == {"h1": "up", "h2": "down"}


def test_db_option_and_variable_beat_the_config_file(db: str, fleet: Registry, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    Registry(other).close()  # an empty registry
    conf = _config(tmp_path, f"[database]\nconnection = {other}\n")
    monkeypatch.setenv("FASTRPC_CONFIG", conf)
    monkeypatch.delenv("FASTRPC_DB", raising=False)
    assert run_json(capsys, "service-list") == []
    assert len(run_json(capsys, "--db", db, "service-list")) == 3
    monkeypatch.setenv("FASTRPC_DB", db)
    assert len(run_json(capsys, "service-list")) == 3
    assert Registry.resolve_url() == db


def test_unreadable_or_wrong_config_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FASTRPC_DB", raising=False)
    missing = str(tmp_path / "missing.conf")
    assert main(["--config-file", missing, "service-list"]) == 1
    err = capsys.readouterr().err
    assert "cannot read the configuration file" in err and missing in err
    # A line the parser rejects, next to a password: the message names the file, not the line.
    broken = _config(tmp_path, "[database]\nconnection = postgresql://u:s3cret@db/x\nnot an option line\n")
    assert main(["--config-file", broken, "service-list"]) == 1
    err = capsys.readouterr().err
    assert "is not an INI file" in err and "s3cret" not in err
    bad_time = _config(tmp_path, f"[DEFAULT]\nservice_down_time = soon\n[database]\nconnection = sqlite:///{tmp_path}/x.sqlite\n")
    assert main(["--config-file", bad_time, "service-list"]) == 1
    assert "service_down_time" in capsys.readouterr().err
