"""A long-running service: an RPC server for its manager, a state report
every ``report_interval`` into the registry (straight to the database, or
through a conductor over RPC), and the manager's periodic tasks.

The report is what ``fastrpc service-list`` reads: a service that stops
reporting for ``service_down_time`` shows down. So the report must travel
on a path that survives what the service itself survives (fastrpc's
failover), must not lie (a manager that says it is not working stops
reporting, on purpose), and must not flood the log when the registry is
away (one line when reports start failing, one when they work again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from fastrpc.server import get_rpc_server
from fastrpc.target import Target

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

STOP_TIMEOUT = 60.0  # seconds stop() lets requests in flight finish


class ReportSink(Protocol):
    """Where a service's reports go: a Registry, or a ConductorClient."""

    def report(self, host: str, binary: str, topic: str, availability_zone: str | None = None) -> Any:
        """Count one report of (host, binary) now."""

    def mark_stopped(self, host: str, binary: str) -> Any:
        """The service stopped on purpose: show it down at once."""


def periodic_task(spacing: float = 0.0) -> Callable[[F], F]:
    """Mark a manager method to run every ``spacing`` seconds (0: every
    ``periodic_interval`` of its service), called with no argument."""
    if spacing < 0:
        raise ValueError(f"spacing must be >= 0, not {spacing!r}")

    def mark(func: F) -> F:
        func._fastrpc_periodic_spacing = float(spacing)  # type: ignore[attr-defined]
        return func

    return mark


def periodic_tasks(manager: Any) -> list[tuple[str, float, Callable[[], Any]]]:
    """(name, spacing, bound method) of every periodic task of ``manager``."""
    found = []
    for name in sorted(dir(type(manager))):
        spacing = getattr(getattr(type(manager), name, None), "_fastrpc_periodic_spacing", None)
        if spacing is not None:
            found.append((name, spacing, getattr(manager, name)))
    return found


def open_registry(registry: Any) -> ReportSink:
    """``registry`` as a report sink: a database URL (or None: FASTRPC_DB,
    then the default SQLite file) opens a Registry; anything with
    ``report`` and ``mark_stopped`` (a Registry, a ConductorClient) is used as is."""
    if registry is None or isinstance(registry, str):
        from fastrpc.service.registry import Registry

        return Registry(registry)
    return registry  # type: ignore[no-any-return]


