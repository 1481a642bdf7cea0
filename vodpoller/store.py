"""Everything vodpoller does in SQL: the engine, the idempotent batch insert, confirmed marks and
small reads. SQLAlchemy Core only; the table is in `schema.py`, the schema in `migrations/`."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote, unquote

import structlog
from sqlalchemy import URL, Connection, Engine, create_engine, event, func, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from vodpoller.errors import StorageError
from vodpoller.events import PAYLOAD_COLUMNS, Event
from vodpoller.schema import vod_events

_T = TypeVar("_T")
_log = structlog.get_logger(__name__)

# A batch from PullEvents has at most 16 events; bigger ones are split so that a statement stays
# far below the bind-parameter limits (SQLite 32,766; PostgreSQL 65,535): 500 rows x 15 columns.
ROWS_PER_STATEMENT: Final = 500
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# Two daemons inserting the same keys can deadlock (InnoDB gap locks) or hit a serialization
# failure; the database rolls one transaction back and running it again is the documented cure.
TRANSACTION_ATTEMPTS: Final = 5
_RETRY_PAUSE_SECONDS: Final = 0.05
_LOCK_CONFLICT_SQLSTATES: Final = frozenset({"40P01", "40001"})  # deadlock, serialization
_MYSQL_DEADLOCK: Final = 1213  # ER_LOCK_DEADLOCK
_MYSQL_NAMES: Final = frozenset({"mysql", "mariadb"})
_WRITE_OPTION: Final = "vodpoller_write"


@dataclass(frozen=True)
class SaveResult:
    """`stored`: new rows; `duplicates`: deliveries that found their row already there."""

    stored: int
    duplicates: int


def make_engine(url: str | URL, *, read_only: bool = False) -> Engine:
    """An engine with vodpoller's settings: pre-ping everywhere, SQLite in WAL mode with a busy
    timeout (its directory created), utf8mb4 on MySQL/MariaDB. `read_only` opens a SQLite file
    read-only and creates nothing: no directory, no file, no change of journal mode."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and read_only:
        parsed = _read_only_sqlite(parsed)
    elif backend == "sqlite":
        _create_sqlite_directory(parsed)
    elif backend in _MYSQL_NAMES and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    # hide_parameters: error messages (and so logs) show the SQL, never the event data.
    engine = create_engine(
        parsed,
        pool_pre_ping=True,
        hide_parameters=True,
        json_serializer=_json_dumps,
        connect_args=_network_timeouts(backend, parsed),
    )
    if backend == "sqlite":
        configure = _configure_read_only_connection if read_only else _configure_sqlite_connection
        event.listen(engine, "connect", configure)
        event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


# A database that stops answering (a dead host, a black-holed network) must fail the batch
# in flight rather than hang the daemon; settings in the URL's query win over these.
_NETWORK_TIMEOUTS: Final[dict[str, dict[str, Any]]] = {
    "postgresql": {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 60_000,  # ms of unacknowledged data before the connection fails
        # A row locked by a session that went dark (another daemon cut off mid-transaction)
        # must fail the batch, not hold it for as long as the server keeps that session.
        "options": "-c lock_timeout=30s -c statement_timeout=120s",
    },
    "mysql": {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60},
}


def _network_timeouts(backend: str, url: URL) -> dict[str, Any]:
    defaults = _NETWORK_TIMEOUTS.get("mysql" if backend in _MYSQL_NAMES else backend, {})
    return {key: value for key, value in defaults.items() if key not in url.query}


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"


