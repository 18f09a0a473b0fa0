"""fastrpc.service.Registry on real databases: reports, the database's
clock, the up/down rule, operator changes, concurrency and URL handling.

Every test that takes ``registry`` or ``database_url`` runs twice: on a
SQLite file and on a fresh database of a real PostgreSQL server
(fastrpc.testing.PostgresServer, one per test session). No broker needed."""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fastrpc.service import STOPPED_AT, Registry, RegistryError, ServiceRecord, UnknownService, is_up
from fastrpc.testing import PostgresServer

JOIN_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parent.parent


# PostgreSQL hands timestamps back in the session's time zone: one far from
# UTC (+05:45) makes any value the registry forgets to convert show.
PG_SESSION_TIME_ZONE = "Asia/Kathmandu"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'services.sqlite'}"
        return
    if importlib.util.find_spec("psycopg") is None:
        pytest.fail("the PostgreSQL registry tests need psycopg 3: pip install 'psycopg[binary]' (make test does)")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"registry_{secrets.token_hex(6)}"
    url = server.create_database(name)
    try:
        server.execute(f"ALTER DATABASE {name} SET timezone TO '{PG_SESSION_TIME_ZONE}'")
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    reg = Registry(database_url)
    yield reg
    reg.close()


sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _set(registry: Registry, host: str, binary: str, **values: Any) -> None:
    """Write columns directly, as an old row would have them (no sleeping)."""
    t = registry.table
    with registry.engine.begin() as conn:
        conn.execute(sa.update(t).where((t.c.host == host) & (t.c.binary == binary)).values(**values))


def _record(**overrides: Any) -> ServiceRecord:
    base = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    fields: dict[str, Any] = {
        "id": 1,
        "host": "h",
        "binary": "b",
        "topic": "t",
        "report_count": 1,
        "disabled": False,
        "disabled_reason": None,
        "availability_zone": None,
        "forced_down": False,
        "created_at": base,
        "updated_at": base,
        "modified_at": None,
        "deleted": 0,
    }
    fields.update(overrides)
    return ServiceRecord(**fields)


# --- reports -------------------------------------------------------------------


def test_first_report_creates_the_row(registry: Registry) -> None:
    record = registry.report("host-1", "fastrpc-compute", "compute", availability_zone="az1")
    assert (record.host, record.binary, record.topic, record.availability_zone) == (
        "host-1",
        "fastrpc-compute",
        "compute",
        "az1",
    )
    assert record.report_count == 1
    assert record.created_at == record.updated_at
    assert record.modified_at is None
    assert not record.disabled and not record.forced_down and record.deleted == 0
    assert registry.services() == [record]


def test_later_reports_count_and_move_updated_at(registry: Registry) -> None:
    first = registry.report("host-1", "b", "t")
    for _ in range(4):
        last = registry.report("host-1", "b", "t")
    assert last.id == first.id
    assert last.report_count == 5
    assert last.created_at == first.created_at
    assert last.updated_at is not None and first.updated_at is not None
    assert last.updated_at >= first.updated_at
    assert len(registry.services()) == 1


def test_report_keeps_a_known_zone_when_none_is_given(registry: Registry) -> None:
    registry.report("h", "b", "t", availability_zone="az1")
    assert registry.report("h", "b", "t").availability_zone == "az1"
    assert registry.report("h", "b", "t", availability_zone="az2").availability_zone == "az2"


def test_services_filters_and_orders(registry: Registry) -> None:
    registry.report("h2", "compute", "t")
    registry.report("h1", "compute", "t")
    registry.report("h1", "conductor", "t")
    assert [(s.binary, s.host) for s in registry.services()] == [
        ("compute", "h1"),
        ("compute", "h2"),
        ("conductor", "h1"),
    ]
    assert [s.binary for s in registry.services(host="h1")] == ["compute", "conductor"]
    assert [s.host for s in registry.services(binary="compute")] == ["h1", "h2"]
    assert registry.services(host="h2", binary="conductor") == []


def test_soft_deleted_rows_are_hidden_and_do_not_block_a_new_row(registry: Registry) -> None:
    old = registry.report("h", "b", "t")
    _set(registry, "h", "b", deleted=old.id)
    assert registry.services() == []
    new = registry.report("h", "b", "t")
    assert new.id != old.id and new.report_count == 1
    assert registry.services() == [new]


