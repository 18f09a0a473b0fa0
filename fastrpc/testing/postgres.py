"""A throwaway PostgreSQL server for tests.

It runs Debian's PostgreSQL binaries directly (initdb, then the postgres
server in the foreground) with its data, socket and log in one private
temporary directory. It listens on 127.0.0.1 only, on a free port, and trusts
connections from loopback and its own socket, so URLs carry no password.
PostgreSQL refuses to run as root: as root, both run as the ``postgres``
system user the Debian package creates.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from . import reaper
from .node import _process_group_members, _tail
from .ports import LOOPBACK, free_ports, port_accepts

ENV_BIN = "FASTRPC_POSTGRES_BIN"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
_INSTALL_HINT = "install the postgresql Debian package (make test does)"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Durability is worthless for a throwaway cluster (skipping it makes commits
# and CREATE DATABASE quick), and the tests need little shared memory.
_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=32MB",
)

# Only the private socket and 127.0.0.1; everything else is refused.
_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


class PostgresServerError(RuntimeError):
    """The server could not be found, started, stopped, or a command failed."""


def find_bin_dir() -> Path:
    """``$FASTRPC_POSTGRES_BIN``, else the bin directory of the highest
    version under /usr/lib/postgresql."""
    override = os.environ.get(ENV_BIN)
    if override:
        candidates = [Path(override)]
    else:
        versions = [p for p in DEBIAN_ROOT.glob("*") if re.fullmatch(r"\d+(\.\d+)?", p.name)]
        versions.sort(key=lambda p: tuple(int(x) for x in p.name.split(".")), reverse=True)
        candidates = [v / "bin" for v in versions]
    for directory in candidates:
        if all(os.access(directory / exe, os.X_OK) for exe in ("initdb", "postgres", "psql")):
            return directory
    where = f"${ENV_BIN}={override}" if override else f"{DEBIAN_ROOT}/<version>/bin"
    raise PostgresServerError(f"no PostgreSQL binaries (initdb, postgres, psql) in {where}: {_INSTALL_HINT}")


def _server_user() -> pwd.struct_passwd | None:
    """Whom initdb and the server run as: None for the current user, the
    ``postgres`` system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresServerError(
            f"running as root needs the {SERVER_USER!r} system user to run PostgreSQL: {_INSTALL_HINT}"
        ) from None


