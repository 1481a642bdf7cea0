"""The database schema through Alembic: upgrade, downgrade and where a database stands.

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
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from vodpoller.database import make_engine, safe_url, writer
from vodpoller.errors import StorageError


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
        raise StorageError(f"reading the schema revision of {safe_url(engine.url)} failed") from exc


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