def test_table_has_the_documented_columns(registry: Registry) -> None:
    columns = {c["name"] for c in sa.inspect(registry.engine).get_columns("services")}
    assert columns == {
        "id",
        "host",
        "binary",
        "topic",
        "report_count",
        "disabled",
        "disabled_reason",
        "availability_zone",
        "forced_down",
        "created_at",
        "updated_at",
        "modified_at",
        "deleted",
    }


def test_a_second_registry_on_the_same_database_sees_the_rows(database_url: str) -> None:
    with Registry(database_url) as a:
        a.report("h", "b", "t")
    with Registry(database_url) as b:
        assert b.report("h", "b", "t").report_count == 2


# --- the database's clock ---------------------------------------------------------


def test_now_is_aware_utc(registry: Registry) -> None:
    now = registry.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)


def test_report_times_come_from_the_database(registry: Registry) -> None:
    sent: list[Any] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        sent.append(parameters)

    sa.event.listen(registry.engine, "before_cursor_execute", capture)
    try:
        before = registry.now()
        registry.report("h", "b", "t")
        record = registry.report("h", "b", "t")
        registry.set_disabled("h", "b", True, "maintenance")
        after = registry.now()
    finally:
        sa.event.remove(registry.engine, "before_cursor_execute", capture)
    # No client-side time is sent with any statement: the SQL asks the
    # database for its time.
    flat = [p for params in sent for p in (params if isinstance(params, (list, tuple)) else params.values())]
    assert not [p for p in flat if isinstance(p, datetime)]
    assert record.updated_at is not None
    assert before <= record.updated_at <= after


# SQLite has no time zones: the stored text itself must be UTC.
@sqlite_only
def test_sqlite_stores_utc(registry: Registry) -> None:
    registry.report("h", "b", "t")
    with registry.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT updated_at FROM services")).scalar_one()
        utc_now = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%S', 'now')")).scalar_one()
    stored_at = datetime.fromisoformat(stored).replace(tzinfo=timezone.utc)
    db_utc = datetime.fromisoformat(utc_now).replace(tzinfo=timezone.utc)
    assert abs((db_utc - stored_at).total_seconds()) < 5


# PostgreSQL: the columns must hold instants (timestamptz). A plain timestamp
# would store the session's local time and read back 5 h 45 min off.
@postgresql_only
def test_postgresql_stores_instants(registry: Registry) -> None:
    registry.report("h", "b", "t")
    with registry.engine.connect() as conn:
        assert conn.execute(sa.text("SHOW timezone")).scalar_one() == PG_SESSION_TIME_ZONE
        types = conn.execute(
            sa.text(
                "SELECT DISTINCT data_type FROM information_schema.columns "
                "WHERE table_name = 'services' AND column_name LIKE '%\\_at'"
            )
        ).scalars()
        assert list(types) == ["timestamp with time zone"]
        age = conn.execute(sa.text("SELECT extract(epoch FROM now() - updated_at) FROM services")).scalar_one()
    assert abs(float(age)) < 5
    [record] = registry.services()
    assert record.updated_at is not None and record.updated_at.utcoffset() == timedelta(0)
    assert abs((registry.now() - record.updated_at).total_seconds()) < 5


# --- up / down ----------------------------------------------------------------------


def test_is_up_within_down_time_of_updated_at() -> None:
    record = _record()
    assert record.updated_at is not None
    assert is_up(record, 60, record.updated_at + timedelta(seconds=60))
    assert not is_up(record, 60, record.updated_at + timedelta(seconds=60.5))
    # abs(): a last_seen ahead of now (another clock) still counts within down_time.
    assert is_up(record, 60, record.updated_at - timedelta(seconds=30))
    assert not is_up(record, 60, record.updated_at - timedelta(seconds=61))


def test_is_up_falls_back_to_created_at_and_prefers_a_newer_modified_at() -> None:
    created = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    never_reported = _record(created_at=created, updated_at=None)
    assert never_reported.last_seen == created
    assert is_up(never_reported, 60, created + timedelta(seconds=59))
    modified = created + timedelta(seconds=120)
    touched = _record(created_at=created, updated_at=created, modified_at=modified)
    assert touched.last_seen == modified
    assert is_up(touched, 60, modified + timedelta(seconds=30))
    older_modification = _record(updated_at=modified, modified_at=created)
    assert older_modification.last_seen == modified
    assert not is_up(_record(created_at=None, updated_at=None), 60, created)


def test_forced_down_is_down_whatever_the_reports() -> None:
    record = _record(forced_down=True)
    assert record.updated_at is not None
    assert not is_up(record, 60, record.updated_at)
    assert is_up(replace(record, forced_down=False), 60, record.updated_at)