class Service:
    """One service process's RPC server, state reports and periodic tasks.

    ``start()`` serves ``Target(topic, server=host)`` with ``manager`` (and
    ``manager.additional_endpoints``) as endpoints, registers the service
    (its first report), then reports every ``report_interval`` seconds and
    runs the periodic tasks after a random delay of up to
    ``periodic_fuzzy_delay`` seconds (so a fleet started together does not
    run them in step). ``stop()`` stops taking requests, lets those in
    flight finish (up to ``stop_timeout``), releases its queues and marks
    the service stopped in the registry. ``wait()`` returns once stopped.
    """

    def __init__(self, transport: Any, host: str, binary: str, topic: str, manager: Any,
                 report_interval: float = 10, periodic_interval: float = 60,
                 periodic_fuzzy_delay: float = 60, registry: Any = None,
                 availability_zone: str | None = None, stop_timeout: float = STOP_TIMEOUT) -> None:
        if report_interval <= 0:
            raise ValueError(f"report_interval must be > 0, not {report_interval!r}")
        if periodic_interval <= 0:
            raise ValueError(f"periodic_interval must be > 0, not {periodic_interval!r}")
        self.transport = transport
        self.host = host
        self.binary = binary
        self.topic = topic
        self.manager = manager
        self.report_interval = float(report_interval)
        self.periodic_interval = float(periodic_interval)
        self.periodic_fuzzy_delay = max(0.0, float(periodic_fuzzy_delay))
        self.availability_zone = availability_zone
        self.stop_timeout = stop_timeout
        self._registry_arg = registry
        self.registry: ReportSink | None = None
        self.server: Any = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reporting_ok: bool | None = None  # None: nothing reported yet
        self._working: bool | None = None
        self.reports = 0  # reports the registry took
        self.report_failures = 0

    def __repr__(self) -> str:
        return f"Service({self.binary} on {self.host}, topic {self.topic!r})"

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Serve, register and begin reporting; returns once the server listens."""
        self.registry = open_registry(self._registry_arg)
        endpoints = [self.manager, *getattr(self.manager, "additional_endpoints", [])]
        self.server = get_rpc_server(self.transport, Target(topic=self.topic, server=self.host), endpoints,
                                     executor="threading")
        self.server.start()
        self.report_state()
        self._spawn(self._report_loop, "report")
        if periodic_tasks(self.manager):
            self._spawn(self._periodic_loop, "periodic")
        LOG.info("%r started", self)

    def stop(self) -> None:
        """Stop gracefully: no new requests, those in flight finish (bounded),
        queues released, the service marked stopped in the registry."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        server = self.server
        if server is not None:
            server.stop()
            finishing = threading.Thread(target=server.wait, name=f"fastrpc-service-stop-{self.binary}",
                                         daemon=True)
            finishing.start()
            finishing.join(self.stop_timeout)
            if finishing.is_alive():
                LOG.warning("%r: requests still running after %.0fs; stopping without them", self,
                            self.stop_timeout)
        for thread in self._threads:
            thread.join(self.stop_timeout)
        registry = self.registry
        if registry is not None:
            try:
                registry.mark_stopped(self.host, self.binary)
            except Exception as exc:  # the registry may be away: stopping goes on
                LOG.warning("%r: could not mark the service stopped: %s", self, exc)
        self._stopped.set()
        LOG.info("%r stopped", self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (or ``timeout``); whether it is."""
        return self._stopped.wait(timeout)

    def reset(self) -> None:
        """Reload what can be reloaded (SIGHUP): the manager's ``reset()``, if any."""
        reset = getattr(self.manager, "reset", None)
        if callable(reset):
            reset()

    # -- reports -------------------------------------------------------------

    def report_state(self) -> bool:
        """Report once, unless the manager says it is not working; whether
        the registry took a report. Failures are logged once per change."""
        is_working = getattr(self.manager, "is_working", None)
        working = bool(is_working()) if callable(is_working) else True
        if working != self._working:
            if not working:
                LOG.warning("%r: the manager is not working; not reporting, so it shows down", self)
            elif self._working is not None:
                LOG.info("%r: the manager works again; reporting", self)
            self._working = working
        if not working:
            return False
        assert self.registry is not None
        try:
            self.registry.report(self.host, self.binary, self.topic, self.availability_zone)
        except Exception as exc:  # any registry or RPC failure: keep serving, report later
            self.report_failures += 1
            if self._reporting_ok is not False:
                LOG.warning("%r: state report failed (%s); retrying every %gs, logged again once it works",
                            self, exc, self.report_interval)
            self._reporting_ok = False
            return False
        if self._reporting_ok is False:
            LOG.info("%r: state reports work again", self)
        self._reporting_ok = True
        self.reports += 1
        return True

    def _report_loop(self) -> None:
        next_at = time.monotonic() + self.report_interval
        while not self._stopping.wait(max(0.0, next_at - time.monotonic())):
            self.report_state()
            next_at += self.report_interval
            now = time.monotonic()
            if next_at < now:  # a report that took longer than the interval: no burst after it
                next_at = now + self.report_interval

    # -- periodic tasks ------------------------------------------------------

    def _periodic_loop(self) -> None:
        tasks = periodic_tasks(self.manager)
        if self._stopping.wait(random.uniform(0, self.periodic_fuzzy_delay)):
            return
        due = {name: time.monotonic() for name, _spacing, _func in tasks}
        while not self._stopping.is_set():
            for name, spacing, func in tasks:
                if self._stopping.is_set() or time.monotonic() < due[name]:
                    continue
                try:
                    func()
                except Exception:
                    LOG.exception("%r: periodic task %s failed", self, name)
                due[name] = time.monotonic() + (spacing or self.periodic_interval)
            self._stopping.wait(max(0.0, min(due.values()) - time.monotonic()))

    def _spawn(self, target: Callable[[], None], what: str) -> None:
        thread = threading.Thread(target=target, name=f"fastrpc-service-{what}-{self.binary}", daemon=True)
        self._threads.append(thread)
        thread.start()


def launch(services: list[Service], workers: int = 1) -> int:
    """Run ``services`` until SIGTERM or SIGINT stops them gracefully;
    SIGHUP calls their ``reset()``. ``workers`` > 1 forks that many worker
    processes, each running every service (their transports must not have
    connected yet: connections are not shared across a fork); the parent
    passes its signals on and waits for them. Returns the exit status: 0
    when every process stopped cleanly."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers!r}")
    if workers == 1:
        return _run_here(services)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                status = _run_here(services)
            finally:
                os._exit(status)
        children.append(pid)

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        status = 0
        for child in children:
            _, code = os.waitpid(child, 0)
            if os.waitstatus_to_exitcode(code) != 0:
                status = 1
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_here(services: list[Service]) -> int:
    """Start ``services`` in this process, serve until SIGTERM or SIGINT,
    reset them on SIGHUP, then stop them."""
    woken = threading.Event()  # set by a handler: look at what it asked for
    asked: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        asked.append(signum)
        woken.set()

    # Handlers only once started: a signal during start() (a broker not up
    # yet) ends the process the default way, with nothing to stop yet.
    for service in services:
        service.start()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        while True:
            if not woken.wait(1.0):
                continue
            woken.clear()
            if any(sig != signal.SIGHUP for sig in asked):
                break
            asked.clear()
            for service in services:
                service.reset()
        for service in services:
            service.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
