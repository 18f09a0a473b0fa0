"""A throwaway RabbitMQ node for tests, demos and benchmarks.

It runs Debian's rabbitmq-server script directly (not the service, not the wrapper
that switches user, so it works as root) with every path, port and the Erlang
cookie private to one temporary directory. All listeners bind to 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import certs, reaper
from .epmd import Epmd
from .ports import LOOPBACK, amqp_answers, free_ports, port_accepts

RABBITMQ_BIN = Path(os.environ.get("FASTRPC_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))

# Settings that make a disposable node quick to boot and hard to upset: no
# plugins, no disk alarm on small /tmp filesystems, logs to one file.
_BASE_CONFIG = (
    "log.console = false",
    "log.file.level = info",
    "disk_free_limit.absolute = 8MB",
    # guest may connect from loopback only (the default, stated for clarity).
    "loopback_users.guest = true",
)


class RabbitNodeError(RuntimeError):
    """The node failed to start, to stop, or a rabbitmqctl command failed."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _process_group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in process group `pgid` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # comm is parenthesised and may hold spaces; fields after it are fixed.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(entry), comm))
    return members


def _process_state(pid: int) -> str:
    """Single-letter state of `pid` from /proc ("T" = stopped by a signal); "" if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :].split()[0]


class RabbitNode:
    """One RabbitMQ node in a private directory with private loopback ports.

    ``RabbitNode()`` starts the node and returns once AMQP answers (pass
    ``autostart=False`` to configure first and call :meth:`start` later). Use as a
    context manager or call :meth:`stop` to end it and delete its directory.

    ``config`` adds rabbitmq.conf lines (e.g. ``"heartbeat = 5"``) and
    ``advanced_config`` is the text of advanced.config (Erlang terms, e.g.
    ``"[{kernel, [{net_ticktime, 10}]}]."``). ``management=True`` enables the
    management plugin on a private loopback port (``management_port``). Nodes
    meant to form a cluster share an ``epmd`` and a ``cookie``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        *,
        tls: bool = False,
        config: Iterable[str] = (),
        epmd: Epmd | None = None,
        cookie: str | None = None,
        management: bool = False,
        advanced_config: str | None = None,
        start_timeout: float = 180.0,
        autostart: bool = True,
    ) -> None:
        suffix = secrets.token_hex(4)
        self.name: str = name or f"fastrpc-{suffix}"
        self.nodename: str = f"{self.name}@localhost"
        self.host: str = LOOPBACK
        self.tls: bool = tls
        self.start_timeout = start_timeout
        self._extra_config = list(config)
        self._advanced_config = advanced_config
        self.management: bool = management
        self._cookie = cookie or "".join(secrets.choice(string.ascii_uppercase) for _ in range(32))

        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        # Always a fresh subdirectory: stop() deletes it, never a caller's directory.
        self.workdir: Path = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=workdir))

        ports = free_ports(2 + tls + management)
        self.port: int = ports.pop(0)
        self.dist_port: int = ports.pop(0)
        self.tls_port: int | None = ports.pop(0) if tls else None
        self.management_port: int | None = ports.pop(0) if management else None

        self._own_epmd = epmd is None
        self._epmd: Epmd = epmd if epmd is not None else Epmd()
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: Path = self.workdir / "console.log"
        self.log_file: Path = self.workdir / "log" / "rabbit.log"
        self._paused = False
        self._removed = False

        self.ca_file: str | None = None
        self.client_cert: str | None = None
        self.client_key: str | None = None
        self._tls_files: certs.TLSFiles | None = None

        try:
            self._prepare()
            if autostart:
                self.start()
        except BaseException:
            self.stop()
            raise

    # -- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RabbitNodeError("this node was started without tls=True")
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API (``management=True`` only)."""
        if self.management_port is None:
            raise RabbitNodeError("this node was started without management=True")
        return f"http://{self.host}:{self.management_port}/"

    @property
    def epmd_port(self) -> int:
        return self._epmd.port

    @property
    def cookie(self) -> str:
        return self._cookie

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    # -- files -----------------------------------------------------------

    def _prepare(self) -> None:
        home = self.workdir / "home"
        for sub in ("home", "mnesia", "log"):
            (self.workdir / sub).mkdir(mode=0o700, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(self._cookie)
        # Erlang refuses a cookie file readable by others.
        os.chmod(cookie, 0o400)
        plugins = "[rabbitmq_management]" if self.management else "[]"
        (self.workdir / "enabled_plugins").write_text(plugins + ".\n")
        if self._advanced_config is not None:
            (self.workdir / "advanced.config").write_text(self._advanced_config.rstrip() + "\n")
        (self.workdir / "rabbitmq-env.conf").write_text("")
        if self.tls:
            self._tls_files = certs.generate(self.workdir / "tls")
            self.ca_file = self._tls_files.ca_file
            self.client_cert = self._tls_files.client_cert
            self.client_key = self._tls_files.client_key
        self._write_config()

    def _write_config(self) -> None:
        lines = list(_BASE_CONFIG)
        lines.append(f"listeners.tcp.1 = {LOOPBACK}:{self.port}")
        if self._tls_files is not None:
            lines += [
                f"listeners.ssl.1 = {LOOPBACK}:{self.tls_port}",
                f"ssl_options.cacertfile = {self._tls_files.ca_file}",
                f"ssl_options.certfile = {self._tls_files.server_cert}",
                f"ssl_options.keyfile = {self._tls_files.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        if self.management_port is not None:
            lines += [f"management.tcp.ip = {LOOPBACK}", f"management.tcp.port = {self.management_port}"]
        lines += self._extra_config
        (self.workdir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    def _env(self) -> dict[str, str]:
        # Start from a clean slate: inherited RABBITMQ_* / ERL_* settings (a
        # developer's shell, a CI image) must not leak into a private node.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        dist_only_loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            HOME=str(self.workdir / "home"),
            LC_ALL="C.UTF-8",
            LANG="C.UTF-8",
            ERL_EPMD_PORT=str(self._epmd.port),
            ERL_EPMD_ADDRESS=LOOPBACK,
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=LOOPBACK,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_MNESIA_DIR=str(self.workdir / "mnesia" / self.nodename),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_LOGS=str(self.log_file),
            RABBITMQ_CONFIG_FILE=str(self.workdir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.workdir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.workdir / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.workdir / "rabbit.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=dist_only_loopback,
            RABBITMQ_CTL_ERL_ARGS=dist_only_loopback,
        )
        return env

    # -- lifecycle -------------------------------------------------------

    def start(self) -> RabbitNode:
        """Boot the node (again, after :meth:`halt`) and wait until AMQP answers."""
        if self._removed:
            raise RabbitNodeError("this node was stopped and its directory removed")
        if self.running:
            return self
        self._epmd.start()
        with open(self._console, "ab") as console:
            self._proc = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self._env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        reaper.watch(self._proc.pid)
        self._paused = False
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RabbitNodeError(
                    f"{self.nodename} exited with status {code} while starting\n{self.diagnostics()}"
                )
            # The TCP listener opens late in boot; a cheap connect first avoids
            # a full probe against a port that cannot answer yet.
            if port_accepts(self.host, self.port, timeout=0.5) and amqp_answers(self.host, self.port, timeout=2.0):
                if all(port_accepts(self.host, p, timeout=0.5) for p in self._extra_listeners()):
                    return
            if time.monotonic() >= deadline:
                diagnostics = self.diagnostics()
                self.halt(graceful=False)
                raise RabbitNodeError(
                    f"{self.nodename} did not accept AMQP on {self.host}:{self.port} "
                    f"within {self.start_timeout} s\n{diagnostics}"
                )
            time.sleep(0.1)

    def _extra_listeners(self) -> list[int]:
        return [p for p in (self.tls_port, self.management_port) if p is not None]

    def diagnostics(self) -> str:
        """Tails of the console output and of the log file, for error messages."""
        return (
            f"--- {self._console} (tail) ---\n{_tail(self._console)}\n"
            f"--- {self.log_file} (tail) ---\n{_tail(self.log_file)}"
        )

    def beam_pid(self) -> int:
        """Pid of the Erlang VM (beam.smp) running this node."""
        if self._proc is None:
            raise RabbitNodeError(f"{self.nodename} is not running")
        for pid, comm in _process_group_members(self._proc.pid):
            if comm.startswith("beam"):
                return pid
        raise RabbitNodeError(f"no beam.smp process found for {self.nodename}")

    def pause(self, timeout: float = 10.0) -> None:
        """Freeze the Erlang VM (SIGSTOP): sockets stay open but nothing answers.

        Returns once the kernel reports the process stopped (signals are delivered
        asynchronously).
        """
        pid = self.beam_pid()
        os.kill(pid, signal.SIGSTOP)
        self._paused = True
        self._wait_state(pid, stopped=True, timeout=timeout)

    def resume(self, timeout: float = 10.0) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        pid = self.beam_pid()
        os.kill(pid, signal.SIGCONT)
        self._paused = False
        self._wait_state(pid, stopped=False, timeout=timeout)

    def _wait_state(self, pid: int, stopped: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (_process_state(pid) in ("T", "t")) != stopped:
            if time.monotonic() >= deadline:
                raise RabbitNodeError(f"{self.nodename} (pid {pid}) did not {'stop' if stopped else 'continue'}")
            time.sleep(0.01)

    def halt(self, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop the Erlang node but keep its directory, ports and data.

        ``graceful=False`` kills it like a crash would. :meth:`start` boots it
        again on the same ports (a broker restart, as seen by clients).
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid
        if self._paused:
            # A stopped VM cannot act on SIGTERM; wake the whole group first.
            self._signal_group(pgid, signal.SIGCONT)
            self._paused = False
        if proc.poll() is None:
            if graceful:
                # The script traps TERM and asks the VM to shut down cleanly.
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            self._signal_group(pgid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired as exc:
                raise RabbitNodeError(f"{self.nodename} (pid {proc.pid}) survived SIGKILL") from exc
        # Helpers of the VM (erl_child_setup, inet_gethost) may outlive the script.
        self._signal_group(pgid, signal.SIGKILL)
        self._wait_group_gone(pgid, timeout=10)
        reaper.forget(pgid)
        # The kernel closes a killed VM's listening sockets a moment after the
        # process is gone; return once the AMQP port refuses connections.
        deadline = time.monotonic() + 5.0
        while port_accepts(self.host, self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.02)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _process_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the node, the epmd it started, and delete its directory."""
        try:
            self.halt()
        finally:
            if self._own_epmd:
                self._epmd.stop()
            if not self._removed:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self._removed = True

    def restart(self, graceful: bool = True) -> None:
        self.halt(graceful=graceful)
        self.start()

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else ("running" if self.running else "stopped")
        return f"RabbitNode({self.nodename}, amqp={self.host}:{self.port}, {state})"

    # -- administration ---------------------------------------------------

    def ctl(self, *args: str, timeout: float = 60.0, quiet: bool = True, stdin: bytes | None = None) -> str:
        """Run ``rabbitmqctl`` against this node; return its stdout.

        ``stdin`` is fed to the command (secrets go there, never into the
        arguments, which any local user can read in /proc). Raises
        RabbitNodeError (with stderr and only the command name) when the
        command fails.
        """
        cmd = [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename]
        if quiet:
            cmd.append("-q")
        cmd += [str(a) for a in args]
        command = args[0] if args else ""
        try:
            proc = subprocess.run(
                cmd,
                env=self._env(),
                cwd=self.workdir,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"rabbitmqctl {command} timed out after {timeout} s on {self.nodename}") from exc
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            raise RabbitNodeError(f"rabbitmqctl {command} failed ({proc.returncode}) on {self.nodename}: {err[-2000:]}")
        return proc.stdout.decode(errors="replace")

    def add_vhost(self, vhost: str) -> None:
        self.ctl("add_vhost", vhost)

    def add_user(
        self,
        username: str,
        password: str,
        *,
        vhosts: Sequence[str] = ("/",),
        tags: Sequence[str] = (),
        permissions: tuple[str, str, str] = (".*", ".*", ".*"),
    ) -> None:
        """Create a user with (configure, write, read) permissions on each vhost."""
        # Without the password argument rabbitmqctl reads it from stdin.
        self.ctl("add_user", username, stdin=password.encode() + b"\n")
        if tags:
            self.ctl("set_user_tags", username, *tags)
        for vhost in vhosts:
            self.ctl("set_permissions", "-p", vhost, username, *permissions)

    def set_memory_watermark(self, fraction: float) -> None:
        """Change vm_memory_high_watermark at run time (tiny values raise the
        memory alarm, so publishers get connection.blocked)."""
        self.ctl("set_vm_memory_high_watermark", repr(fraction))

    def amqp_answers(self, timeout: float = 2.0) -> bool:
        """True when the AMQP port answers the protocol header with connection.start."""
        return amqp_answers(self.host, self.port, timeout=timeout)

    def accepts(self, timeout: float = 1.0) -> bool:
        """True when the AMQP port accepts TCP connections."""
        return port_accepts(self.host, self.port, timeout=timeout)
