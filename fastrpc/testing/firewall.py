"""Silence loopback TCP ports with iptables, in a private chain that is removed exactly.

Every :class:`LoopbackFirewall` owns one chain, ``fastrpc-<pid>-<hex>`` (the pid
of the process that made it), reached from ``INPUT`` through a single rule
``-i lo -j <chain>``. Blocking a port adds two DROP rules to that chain (packets
to the port and packets from it), so connections to the port time out instead
of being refused, and the sockets already open through it go silent; nothing
outside the chain is ever changed. Rules go in ``INPUT`` only: a packet dropped
in ``OUTPUT`` fails the sender's system call (EPERM), which is not silence.

Clean-up: :meth:`LoopbackFirewall.close` removes the chain; a reaper command
removes it if this process is killed first; and :func:`remove_stale_chains`
(called when a cluster starts) removes chains whose creating process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable

from . import reaper

CHAIN_PREFIX = "fastrpc-"
_CHAIN_RE = re.compile(rf"^-N ({re.escape(CHAIN_PREFIX)}(\d+)-[0-9a-f]+)$")
_JUMP = ("-i", "lo", "-j")


class FirewallError(RuntimeError):
    """iptables is missing or refused a command."""


def iptables_path() -> str | None:
    """Path of the iptables command, or None when it is not installed."""
    return shutil.which("iptables") or next(
        (p for p in ("/usr/sbin/iptables", "/sbin/iptables") if os.access(p, os.X_OK)), None
    )


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = iptables_path()
    if exe is None:
        raise FirewallError("iptables is not installed (Debian package: iptables)")
    # -w: wait for the xtables lock instead of failing when another run holds it.
    proc = subprocess.run([exe, "-w", *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise FirewallError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _remove_chain(chain: str) -> None:
    # The jump may have been added more than once by hand; delete until none is left.
    while _run("-D", "INPUT", *_JUMP, chain, check=False).returncode == 0:
        pass
    _run("-F", chain, check=False)
    _run("-X", chain, check=False)


def _removal_command(chain: str) -> list[str]:
    exe = iptables_path() or "iptables"
    return [
        "sh",
        "-c",
        f"while {exe} -w -D INPUT -i lo -j {chain} 2>/dev/null; do :; done; "
        f"{exe} -w -F {chain}; {exe} -w -X {chain}",
    ]


def remove_stale_chains() -> list[str]:
    """Remove the chains of processes that no longer exist; return their names."""
    if iptables_path() is None:
        return []
    removed = []
    for line in _run("-S").stdout.splitlines():
        match = _CHAIN_RE.match(line.strip())
        if match is None or _pid_alive(int(match.group(2))):
            continue
        _remove_chain(match.group(1))
        removed.append(match.group(1))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# iptables matches per direction of LoopbackFirewall.block.
_MATCHES = {"both": ("--dport", "--sport"), "to": ("--dport",), "from": ("--sport",)}


class LoopbackFirewall:
    """DROP rules for chosen loopback TCP ports, in a chain of its own (made on first use)."""

    def __init__(self) -> None:
        self.chain: str = f"{CHAIN_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self._created = False
        self._blocked: dict[int, tuple[str, ...]] = {}

    @property
    def blocked(self) -> frozenset[int]:
        return frozenset(self._blocked)

    def exists(self) -> bool:
        """True when the chain is present in the kernel's filter table."""
        return iptables_path() is not None and _run("-S", self.chain, check=False).returncode == 0

    def rules(self) -> list[str]:
        """The chain's rules as ``iptables -S`` prints them (empty when it does not exist)."""
        proc = _run("-S", self.chain, check=False)
        if proc.returncode != 0:
            return []
        return [line for line in proc.stdout.splitlines() if line.startswith("-A ")]

    def _create(self) -> None:
        if self._created:
            return
        reaper.on_exit(self.chain, _removal_command(self.chain))
        _run("-N", self.chain)
        self._created = True
        _run("-I", "INPUT", *_JUMP, self.chain)

    def block(self, ports: Iterable[int], direction: str = "both") -> None:
        """Drop every loopback TCP packet to or from each of ``ports``;
        ``direction="from"`` only those it sends, ``"to"`` only those it
        receives (a one-way loss: one side's packets vanish, the other's
        still arrive)."""
        matches = _MATCHES[direction]
        self._create()
        for port in ports:
            if port in self._blocked:
                continue
            for match in matches:
                _run("-A", self.chain, "-p", "tcp", match, str(port), "-j", "DROP")
            self._blocked[port] = matches

    def unblock(self, ports: Iterable[int]) -> None:
        """Remove the rules :meth:`block` added for each of ``ports``."""
        for port in ports:
            matches = self._blocked.pop(port, None)
            for match in matches or ():
                _run("-D", self.chain, "-p", "tcp", match, str(port), "-j", "DROP", check=False)

    def close(self) -> None:
        """Remove the chain and the jump to it (nothing else is touched)."""
        if not self._created:
            return
        _remove_chain(self.chain)
        self._created = False
        self._blocked.clear()
        reaper.cancel(self.chain)

    def __enter__(self) -> LoopbackFirewall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LoopbackFirewall({self.chain}, blocked={sorted(self._blocked)})"
