"""fastrpc.service.Service on the private broker: serving, state reports
(straight to the database and through a conductor), a manager that says it
is not working, a registry that is away, periodic tasks, a graceful stop,
and launch() with workers and signals."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fastrpc import Target, get_rpc_client, get_rpc_server, get_rpc_transport
from fastrpc.service import Conductor, ConductorClient, Registry, Service, is_up, periodic_task
from fastrpc.service.conductor import ConductorManager
from fastrpc.testing import LoopbackFirewall, PostgresServer

WAIT = 20.0
INTERVAL = 0.2  # report_interval in these tests


def _wait(predicate: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Manager:
    def __init__(self) -> None:
        self.working = True
        self.asked = 0  # is_working() calls: one per report interval
        self.ticks = 0
        self.ticked = threading.Event()

    def is_working(self) -> bool:
        self.asked += 1
        return self.working

    def echo(self, ctxt: dict, x: int) -> int:
        return x

    @periodic_task(spacing=0.05)
    def tick(self) -> None:
        self.ticks += 1
        if self.ticks >= 3:
            self.ticked.set()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'services.sqlite'}"


@pytest.fixture
def transport(broker: Any) -> Any:
    t = get_rpc_transport(url=broker.url)
    yield t
    t.cleanup()


def _count(db: str, host: str, binary: str) -> int:
    with Registry(db) as registry:
        (record,) = registry.services(host=host, binary=binary)
        return record.report_count


def _service(transport: Any, db: Any, manager: Any, topic: str, host: str = "h1") -> Service:
    return Service(transport, host, "fastrpc-test", topic, manager, report_interval=INTERVAL,
                   periodic_interval=0.05, periodic_fuzzy_delay=0, registry=db, stop_timeout=WAIT)


def test_service_serves_reports_runs_periodic_tasks_and_stops_down(transport: Any, db: str) -> None:
    manager = Manager()
    svc = _service(transport, db, manager, "svc_basic")
    svc.start()
    try:
        client = get_rpc_client(transport, Target(topic="svc_basic", server="h1"), timeout=WAIT)
        assert client.call({}, "echo", x=5) == 5
        _wait(lambda: _count(db, "h1", "fastrpc-test") >= 4, "reports")  # registration + 3 intervals
        assert manager.ticked.wait(WAIT)
        with Registry(db) as registry:
            (record,) = registry.services(host="h1")
            assert record.topic == "svc_basic"
            assert is_up(record, 60, registry.now())
    finally:
        svc.stop()
    assert svc.wait(0)
    with Registry(db) as registry:
        (record,) = registry.services(host="h1")
        assert not is_up(record, 60, registry.now())  # stopped on purpose: down at once


def test_manager_that_is_not_working_stops_reporting(transport: Any, db: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    manager = Manager()
    svc = _service(transport, db, manager, "svc_unwell")
    svc.start()
    try:
        _wait(lambda: _count(db, "h1", "fastrpc-test") >= 2, "a report")
        manager.working = False
        caplog.set_level(logging.WARNING, logger="fastrpc.service.service")
        asked = manager.asked
        _wait(lambda: manager.asked >= asked + 1, "the report after the change")
        before = _count(db, "h1", "fastrpc-test")
        _wait(lambda: manager.asked >= asked + 4, "three more intervals")
        assert _count(db, "h1", "fastrpc-test") == before
        warnings = [r for r in caplog.records if "not working" in r.getMessage()]
        assert len(warnings) == 1  # once per change, not once per interval
        manager.working = True
        _wait(lambda: _count(db, "h1", "fastrpc-test") > before, "reports again")
    finally:
        svc.stop()


def test_reports_through_a_conductor_and_a_conductor_that_is_away(transport: Any, db: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Reports are RPC calls to the conductor, which owns the database. While
    no conductor runs, the service keeps serving and logs the failure once;
    its reports arrive once a conductor is there."""
    caplog.set_level(logging.INFO, logger="fastrpc.service.service")
    manager = Manager()
    sink = ConductorClient(transport, topic="svc_conductor", timeout=0.5)
    svc = Service(transport, "h2", "fastrpc-test", "svc_via_conductor", manager, report_interval=INTERVAL,
                  periodic_fuzzy_delay=0, registry=sink, stop_timeout=WAIT)
    svc.start()
    conductor = None
    try:
        _wait(lambda: svc.report_failures >= 3, "failed reports")
        client = get_rpc_client(transport, Target(topic="svc_via_conductor", server="h2"), timeout=WAIT)
        assert client.call({}, "echo", x=7) == 7  # still serving
        failed = [r for r in caplog.records if "state report failed" in r.getMessage()]
        assert len(failed) == 1
        conductor = Conductor(transport, "c1", registry=db, topic="svc_conductor", report_interval=INTERVAL,
                              periodic_fuzzy_delay=0, stop_timeout=WAIT)
        conductor.start()
        _wait(lambda: svc.reports >= 2, "reports through the conductor")
        assert _count(db, "h2", "fastrpc-test") >= 2
        assert any("work again" in r.getMessage() for r in caplog.records)
        with Registry(db) as registry:
            assert {r.binary for r in registry.services()} == {"fastrpc-test", "fastrpc-conductor"}
    finally:
        svc.stop()
        if conductor is not None:
            conductor.stop()
    with Registry(db) as registry:
        (record,) = registry.services(host="h2")
        assert not is_up(record, 60, registry.now())  # marked stopped through the conductor