def test_is_up_accepts_a_naive_utc_now() -> None:
    record = _record()
    assert record.updated_at is not None
    assert is_up(record, 60, record.updated_at.replace(tzinfo=None) + timedelta(seconds=10))


def test_a_service_that_stopped_reporting_shows_down(registry: Registry) -> None:
    registry.report("h", "b", "t")
    now = registry.now()
    [fresh] = registry.services()
    assert registry.is_up(fresh, 60, now)
    _set(registry, "h", "b", updated_at=now - timedelta(seconds=61))
    [old] = registry.services()
    assert not registry.is_up(old, 60, now)
    assert registry.is_up(old, 120, now)
    # The next report brings it back.
    assert registry.is_up(registry.report("h", "b", "t"), 60, registry.now())


# --- operator changes -------------------------------------------------------------


def test_disable_and_enable(registry: Registry) -> None:
    registry.report("h", "b", "t")
    before = registry.now()
    disabled = registry.set_disabled("h", "b", True, "hardware check")
    assert disabled.disabled and disabled.disabled_reason == "hardware check"
    assert disabled.modified_at is not None and disabled.modified_at >= before
    assert registry.services() == [disabled]
    enabled = registry.set_disabled("h", "b", False)
    assert not enabled.disabled and enabled.disabled_reason is None
    assert enabled.report_count == 1  # not a report


def test_a_modification_counts_as_seen(registry: Registry) -> None:
    registry.report("h", "b", "t")
    now = registry.now()
    _set(registry, "h", "b", updated_at=now - timedelta(seconds=600))
    record = registry.set_disabled("h", "b", True, "x")
    assert registry.is_up(record, 60, registry.now())


def test_force_down_and_lift(registry: Registry) -> None:
    registry.report("h", "b", "t")
    forced = registry.set_forced_down("h", "b")
    assert forced.forced_down
    assert not registry.is_up(forced, 60, registry.now())
    # Reporting does not lift it: that is the operator's call.
    assert registry.report("h", "b", "t").forced_down
    lifted = registry.set_forced_down("h", "b", False)
    assert not lifted.forced_down and registry.is_up(lifted, 60, registry.now())


def test_mark_stopped_shows_down_at_once_until_the_next_report(registry: Registry) -> None:
    registry.report("h", "b", "t")
    registry.set_disabled("h", "b", True, "x")  # a recent modified_at must not keep it up
    stopped = registry.mark_stopped("h", "b")
    assert stopped.stopped and stopped.updated_at == STOPPED_AT
    assert not stopped.forced_down and stopped.disabled
    assert not registry.is_up(stopped, 60, registry.now())
    restarted = registry.report("h", "b", "t")
    assert not restarted.stopped
    assert registry.is_up(restarted, 60, registry.now())


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.set_disabled("nohost", "b", True, "x"),
        lambda r: r.set_disabled("h", "nobinary", False),
        lambda r: r.set_forced_down("nohost", "b"),
        lambda r: r.mark_stopped("nohost", "b"),
    ],
)
def test_unknown_service(registry: Registry, change: Any) -> None:
    registry.report("h", "b", "t")
    with pytest.raises(UnknownService) as info:
        change(registry)
    assert isinstance(info.value, LookupError)
    assert "no service" in str(info.value)
    [record] = registry.services()
    assert record.modified_at is None and not record.disabled and not record.forced_down


# --- concurrency ----------------------------------------------------------------------


def _run_threads(count: int, target: Any) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count, timeout=JOIN_TIMEOUT)

    def run(index: int) -> None:
        try:
            start.wait()
            target(index)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not [t for t in threads if t.is_alive()], "reporting threads did not finish"
    return errors


THREADS = 50
REPORTS = 10


def test_concurrent_reports_of_one_service_are_all_counted(registry: Registry) -> None:
    errors = _run_threads(THREADS, lambda i: [registry.report("h", "b", "t") for _ in range(REPORTS)])
    assert errors == []
    [record] = registry.services()
    assert record.report_count == THREADS * REPORTS


def test_concurrent_reports_of_many_services_are_all_counted(registry: Registry) -> None:
    errors = _run_threads(THREADS, lambda i: [registry.report(f"host-{i}", "b", "t") for _ in range(REPORTS)])
    assert errors == []
    records = registry.services()
    assert sorted(r.host for r in records) == sorted(f"host-{i}" for i in range(THREADS))
    assert {r.report_count for r in records} == {REPORTS}