class PostgresServer:
    """One PostgreSQL cluster in a private directory on a private loopback port.

    ``PostgresServer()`` runs initdb, starts the server, creates ``database``
    and returns once it answers. :attr:`url` is a SQLAlchemy URL for it;
    :meth:`create_database` makes more. Use as a context manager or call
    :meth:`stop` to end it and delete its directory. When it does not
    start, the error names a copy of its logs that is kept.
    """

    def __init__(
        self,
        database: str = "fastrpc",
        user: str = "fastrpc",
        *,
        port: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.database: str = _checked_name(database)
        self.user: str = _checked_name(user)
        self.host: str = LOOPBACK
        self.start_timeout = start_timeout
        self._bin = find_bin_dir()
        self._owner = _server_user()
        self._proc: subprocess.Popen[bytes] | None = None
        self._removed = False
        self.port: int = port if port is not None else free_ports(1)[0]
        self.workdir: Path = Path(tempfile.mkdtemp(prefix="fastrpc-pg-"))
        # Should this process be killed, the reaper removes the directory too.
        self._reaper_key = f"postgres-{self.workdir.name}"
        reaper.on_exit(self._reaper_key, ["rm", "-rf", "--", str(self.workdir)])
        self.data_dir: Path = self.workdir / "data"
        self.socket_dir: Path = self.workdir / "socket"
        self.log_file: Path = self.workdir / "postgres.log"
        self._initdb_log = self.workdir / "initdb.log"
        # stop() removes the directory: what a start error names must outlive it.
        self.failure_log: Path = self.workdir.with_name(self.workdir.name + ".log")
        try:
            self._prepare()
            self._start()
            self.create_database(self.database)
        except BaseException as exc:
            try:
                self._halt(timeout=10)
            finally:
                if isinstance(exc, PostgresServerError):
                    self._keep_logs()
                self.stop()
            raise

    # -- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database (psycopg 3 driver, no password)."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{_checked_name(database)}"

    @property
    def pid(self) -> int | None:
        """Pid of the postmaster (None when not running)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- set-up ----------------------------------------------------------

    def _prepare(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        if self._owner is not None:
            for path in (self.workdir, self.socket_dir):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        initdb = [
            str(self._bin / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={self.user}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        log = self._initdb_log
        try:
            with open(log, "ab") as out:
                done = subprocess.run(
                    self._as_owner(initdb),
                    env=self._env(),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=self.start_timeout,
                )
        except subprocess.TimeoutExpired:
            raise PostgresServerError(
                f"initdb took over {self.start_timeout} s; see {self.failure_log}:\n{_tail(log)}"
            ) from None
        if done.returncode != 0:
            raise PostgresServerError(f"initdb failed ({done.returncode}); see {self.failure_log}:\n{_tail(log)}")
        # Overwritten in place, so the file keeps the server user as owner.
        (self.data_dir / "pg_hba.conf").write_text(_HBA)

    def _as_owner(self, argv: list[str]) -> list[str]:
        if self._owner is None:
            return argv
        # setpriv execs (no intermediate process), so our child is the server.
        name = self._owner.pw_name
        return ["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups", "--", *argv]

    def _env(self) -> dict[str, str]:
        # Inherited PG* settings (PGDATA, PGHOST, ...) must not reach a private cluster.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
        env.update(HOME=str(self.workdir), LANG="C", LC_ALL="C")
        return env

    def _start(self) -> None:
        argv = [
            str(self._bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
        ]
        for setting in _SETTINGS:
            argv += ["-c", setting]
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                self._as_owner(argv),
                env=self._env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        reaper.watch(self._proc.pid)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while not (self._pid_file_says_ready() and port_accepts(self.host, self.port, timeout=0.5)):
            code = self._proc.poll()
            if code is not None:
                raise PostgresServerError(
                    f"postgres exited with status {code} while starting; "
                    f"see {self.failure_log}:\n{_tail(self.log_file)}"
                )
            if time.monotonic() >= deadline:
                raise PostgresServerError(
                    f"postgres did not accept connections on {self.host}:{self.port} within "
                    f"{self.start_timeout} s; see {self.failure_log}:\n{_tail(self.log_file)}"
                )
            time.sleep(0.02)

    def _pid_file_says_ready(self) -> bool:
        # The postmaster writes its state on line 8 of postmaster.pid
        # ("ready" once it accepts connections); pg_ctl -w reads the same.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    # -- administration ---------------------------------------------------

    def execute(self, sql: str, database: str | None = None, timeout: float = 60.0) -> str:
        """Run ``sql`` with psql over the private socket as the superuser;
        return its unaligned, tuples-only output."""
        if not self.running:
            raise PostgresServerError("the server is not running")
        argv = [
            str(self._bin / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--set=ON_ERROR_STOP=1",
            f"--host={self.socket_dir}",
            f"--port={self.port}",
            f"--username={self.user}",
            f"--dbname={_checked_name(database or 'postgres')}",
            f"--command={sql}",
        ]
        try:
            done = subprocess.run(argv, env=self._env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PostgresServerError(f"psql timed out after {timeout} s") from None
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()
            raise PostgresServerError(f"psql failed ({done.returncode}): {err[-2000:]}")
        return done.stdout.decode(errors="replace")

    def create_database(self, name: str) -> str:
        """Create database ``name`` (lower-case letters, digits, _); return its URL."""
        self.execute(f"CREATE DATABASE {_checked_name(name)}")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing any connection still open to it."""
        self.execute(f"DROP DATABASE IF EXISTS {_checked_name(name)} WITH (FORCE)")

    def _keep_logs(self) -> None:
        with open(self.failure_log, "wb") as out:
            for log in (self._initdb_log, self.log_file):
                if log.exists():
                    out.write(f"--- {log.name} ---\n".encode() + log.read_bytes())

    # -- stopping ----------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown, then SIGKILL) and delete its directory."""
        try:
            self._halt(timeout)
        finally:
            if not self._removed:
                shutil.rmtree(self.workdir, ignore_errors=True)
                reaper.cancel(self._reaper_key)
                self._removed = True

    def _halt(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid
        if proc.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Backends of a killed or stuck postmaster may linger.
        _kill_group(pgid)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise PostgresServerError(f"postgres (pid {pgid}) survived SIGKILL") from None
        deadline = time.monotonic() + 10
        while _process_group_members(pgid):
            if time.monotonic() >= deadline:
                raise PostgresServerError(f"processes of postgres group {pgid} survived SIGKILL")
            time.sleep(0.02)
        reaper.forget(pgid)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"PostgresServer({self.host}:{self.port}, database={self.database!r}, {state})"


def _checked_name(name: str) -> str:
    """A database or user name safe to put into SQL and URLs unquoted."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain lower-case identifier: {name!r}")
    return name


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