def test_report_call_without_an_answer_is_sent_again_as_a_confirmed_cast(transport: Any, db: str) -> None:
    """A report call that gets no answer in time (here: the conductor is
    slow; in a cluster: this process's reply queue is out of reach) is sent
    again as a cast the broker confirms, and the report lands."""
    release = threading.Event()
    seen: list[str] = []

    class SlowFirst(ConductorManager):
        def service_update(self, ctxt: dict, host: str, binary: str, topic: str,
                           availability_zone: str | None = None) -> dict[str, Any]:
            seen.append(host)
            if len(seen) == 1:
                release.wait(WAIT)  # the call's answer comes too late
            return super().service_update(ctxt, host, binary, topic, availability_zone)

    registry = Registry(db)
    server = get_rpc_server(transport, Target(topic="svc_slow_conductor", server="c1"), [SlowFirst(registry)],
                            executor="threading")
    server.start()
    try:
        sink = ConductorClient(transport, topic="svc_slow_conductor", timeout=0.5)
        assert sink.report("h9", "fastrpc-test", "t9") is None  # no answer to the call; the cast was confirmed
        _wait(lambda: len(seen) == 2, "the report cast")
        _wait(lambda: [r.report_count for r in registry.services(host="h9")] == [1], "the cast report recorded")
    finally:
        release.set()
        server.stop()
        server.wait()
        registry.close()


def test_service_whose_database_vanishes_keeps_serving_and_reports_again(transport: Any,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The registry's PostgreSQL server vanishes from the network (every
    packet to or from its port dropped): reports fail within the URL's
    network bounds instead of hanging, the service keeps serving, the
    failure is logged once, and reports go on once the server is back."""
    caplog.set_level(logging.INFO, logger="fastrpc.service.service")
    with PostgresServer() as pg, LoopbackFirewall() as firewall:
        url = pg.url + "?connect_timeout=1&tcp_user_timeout=1500"
        manager = Manager()
        svc = Service(transport, "h-db", "fastrpc-test", "svc_db_vanishes", manager, report_interval=INTERVAL,
                      periodic_fuzzy_delay=0, registry=url, stop_timeout=WAIT)
        svc.start()
        try:
            _wait(lambda: svc.reports >= 3, "reports to the database")
            firewall.block([pg.port])
            _wait(lambda: svc.report_failures >= 2, "reports to fail")
            client = get_rpc_client(transport, Target(topic="svc_db_vanishes", server="h-db"), timeout=WAIT)
            assert client.call({}, "echo", x=5) == 5  # still serving
            assert len([r for r in caplog.records if "state report failed" in r.getMessage()]) == 1
            firewall.unblock([pg.port])
            reported = svc.reports
            _wait(lambda: svc.reports >= reported + 2, "reports once the database is back")
            assert any("work again" in r.getMessage() for r in caplog.records)
            with Registry(pg.url) as registry:
                (record,) = registry.services(host="h-db")
                assert is_up(record, 60, registry.now())
        finally:
            firewall.unblock([pg.port])
            svc.stop()


_LAUNCHED = textwrap.dedent("""
    import os
    import sys
    from fastrpc import get_rpc_transport
    from fastrpc.service import Service, launch

    class Manager:
        def echo(self, ctxt, x):
            return x

        def reset(self):
            with open(f"{marks}/reset-{os.getpid()}", "w"):
                pass

    url, db, workers, marks = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    svc = Service(get_rpc_transport(url=url), "h3", "fastrpc-launched", "svc_launched", Manager(),
                  report_interval=0.2, periodic_fuzzy_delay=0, registry=db, stop_timeout=20)
    print("launching", flush=True)
    sys.exit(launch([svc], workers=workers))
