"""The database connection as vodpoller wants it on each dialect: engines with timeouts, SQLite
in WAL mode with a busy timeout and IMMEDIATE write transactions, utf8mb4 on MySQL/MariaDB."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, unquote

import structlog
from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)

from vodpoller import rawjson
from vodpoller.errors import StorageError

_T = TypeVar("_T")
_log = structlog.get_logger(__name__)

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
MYSQL_NAMES: Final = frozenset({"mysql", "mariadb"})
_WRITE_OPTION: Final = "vodpoller_write"


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
    elif backend in MYSQL_NAMES and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    # hide_parameters: error messages (and so logs) show the SQL, never the event data.
    engine = create_engine(
        parsed,
        pool_pre_ping=True,
        hide_parameters=True,
        json_serializer=_json_dumps,
        json_deserializer=_json_loads,
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
    defaults = _NETWORK_TIMEOUTS.get("mysql" if backend in MYSQL_NAMES else backend, {})
    return {key: value for key, value in defaults.items() if key not in url.query}


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"


class RawJSON:
    """JSON text to store as it is (an entry as received), not written out again."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _json_dumps(value: Any) -> str:
    return value.text if isinstance(value, RawJSON) else rawjson.dumps(value)


def _json_loads(text: str | bytes) -> Any:
    """Numbers read back as they were written (rawjson); some drivers hand over bytes."""
    return rawjson.loads(text.decode("utf-8") if isinstance(text, bytes) else text)


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


# Two daemons writing the same keys can deadlock (InnoDB gap locks) or hit a serialization
# failure; the database rolls one transaction back and running it again is the documented cure.
TRANSACTION_ATTEMPTS: Final = 5
_RETRY_PAUSE_SECONDS: Final = 0.05
_LOCK_CONFLICT_SQLSTATES: Final = frozenset({"40P01", "40001"})  # deadlock, serialization
_MYSQL_DEADLOCK: Final = 1213  # ER_LOCK_DEADLOCK
_UNIQUE_VIOLATION_SQLSTATE: Final = "23505"
_MYSQL_DUPLICATE_ENTRY: Final = 1062  # ER_DUP_ENTRY


class RaceLost(Exception):  # noqa: N818 (a signal between two functions, not an error to report)
    """Another writer changed what this transaction decided on; it rolls back and runs again."""


def transaction(
    engine: Engine,
    what: str,
    work: Callable[[Connection], _T],
    *,
    attempts: int = TRANSACTION_ATTEMPTS,
) -> _T:
    """Run `work` in one transaction, again after a deadlock or a lost race (`RaceLost`, a
    unique key taken meanwhile); database errors become `StorageError`."""
    attempt = 1
    while True:
        try:
            with engine.begin() as connection:
                return work(connection)
        except RaceLost as race:
            if attempt >= attempts:
                raise StorageError(f"{what} failed: other writers kept racing it") from race
            reason = str(race)
        except SQLAlchemyError as exc:
            if attempt >= attempts or not (_is_lock_conflict(exc) or is_unique_violation(exc)):
                raise StorageError(f"{what} failed") from exc
            reason = driver_message(exc)
        except (ValueError, OverflowError, UnicodeError) as exc:
            # A value the driver cannot bind: this batch fails, the daemon goes on.
            raise StorageError(f"{what} failed: a value the database cannot hold") from exc
        _log.info("storage_transaction_retried", what=what, attempt=attempt, error=reason)
        time.sleep(random.uniform(0, _RETRY_PAUSE_SECONDS * attempt))
        attempt += 1


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


def is_unique_violation(error: SQLAlchemyError) -> bool:
    """A unique key another writer took first."""
    if not isinstance(error, IntegrityError):
        return False
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate == _UNIQUE_VIOLATION_SQLSTATE:
        return True
    arguments = original.args if original is not None else ()
    if arguments and arguments[0] == _MYSQL_DUPLICATE_ENTRY:
        return True
    return "UNIQUE constraint failed" in str(original)


def driver_message(error: SQLAlchemyError) -> str:
    """The driver's own message, without the SQL."""
    return str(error.orig) if isinstance(error, DBAPIError) else str(error)


# Errors that say a value is wrong, not the database or the connection: worth storing the
# batch entry by entry so that the one entry goes to vod_rejects and the rest are kept.
_VALUE_SQLSTATE_CLASSES: Final = ("22",)  # PostgreSQL's data exceptions
_MYSQL_VALUE_ERRORS: Final = frozenset(
    {
        1264,  # out of range value
        1366,  # incorrect string value
        1406,  # data too long
        3140,  # invalid JSON text
        3146,  # invalid data type for JSON data
        3150,  # JSON value too deep
        3151,  # JSON document too big
        3155,  # JSON number out of range
        4025,  # CHECK constraint failed (MariaDB's JSON_VALID)
        4038,  # syntax error in JSON text (MariaDB)
    }
)


def is_value_error(error: BaseException | None) -> bool:  # noqa: PLR0911 (one test a line)
    """A value the database (or its driver) refuses: out of range, not valid for the column."""
    if isinstance(error, ValueError | OverflowError | UnicodeError):
        return True
    if isinstance(error, StatementError) and not isinstance(error, DBAPIError):
        return isinstance(error.orig, ValueError | OverflowError | UnicodeError)
    if not isinstance(error, DBAPIError) or error.connection_invalidated:
        return False
    if isinstance(error, DataError):
        return True
    if isinstance(error, IntegrityError):
        return not is_unique_violation(error)
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_VALUE_SQLSTATE_CLASSES):
        return True
    arguments = original.args if original is not None else ()
    return bool(arguments) and arguments[0] in _MYSQL_VALUE_ERRORS
