"""A private Erlang port mapper daemon on a loopback port of its own.

Nodes that should see each other (a cluster) share one Epmd; a lone test node gets
its own, so it never registers with, or depends on, a system broker's epmd.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from . import reaper
from .ports import LOOPBACK, free_ports, port_accepts


class EpmdError(RuntimeError):
    pass


class Epmd:
    def __init__(self, port: int | None = None, start_timeout: float = 10.0) -> None:
        self.port: int = port if port is not None else free_ports(1)[0]
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Epmd:
        if self.running:
            return self
        exe = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        # Foreground (no -daemon) so this object owns the process and can end it.
        self._proc = subprocess.Popen(
            [exe, "-port", str(self.port), "-address", LOOPBACK],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        reaper.watch(self._proc.pid)
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                reaper.forget(self._proc.pid)
                self._proc = None
                raise EpmdError(f"epmd on port {self.port} exited at start: {err.strip()}")
            if port_accepts(LOOPBACK, self.port, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise EpmdError(f"epmd did not listen on {LOOPBACK}:{self.port} within {self._start_timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
        reaper.forget(proc.pid)

    def __enter__(self) -> Epmd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Epmd(port={self.port}, running={self.running})"
