"""The database schema through Alembic: upgrade, downgrade, where a database stands, and opening
one that must already stand at the newest revision (reading commands, `--no-migrate`).

The revisions live in `migrations/` at the top of the source tree; the wheel carries the same
directory as `vodpoller/migrations`, so both an editable and a normal install find them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from vodpoller.database import make_engine, safe_url, sqlite_path, writer
from vodpoller.errors import SchemaError, StorageError
from vodpoller.store import EventStore


def script_location() -> Path:
    """The Alembic directory: inside the installed package, else the source checkout's."""
    packaged = resources.files("vodpoller") / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if checkout.is_dir():
        return checkout
    raise StorageError(f"no Alembic migrations found at {packaged} nor at {checkout}")


def alembic_config() -> Config:
    """An Alembic configuration built in code: no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    return config


def head_revision() -> str:
    """The newest revision the code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StorageError("the Alembic migrations directory has no revisions")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None when it has never been migrated."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(
            f"reading the schema revision of {database_name(engine.url)} failed"
        ) from exc


def database_name(url: str | URL) -> str:
    """The database for a message: a SQLite file's path, else the URL without its password."""
    return str(sqlite_path(url) or safe_url(url))


def known_revisions() -> set[str]:
    return {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }


def schema_problem(engine: Engine, where: str) -> str | None:
    """Why this vodpoller cannot use the schema of the database (`where` names it) as it is;
    None when it is at the newest revision."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return None
    if current is None:
        return f"schema missing in {where}: run `vodpoller migrate`"
    if current in known_revisions():
        return (
            f"schema of {where} at revision {current}, this vodpoller needs {head}: "
            "run `vodpoller migrate`"
        )
    return (
        f"schema of {where} at revision {current}, which this vodpoller does not know (it "
        f"needs {head}): a newer vodpoller migrated it; upgrade vodpoller"
    )


def open_at_head(url: str, *, read_only: bool = False) -> EventStore:
    """A store on a database that already holds the newest schema; nothing is created on the
    way (no SQLite file, directory or table). `read_only` opens a SQLite file read-only."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise SchemaError(f"no vodpoller database at {path}{_relative_hint(url)}")
    store = EventStore.connect(url, read_only=read_only)
    try:
        problem = schema_problem(store.engine, database_name(url))
    except BaseException:
        store.dispose()
        raise
    if problem is not None:
        store.dispose()
        raise SchemaError(problem)
    return store


def _relative_hint(url: str) -> str:
    database = make_url(url).database or ""
    if database.startswith(("/", "file:", "~")):
        return ""
    return f" (sqlite:///{database} is relative to the current directory; sqlite:////… is absolute)"


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (the newest by default)."""
    _run("upgrade", url_or_engine, revision)


def downgrade(url_or_engine: str | Engine, revision: str) -> None:
    """Take the schema down to `revision` (`base` removes every table)."""
    _run("downgrade", url_or_engine, revision)


def _run(direction: str, url_or_engine: str | Engine, revision: str) -> None:
    config = alembic_config()
    with _engine(url_or_engine) as engine:
        try:
            # The lock is held until after the commit: a second daemon must find the new
            # revision, not the old one, when it gets the lock.
            with (
                writer(engine).connect() as connection,
                _migration_lock(connection),
                connection.begin(),
            ):
                config.attributes["connection"] = connection
                if direction == "upgrade":
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)
        except (SQLAlchemyError, CommandError) as exc:
            raise StorageError(
                f"schema {direction} of {safe_url(engine.url)} to {revision} failed"
            ) from exc


# Any constant: the key of the advisory lock that serialises migrations across daemons.
_LOCK_KEY = 0x766F64706F6C6C  # "vodpoll"
_LOCK_NAME = "vodpoller.migrate"
_LOCK_WAIT_SECONDS = 50  # below the MySQL read timeout (store.py)


@contextmanager
def _migration_lock(connection: Connection) -> Iterator[None]:
    """Two daemons starting together must not both create the schema: the second waits, then
    finds it at the newest revision."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        take = text("SELECT pg_advisory_lock(:key)").bindparams(key=_LOCK_KEY)
        release = text("SELECT pg_advisory_unlock(:key)").bindparams(key=_LOCK_KEY)
    elif dialect in ("mysql", "mariadb"):
        take = text("SELECT GET_LOCK(:name, :wait)").bindparams(
            name=_LOCK_NAME, wait=_LOCK_WAIT_SECONDS
        )
        release = text("SELECT RELEASE_LOCK(:name)").bindparams(name=_LOCK_NAME)
    else:
        # SQLite: the revisions run in a transaction that begins IMMEDIATE (store.writer), so
        # it holds the write lock and a second process waits on the busy timeout.
        yield
        return
    # Session locks, each taken and released in a short transaction of its own.
    got = connection.execute(take).scalar()
    connection.commit()
    # pg_advisory_lock answers void (and fails on lock_timeout); GET_LOCK 1, 0 on a timeout,
    # NULL on an error.
    if dialect != "postgresql" and got != 1:
        raise StorageError(f"could not take the migration lock within {_LOCK_WAIT_SECONDS} s")
    try:
        yield
    finally:
        connection.execute(release)
        connection.commit()


@contextmanager
def _engine(url_or_engine: str | Engine) -> Iterator[Engine]:
    if isinstance(url_or_engine, Engine):
        yield url_or_engine
        return
    try:
        engine = make_engine(url_or_engine)
    except (SQLAlchemyError, OSError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot set up the database {safe_url(url_or_engine)}") from exc
    try:
        yield engine
    finally:
        engine.dispose()