def test_concurrent_reports_from_two_registries_on_one_database(database_url: str) -> None:
    # Two engines do not share the in-process lock: the database's own
    # locking (SQLite: immediate transactions, busy timeout; PostgreSQL: row
    # locks and the unique constraint) has to keep the count exact.
    with Registry(database_url) as a, Registry(database_url) as b:
        errors = _run_threads(20, lambda i: [(a if i % 2 else b).report("h", "b", "t") for _ in range(REPORTS)])
        assert errors == []
        assert a.services()[0].report_count == 20 * REPORTS


# --- URLs ----------------------------------------------------------------------------


def test_resolve_url_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("FASTRPC_DB", "sqlite:///from-env.sqlite")
    assert Registry.resolve_url("sqlite:///from-arg.sqlite") == "sqlite:///from-arg.sqlite"
    assert Registry.resolve_url() == "sqlite:///from-env.sqlite"
    monkeypatch.delenv("FASTRPC_DB")
    default = tmp_path / "state" / "fastrpc" / "fastrpc-services.sqlite"
    assert Registry.resolve_url() == f"sqlite:///{default}"
    assert default.parent.is_dir()


def test_default_registry_is_a_file_under_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("FASTRPC_DB", raising=False)
    with Registry() as reg:
        reg.report("h", "b", "t")
    assert (tmp_path / "state" / "fastrpc" / "fastrpc-services.sqlite").is_file()


def test_relative_xdg_state_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    monkeypatch.delenv("FASTRPC_DB", raising=False)
    expected = tmp_path / "home" / ".local" / "state" / "fastrpc" / "fastrpc-services.sqlite"
    assert Registry.resolve_url() == f"sqlite:///{expected}"


def test_env_url_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.sqlite"
    monkeypatch.setenv("FASTRPC_DB", f"sqlite:///{path}")
    with Registry() as reg:
        reg.report("h", "b", "t")
    assert path.is_file()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://admin:s3cret-pw@db.example:5432/fleet",
        "nosuchdialect://admin:s3cret-pw@db.example/fleet",
        "not a url admin:s3cret-pw@",
    ],
)
def test_password_never_shows(url: str) -> None:
    with pytest.raises(RegistryError) as info:
        Registry(url)
    assert "s3cret-pw" not in str(info.value)
    assert "s3cret-pw" not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_repr_and_url_show_the_database(tmp_path: Path) -> None:
    # SQLAlchemy refuses a SQLite URL with a password, so the masking itself
    # is checked through the errors above.
    path = tmp_path / "r.sqlite"
    with Registry(f"sqlite:///{path}") as reg:
        assert repr(reg) == f"Registry('sqlite:///{path}')"
        assert reg.url == f"sqlite:///{path}"


# --- SQLAlchemy stays optional ---------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_importing_fastrpc_and_the_service_package_does_not_import_sqlalchemy() -> None:
    done = _python("import sys, fastrpc, fastrpc.service, fastrpc.cli; print('sqlalchemy' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_without_sqlalchemy_the_registry_says_what_to_install() -> None:
    # sys.modules[name] = None makes the import fail as if not installed.
    done = _python(
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "from fastrpc.service import Registry\n"
        "try:\n    Registry('sqlite://')\nexcept ImportError as exc:\n    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'fastrpc[service]'" in done.stdout


def test_postgresql_connections_are_bounded_unless_the_url_says_otherwise() -> None:
    """A PostgreSQL server that stops answering fails a report in seconds
    (libpq's connect_timeout, tcp_user_timeout, keepalives); the URL's own
    values win; other databases get nothing added."""
    import sqlalchemy as sa

    from fastrpc.service.registry import PG_NETWORK_BOUNDS, _network_bounds

    assert _network_bounds(sa, "postgresql+psycopg://u@127.0.0.1:5432/x") == PG_NETWORK_BOUNDS
    assert PG_NETWORK_BOUNDS["connect_timeout"] <= 10 and PG_NETWORK_BOUNDS["tcp_user_timeout"] <= 10_000
    given = _network_bounds(sa, "postgresql://u@127.0.0.1:5432/x?connect_timeout=2&keepalives=0")
    assert "connect_timeout" not in given and "keepalives" not in given and "tcp_user_timeout" in given
    assert _network_bounds(sa, "sqlite:////tmp/x.sqlite") == {}
    assert _network_bounds(sa, "mysql+pymysql://u@127.0.0.1/x") == {}