""")


@pytest.mark.parametrize("workers", [1, 2])
def test_launch_resets_on_sighup_and_stops_gracefully_on_sigterm(broker: Any, transport: Any, db: str, tmp_path: Path,
                                            workers: int) -> None:
    script = tmp_path / "launched.py"
    script.write_text(_LAUNCHED)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), broker.url, db, str(workers), str(marks)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        db_file = tmp_path / "services.sqlite"
        _wait(lambda: db_file.exists() and _count_or_zero(db) >= 2 * workers, "the workers' reports")
        client = get_rpc_client(transport, Target(topic="svc_launched", server="h3"), timeout=WAIT)
        assert client.call({}, "echo", x=3) == 3
        proc.send_signal(signal.SIGHUP)  # every worker resets its services
        _wait(lambda: len(list(marks.iterdir())) == workers, "every worker's reset")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    with Registry(db) as registry:
        (record,) = registry.services(host="h3")
        assert not is_up(record, 60, registry.now())


def _count_or_zero(db: str) -> int:
    with Registry(db) as registry:
        records = registry.services(host="h3")
        return records[0].report_count if records else 0


def test_demo_lists_three_services_one_stopped(broker: Any) -> None:
    from fastrpc.demo import run_services_demo

    table = run_services_demo(broker.url, stream=io.StringIO())
    states = {line.split()[1]: line.split()[4] for line in table.splitlines()[1:] if line.strip()}
    assert states == {"ctl-1": "up", "host-1": "up", "host-2": "up", "host-3": "down"}


_KILLABLE = textwrap.dedent("""
    import sys, time
    from fastrpc import get_rpc_transport
    from fastrpc.service import Service

    class Manager:
        def echo(self, ctxt, x):
            return x

    url, db = sys.argv[1], sys.argv[2]
    svc = Service(get_rpc_transport(url=url), "h4", "fastrpc-killed", "svc_killed", Manager(),
                  report_interval=0.5, periodic_fuzzy_delay=0, registry=db)
    svc.start()
    print("started", flush=True)
    time.sleep(600)  # until killed
""")


def test_killed_service_shows_down_after_down_time_and_up_after_restart(broker: Any, db: str,
                                                                      tmp_path: Path) -> None:
    """kill -9 of a service's process: shown down once down_time has passed
    since its last report (within down_time + one interval); restarted, it is
    shown up again as soon as it registers."""
    down_time, interval = 2.0, 0.5
    script = tmp_path / "killable.py"
    script.write_text(_KILLABLE)

    def run() -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(script), broker.url, db], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "started\n", proc.stderr
        return proc

    def state() -> bool:
        with Registry(db) as registry:
            (record,) = registry.services(host="h4")
            return is_up(record, down_time, registry.now())

    proc = run()
    try:
        _wait(lambda: _count(db, "h4", "fastrpc-killed") >= 2, "reports")
        proc.kill()
        proc.communicate()
        killed = time.monotonic()
        assert state()  # its last report is recent
        _wait(lambda: not state(), "the killed service to show down", timeout=down_time + interval + 5)
        assert time.monotonic() - killed <= down_time + interval + 1.0
        proc = run()  # start() registers it: up again at once
        assert state()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
