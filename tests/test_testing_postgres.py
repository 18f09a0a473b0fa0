"""The throwaway PostgreSQL server the registry tests run against."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from fastrpc.testing import PostgresServer, PostgresServerError
from fastrpc.testing.node import _process_group_members
from fastrpc.testing.ports import port_accepts

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a LISTEN socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def select(url: str, sql: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_server_answers_on_loopback_only_and_stop_leaves_nothing() -> None:
    server = PostgresServer()
    try:
        pid = server.pid
        assert pid is not None and server.running
        assert server.url == f"postgresql+psycopg://fastrpc@127.0.0.1:{server.port}/fastrpc"
        assert select(server.url, "SELECT 1") == 1
        assert select(server.url, "SELECT current_database()") == "fastrpc"
        assert listening_addresses(server.port) == {LOOPBACK_HEX}
        # PostgreSQL refuses root; as root the server runs as the postgres user.
        expected_uid = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert process_uid(pid) == expected_uid
        workdir = server.workdir
        assert workdir.is_dir()
    finally:
        server.stop()
    assert not server.running and server.pid is None
    assert gone(pid) and _process_group_members(pid) == []
    assert not workdir.exists()
    assert not port_accepts("127.0.0.1", server.port, timeout=0.5)
    server.stop()  # a second stop is harmless


def test_fixture_databases_are_separate(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("harness_check")
    try:
        assert url.endswith("/harness_check")
        postgres_server.execute("CREATE TABLE only_here (x int)", database="harness_check")
        assert select(url, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'") == 1
        assert select(postgres_server.url, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'") == 0
    finally:
        postgres_server.drop_database("harness_check")
    assert postgres_server.execute("SELECT count(*) FROM pg_database WHERE datname = 'harness_check'").strip() == "0"


def test_names_are_checked_before_they_reach_sql(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError):
        postgres_server.create_database("x; DROP DATABASE fastrpc")
    with pytest.raises(PostgresServerError, match="psql failed"):
        postgres_server.execute("SELECT * FROM no_such_table")


def test_missing_binaries_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTRPC_POSTGRES_BIN", str(tmp_path))
    with pytest.raises(PostgresServerError, match=r"install the postgresql Debian package \(make test does\)"):
        PostgresServer()


def test_a_server_that_cannot_start_names_its_kept_log() -> None:
    # Something else holds the port: postgres exits at once.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PostgresServerError) as info:
            PostgresServer(port=port)
    message = str(info.value)
    assert "while starting" in message
    log = Path(message.split("see ", 1)[1].split(":\n", 1)[0])
    try:
        assert log.is_file() and "could not bind" in log.read_text()
        assert not log.with_suffix("").exists()  # the server's directory is gone
    finally:
        log.unlink(missing_ok=True)


REAPER_CHILD = """
import os, signal, sys
from fastrpc.testing import PostgresServer
server = PostgresServer()
print(server.pid, server.workdir, flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)  # no finalizer, no atexit
"""


def test_a_killed_owner_leaves_no_server_and_no_directory() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", REAPER_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        pid_text, workdir_text = child.stdout.readline().split()
        pid, workdir = int(pid_text), Path(workdir_text)
        assert not gone(pid) and workdir.is_dir()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert wait_until(lambda: gone(pid) and not _process_group_members(pid), timeout=30), "postgres survived"
    assert wait_until(lambda: not workdir.exists(), timeout=30), f"{workdir} was left behind"
