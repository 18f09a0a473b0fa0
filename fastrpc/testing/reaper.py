"""Kill the broker processes we started if this process dies without stopping them.

Nodes and epmd run in sessions of their own (so signals meant for the test
run do not reach them), which also means nothing ends them when the test run
is killed before its finalizers run. A small guardian process, started on
first use, holds the other end of a pipe: it is told which process groups to
watch and which to forget, and when the pipe reaches end-of-file (this
process exited, normally, by a signal or by SIGKILL) it kills every group
still watched. Groups stopped properly were forgotten before.

Clean-up commands (e.g. removing firewall rules) can be left with it the same
way: :func:`on_exit` registers one under a key, :func:`cancel` withdraws it,
and the guardian runs what is still registered after killing the groups.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

# The guardian: "+pgid" watch, "-pgid" forget, "!key argv-as-json" register a
# command, "~key" withdraw it; end-of-file means the owner exited (normally or
# not): kill what is still watched, then run what is still registered.
_GUARDIAN = r"""
import json, os, signal, subprocess, sys
watched = set()
commands = {}
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+":
        watched.add(int(line[1:]))
    elif line[:1] == "-":
        watched.discard(int(line[1:]))
    elif line[:1] == "!":
        key, _, argv = line[1:].partition(" ")
        commands[key] = json.loads(argv)
    elif line[:1] == "~":
        commands.pop(line[1:], None)
for pgid in watched:
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
for argv in commands.values():
    try:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
    except Exception:
        pass
"""

_lock = threading.Lock()
_pipe: IO[bytes] | None = None
_guardian: subprocess.Popen[bytes] | None = None


def _tell(line: str) -> None:
    global _pipe, _guardian
    with _lock:
        if _pipe is None:
            if line[0] not in "+!":
                return
            _guardian = subprocess.Popen(
                [sys.executable, "-c", _GUARDIAN],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not hit by the Ctrl-C meant for us
            )
            _pipe = _guardian.stdin
        assert _pipe is not None
        try:
            _pipe.write(line.encode() + b"\n")
            _pipe.flush()
        except OSError:
            pass  # guardian gone: nothing more can be done from here


def watch(pgid: int) -> None:
    """Kill process group ``pgid`` if this process dies before :func:`forget`."""
    _tell(f"+{pgid}")


def forget(pgid: int) -> None:
    """``pgid`` was stopped properly: stop watching it."""
    _tell(f"-{pgid}")


def on_exit(key: str, argv: Sequence[str]) -> None:
    """Run ``argv`` if this process dies before :func:`cancel` of ``key``.

    ``key`` must hold no whitespace; registering a key again replaces its command.
    """
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"reaper key must be non-empty without whitespace: {key!r}")
    _tell(f"!{key} {json.dumps(list(argv))}")


def cancel(key: str) -> None:
    """The clean-up registered under ``key`` was done: do not run it."""
    _tell(f"~{key}")


def guardian_pid() -> int | None:
    """Pid of the guardian process (None before the first :func:`watch`)."""
    return _guardian.pid if _guardian is not None else None