class EventStore:
    """The `vod_events` table behind a small API; every database error becomes `StorageError`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    @classmethod
    def connect(cls, url: str, *, read_only: bool = False) -> EventStore:
        """Create the engine (connections are opened lazily, on first use)."""
        try:
            return cls(make_engine(url, read_only=read_only))
        except ImportError as exc:
            raise StorageError(
                f"no driver for {safe_url(url)}: install vodpoller[postgres] or vodpoller[mysql]"
            ) from exc
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StorageError(f"cannot set up the database {safe_url(url)}") from exc

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.dispose()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def save(self, events: Sequence[Event], received_at: datetime | None = None) -> SaveResult:
        """Store a batch in one transaction; a redelivered event adds no row, it bumps
        `deliveries`. Twins inside the batch are folded first (the first handle is kept)."""
        if not events:
            return SaveResult(stored=0, duplicates=0)
        rows = _fold_duplicates(events, _utc(received_at))

        def insert(connection: Connection) -> int:
            return sum(self._upsert(connection, chunk) for chunk in _chunks(rows))

        stored = self._transaction(
            f"storing a batch of {len(events)} events", insert, engine=self._writer
        )
        return SaveResult(stored=stored, duplicates=len(events) - stored)

    def mark_confirmed(self, dedup_keys: Sequence[str], at: datetime | None = None) -> int:
        """Set `confirmed_at` on the rows that have none yet; returns how many changed."""
        keys = sorted(set(dedup_keys))
        if not keys:
            return 0
        when = _utc(at)
        columns = vod_events.c

        def mark(connection: Connection) -> int:
            changed = 0
            for chunk in _chunks(keys):
                statement = (
                    update(vod_events)
                    .where(columns.dedup_key.in_(chunk), columns.confirmed_at.is_(None))
                    .values(confirmed_at=when)
                )
                changed += connection.execute(statement).rowcount
            return changed

        return self._transaction(f"marking {len(keys)} events confirmed", mark, engine=self._writer)

    def count(self) -> int:
        """How many rows the table holds."""
        statement = select(func.count()).select_from(vod_events)
        return self._transaction(
            "counting events", lambda connection: connection.execute(statement).scalar_one()
        )

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict, in insertion (`id`) order."""
        statement = select(vod_events).order_by(vod_events.c.id)
        return self._transaction(
            "reading events",
            lambda connection: [dict(row) for row in connection.execute(statement).mappings()],
        )

    def latest_received_at(self) -> datetime | None:
        """When the newest row arrived; None for an empty table."""
        statement = select(func.max(vod_events.c.received_at))
        return self._transaction(
            "reading the newest event", lambda connection: connection.execute(statement).scalar()
        )

    def _transaction(
        self, what: str, work: Callable[[Connection], _T], *, engine: Engine | None = None
    ) -> _T:
        """Run `work` in one transaction, again after a deadlock; wrap database errors."""
        attempt = 1
        while True:
            try:
                with (engine or self.engine).begin() as connection:
                    return work(connection)
            except SQLAlchemyError as exc:
                if attempt >= TRANSACTION_ATTEMPTS or not _is_lock_conflict(exc):
                    raise StorageError(f"{what} failed") from exc
                _log.info(
                    "storage_transaction_retried", what=what, attempt=attempt, error=_reason(exc)
                )
            except (ValueError, OverflowError, UnicodeError) as exc:
                # A value the driver cannot bind: this batch fails, the daemon goes on.
                raise StorageError(f"{what} failed: a value the database cannot hold") from exc
            time.sleep(random.uniform(0, _RETRY_PAUSE_SECONDS * attempt))
            attempt += 1

    def _upsert(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """One INSERT for `rows` that adds to `deliveries` on a known key; returns the new rows."""
        columns = vod_events.c
        dialect = connection.dialect.name
        if dialect in ("postgresql", "sqlite"):
            upsert = (postgresql if dialect == "postgresql" else sqlite).insert(vod_events)
            upsert = upsert.values(list(rows))
            returning = upsert.on_conflict_do_update(
                index_elements=[columns.dedup_key],
                set_={"deliveries": columns.deliveries + upsert.excluded.deliveries},
            ).returning(columns.dedup_key, columns.deliveries)
            # A row that already existed comes back with more deliveries than this batch sent,
            # whoever inserted it and whenever: this holds with concurrent writers too.
            sent = {row["dedup_key"]: row["deliveries"] for row in rows}
            return sum(deliveries == sent[key] for key, deliveries in connection.execute(returning))
        if dialect in _MYSQL_NAMES:
            # `inserted` must come from the statement that carries the values.
            insert = mysql.insert(vod_events).values(list(rows))
            on_duplicate = insert.on_duplicate_key_update(
                deliveries=columns.deliveries + insert.inserted.deliveries
            )
            # Affected rows: 1 per inserted row, 2 per updated one (SQLAlchemy sets the
            # CLIENT.FOUND_ROWS flag; an update always changes `deliveries`).
            affected = connection.execute(on_duplicate).rowcount
            return 2 * len(rows) - affected
        raise StorageError(f"unsupported database {dialect!r}: use SQLite, PostgreSQL or MySQL")


def _fold_duplicates(events: Sequence[Event], received_at: datetime) -> list[dict[str, Any]]:
    """One row per dedup key, `deliveries` counting the twins. Sorted by key so that concurrent
    writers lock rows in the same order, which keeps deadlocks rare."""
    rows: dict[str, dict[str, Any]] = {}
    for item in events:
        row = rows.get(item.dedup_key)
        if row is None:
            rows[item.dedup_key] = _row(item, received_at)
        else:
            row["deliveries"] += 1
    return [rows[key] for key in sorted(rows)]


def _row(item: Event, received_at: datetime) -> dict[str, Any]:
    return {
        "dedup_key": item.dedup_key,
        "sub_app_id": item.sub_app_id,
        "event_type": item.event_type,
        "event_handle": item.event_handle,
        **{column: getattr(item, column) for column in PAYLOAD_COLUMNS},
        "payload": item.payload,
        "received_at": received_at,
        "deliveries": 1,
    }


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), ROWS_PER_STATEMENT):
        yield items[start : start + ROWS_PER_STATEMENT]


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware one (UTC)")
    return value.astimezone(UTC)


