"""The service registry: a ``services`` table that services report into and
operators read (``fastrpc service-list``).

Every timestamp is written by the database's own clock, never the client's,
so clock skew between hosts cannot flip a service's state. SQLAlchemy is
imported only when a Registry is opened: ``ServiceRecord``, ``is_up`` and
``UnknownService`` work without it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastrpc.redact import mask_url
from fastrpc.service.config import load_config

if TYPE_CHECKING:
    from sqlalchemy import Column, ColumnElement, Connection, Engine, Table

LOG = logging.getLogger(__name__)

ENV_DB = "FASTRPC_DB"
DEFAULT_FILENAME = "fastrpc-services.sqlite"
TABLE_NAME = "services"

# What a gracefully stopped service writes as updated_at: older than any
# down time, so it shows down at once rather than service_down_time later.
STOPPED_AT = datetime(1970, 1, 1, tzinfo=timezone.utc)

# SQLite: how long a writer waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT = 30.0


class UnknownService(LookupError):
    """No live service with this host and binary is registered."""

    def __init__(self, host: str, binary: str) -> None:
        super().__init__(f"no service {binary!r} on host {host!r} in the registry")
        self.host = host
        self.binary = binary


class RegistryError(RuntimeError):
    """The registry database could not be opened (its URL masked)."""


@dataclass(frozen=True)
class ServiceRecord:
    """One row of the ``services`` table; datetimes are timezone-aware UTC.

    ``deleted`` is 0 for a live row and the row's id once soft-deleted, so
    (host, binary, deleted) is unique among live rows only.
    """

    id: int
    host: str
    binary: str
    topic: str | None
    report_count: int
    disabled: bool
    disabled_reason: str | None
    availability_zone: str | None
    forced_down: bool
    created_at: datetime | None
    updated_at: datetime | None
    modified_at: datetime | None
    deleted: int

    @property
    def stopped(self) -> bool:
        """The service stopped gracefully and has not reported since."""
        return self.updated_at == STOPPED_AT

    @property
    def last_seen(self) -> datetime | None:
        """What the up/down rule measures: the last report (or creation), or
        the last modification when that is newer."""
        seen = self.updated_at or self.created_at
        if self.modified_at is not None and (seen is None or self.modified_at > seen):
            seen = self.modified_at
        return seen


def is_up(record: ServiceRecord, down_time: float, now: datetime) -> bool:
    """oslo/nova's rule: up while ``abs(now - last_seen) <= down_time``, and
    never while forced down. ``now`` should be the database's clock
    (``Registry.now()``), the one every timestamp was written with."""
    if record.forced_down:
        return False
    seen = record.last_seen
    if seen is None:
        return False
    return abs((_utc(now) - seen).total_seconds()) <= down_time


def _utc(value: datetime) -> datetime:
    # Databases without time zones (SQLite) hand back naive UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _import_sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise ImportError(
            "the fastrpc service registry needs SQLAlchemy 2: pip install 'fastrpc[service]'"
        ) from exc
    if int(sqlalchemy.__version__.split(".")[0]) < 2:
        raise ImportError(
            f"the fastrpc service registry needs SQLAlchemy 2, found {sqlalchemy.__version__}: "
            "pip install 'fastrpc[service]'"
        )
    return sqlalchemy


def _services_table(sa: Any, metadata: Any) -> Table:
    tz = sa.DateTime(timezone=True)
    columns: list[Column[Any]] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("binary", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255)),
        sa.Column("report_count", sa.Integer, nullable=False, default=0),
        sa.Column("disabled", sa.Boolean, nullable=False, default=False),
        sa.Column("disabled_reason", sa.String(255)),
        sa.Column("availability_zone", sa.String(255)),
        sa.Column("forced_down", sa.Boolean, nullable=False, default=False),
        sa.Column("created_at", tz),
        sa.Column("updated_at", tz),
        sa.Column("modified_at", tz),
        sa.Column("deleted", sa.Integer, nullable=False, default=0),
    ]
    return sa.Table(
        TABLE_NAME,
        metadata,
        *columns,
        sa.UniqueConstraint("host", "binary", "deleted", name="uniq_services0host0binary0deleted"),
    )


class Registry:
    """The ``services`` table of one database (any SQLAlchemy URL; a SQLite
    file by default, so there is nothing to start)."""

    def __init__(self, url: str | None = None) -> None:
        sa = _import_sqlalchemy()
        self._url = self.resolve_url(url)
        self._masked = _mask(self._url)
        engine = None
        try:
            engine = self._create_engine(sa, self._url)
            metadata = sa.MetaData()
            self._table = _services_table(sa, metadata)
            metadata.create_all(engine, checkfirst=True)
        except Exception as exc:
            if engine is not None:
                engine.dispose()
            raise RegistryError(f"cannot open the service registry {self._masked}: {self._scrub(exc)}") from None
        self._engine: Engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # SQLite writers of one process queue here rather than in SQLite's
        # busy handler, which polls and can starve a writer.
        self._write_lock = threading.Lock() if self._sqlite else None
        LOG.debug("service registry %s", self._masked)

    @staticmethod
    def resolve_url(url: str | None = None, config_file: str | None = None) -> str:
        """The database URL: ``url``, else ``$FASTRPC_DB``, else ``[database]
        connection`` of the configuration file (``config_file``, else
        ``$FASTRPC_CONFIG``, else ``/etc/fastrpc/fastrpc.conf`` if it exists:
        ``fastrpc.service.config``), else a SQLite file under
        ``$XDG_STATE_HOME/fastrpc`` (``~/.local/state/fastrpc``), whose
        directory is created here so the default needs no setup."""
        if url:
            return url
        env = os.environ.get(ENV_DB)
        if env:
            return env
        configured = load_config(config_file).database_connection
        if configured:
            return configured
        state = os.environ.get("XDG_STATE_HOME", "")
        # The XDG spec says to ignore a relative path.
        base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
        directory = base / "fastrpc"
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{directory / DEFAULT_FILENAME}"

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._masked

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and tools that need raw access)."""
        return self._engine

    @property
    def table(self) -> Table:
        """The ``services`` table (SQLAlchemy Core)."""
        return self._table

    def __repr__(self) -> str:
        return f"Registry({self._masked!r})"

    def close(self) -> None:
        """Release the pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- reading -------------------------------------------------------------

    def now(self) -> datetime:
        """The database's clock, timezone-aware UTC."""
        sa = _import_sqlalchemy()
        with self._engine.connect() as conn:
            value = conn.execute(sa.select(self._now_expr())).scalar_one()
        return _utc(value)

    def services(self, host: str | None = None, binary: str | None = None) -> list[ServiceRecord]:
        """Live services, optionally filtered, ordered by binary and host."""
        sa = _import_sqlalchemy()
        t = self._table
        query = sa.select(t).where(t.c.deleted == 0)
        if host is not None:
            query = query.where(t.c.host == host)
        if binary is not None:
            query = query.where(t.c.binary == binary)
        query = query.order_by(t.c.binary, t.c.host, t.c.id)
        with self._engine.connect() as conn:
            return [self._record(row._mapping) for row in conn.execute(query)]

    is_up = staticmethod(is_up)

    # --- writing -------------------------------------------------------------

    def report(self, host: str, binary: str, topic: str, availability_zone: str | None = None) -> ServiceRecord:
        """A service's heartbeat: creates its row on the first report, else
        bumps report_count and updated_at, in one transaction. The increment
        happens in SQL, so concurrent reports are never lost."""
        sa = _import_sqlalchemy()
        t = self._table
        now = self._now_expr()
        live = (t.c.host == host) & (t.c.binary == binary) & (t.c.deleted == 0)
        bump: dict[str, Any] = {"report_count": t.c.report_count + 1, "updated_at": now, "topic": topic}
        if availability_zone is not None:
            bump["availability_zone"] = availability_zone
        for _attempt in range(3):
            try:
                with self._write() as conn:
                    if conn.execute(sa.update(t).where(live).values(**bump)).rowcount == 0:
                        conn.execute(
                            sa.insert(t).values(
                                host=host,
                                binary=binary,
                                topic=topic,
                                availability_zone=availability_zone,
                                report_count=1,
                                disabled=False,
                                forced_down=False,
                                created_at=now,
                                updated_at=now,
                                deleted=0,
                            )
                        )
                    row = conn.execute(sa.select(t).where(live)).one()
                    return self._record(row._mapping)
            except sa.exc.IntegrityError:
                # Another writer created the row between our UPDATE and
                # INSERT (possible on databases that do not serialise
                # writers); the next attempt updates it.
                continue
        raise RuntimeError(f"could not record a report of {binary!r} on {host!r}")

    def set_disabled(self, host: str, binary: str, disabled: bool, reason: str | None = None) -> ServiceRecord:
        """Disable (with a reason) or enable a service; enabling clears the
        reason, which no longer applies."""
        return self._modify(host, binary, disabled=disabled, disabled_reason=reason if disabled else None)

    def set_forced_down(self, host: str, binary: str, forced: bool = True) -> ServiceRecord:
        """Force a service down whatever its reports say (an operator who knows
        the host is gone), or lift that."""
        return self._modify(host, binary, forced_down=forced)

    def mark_stopped(self, host: str, binary: str) -> ServiceRecord:
        """What a gracefully stopped service writes so it shows down at once.

        updated_at becomes ``STOPPED_AT`` (the epoch) and modified_at is
        cleared, so last_seen is older than any down time; the next report
        brings it up again. forced_down is left to the operator, and
        modified_at is not set to now here because a newer modified_at
        counts as a sign of life in the up/down rule.
        """
        return self._modify(host, binary, _touch=False, updated_at=STOPPED_AT, modified_at=None)

    # --- internals -------------------------------------------------------------

    def _modify(self, host: str, binary: str, _touch: bool = True, **values: Any) -> ServiceRecord:
        sa = _import_sqlalchemy()
        t = self._table
        live = (t.c.host == host) & (t.c.binary == binary) & (t.c.deleted == 0)
        if _touch:
            values["modified_at"] = self._now_expr()
        with self._write() as conn:
            if conn.execute(sa.update(t).where(live).values(**values)).rowcount == 0:
                raise UnknownService(host, binary)
            row = conn.execute(sa.select(t).where(live)).one()
        return self._record(row._mapping)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite an IMMEDIATE one (see _create_engine)
        that takes the write lock before reading, so no writer ever has to
        upgrade a read lock and fail with "database is locked"."""
        if self._write_lock is None:
            with self._engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self._engine.begin() as conn:
            yield conn

    def _now_expr(self) -> ColumnElement[Any]:
        """SQL for the database's current time, evaluated by the database."""
        sa = _import_sqlalchemy()
        tz = sa.DateTime(timezone=True)
        name = self._engine.dialect.name
        if name == "sqlite":
            # UTC with milliseconds (CURRENT_TIMESTAMP has whole seconds),
            # padded to the microseconds SQLAlchemy's SQLite DATETIME stores.
            return sa.type_coerce(sa.func.strftime("%Y-%m-%d %H:%M:%f000", "now"), tz)
        if name in ("mysql", "mariadb"):
            # NOW() is in the session's time zone; the columns hold UTC.
            return sa.type_coerce(sa.func.utc_timestamp(6), tz)
        return sa.type_coerce(sa.func.current_timestamp(), tz)

    @staticmethod
    def _create_engine(sa: Any, url: str) -> Engine:
        engine: Engine
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

            @sa.event.listens_for(engine, "connect")
            def _no_implicit_transactions(dbapi_conn: Any, _record: Any) -> None:
                # The sqlite3 module's own BEGIN is deferred; take over so
                # that the "begin" hook below decides.
                dbapi_conn.isolation_level = None

            @sa.event.listens_for(engine, "begin")
            def _begin_immediate(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        else:
            engine = sa.create_engine(url, pool_pre_ping=True, connect_args=_network_bounds(sa, url))
        return engine

    def _scrub(self, exc: BaseException) -> str:
        """An exception's text with the raw URL (and so its password) masked."""
        text = f"{type(exc).__name__}: {exc}"
        if self._url != self._masked:
            text = text.replace(self._url, self._masked)
            password = _password(self._url)
            if password:
                text = text.replace(password, "****")
        return text

    @staticmethod
    def _record(row: Mapping[Any, Any]) -> ServiceRecord:
        return ServiceRecord(
            id=row["id"],
            host=row["host"],
            binary=row["binary"],
            topic=row["topic"],
            report_count=row["report_count"],
            disabled=bool(row["disabled"]),
            disabled_reason=row["disabled_reason"],
            availability_zone=row["availability_zone"],
            forced_down=bool(row["forced_down"]),
            created_at=_utc_or_none(row["created_at"]),
            updated_at=_utc_or_none(row["updated_at"]),
            modified_at=_utc_or_none(row["modified_at"]),
            deleted=row["deleted"],
        )


# libpq's bounds for a database server that stops answering (a report must
# fail in seconds, not wait for the kernel's minutes): connecting, unanswered
# data (TCP_USER_TIMEOUT, ms) and a silent idle connection (keepalives).
# Any of them given in the URL's query wins.
PG_NETWORK_BOUNDS = {"connect_timeout": 10, "tcp_user_timeout": 10_000, "keepalives": 1,
                     "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def _network_bounds(sa: Any, url: str) -> dict[str, Any]:
    """connect() arguments bounding the wait for a silent server (PostgreSQL only)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return {}
    return {k: v for k, v in PG_NETWORK_BOUNDS.items() if k not in parsed.query}


def _mask(url: str) -> str:
    """``url`` fit to show: passwords masked, and a string too malformed to
    find its password in (no scheme) hidden whole if it may hold one."""
    if "://" not in url and "@" in url:
        return "<malformed URL>"
    return mask_url(url)


def _password(url: str) -> str | None:
    """The password in ``url``'s user info, if any (to scrub it from text)."""
    if "://" not in url:
        return None
    rest = url.split("://", 1)[1]
    if "@" not in rest:
        return None
    userinfo = rest[: rest.rfind("@")]
    if ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


__all__ = [
    "STOPPED_AT",
    "Registry",
    "RegistryError",
    "ServiceRecord",
    "UnknownService",
    "is_up",
]