def _is_lock_conflict(error: SQLAlchemyError) -> bool:
    """A deadlock or serialization failure: the database rolled back, running again is safe."""
    if not isinstance(error, DBAPIError):
        return False
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate in _LOCK_CONFLICT_SQLSTATES:
        return True
    arguments = original.args if original is not None else ()
    return bool(arguments) and arguments[0] == _MYSQL_DEADLOCK


def _reason(error: SQLAlchemyError) -> str:
    """The driver's own message, without the SQL."""
    return str(error.orig) if isinstance(error, DBAPIError) else str(error)


def _json_dumps(value: Any) -> str:
    # Non-ASCII kept as is: the payload reads naturally in SQL and the columns are UTF-8.
    return json.dumps(value, ensure_ascii=False)


def _create_sqlite_directory(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def sqlite_path(url: str | URL) -> Path | None:
    """The absolute path of a SQLite file URL; None for other databases and in-memory ones.
    `sqlite:///x.db` (three slashes) is relative to the current directory."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    if database.startswith("file:"):  # already a URI: file:PATH?...
        database = unquote(database.removeprefix("file:").split("?", 1)[0])
    return Path(database).expanduser().absolute()


def _read_only_sqlite(url: URL) -> URL:
    path = sqlite_path(url)
    if path is None:
        return url
    return url.set(database=f"file:{quote(str(path))}").update_query_dict(
        {"mode": "ro", "uri": "true"}
    )


def _configure_read_only_connection(dbapi_connection: Any, _record: Any) -> None:
    """Wait for a writer's lock like the daemon does; leave the journal mode as it is."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()
    dbapi_connection.isolation_level = None


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers work while the poller writes; the busy timeout makes a second writer
    (another daemon, the CLI) wait for the lock instead of failing at once."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()
    # The sqlite3 module opens transactions only before DML and commits before DDL; SQLAlchemy's
    # recipe turns that off so that `_begin_sqlite_transaction` makes every transaction real
    # (migrations included).
    dbapi_connection.isolation_level = None


def writer(engine: Engine) -> Engine:
    """The engine for transactions that write. On SQLite they begin IMMEDIATE, taking the write
    lock up front: one that read first and wrote later would get "database is locked" at once,
    without the busy timeout, when another process (a second daemon, a migration) wrote in
    between. Reads begin deferred and never block the daemon."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def _begin_sqlite_transaction(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE_OPTION)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
