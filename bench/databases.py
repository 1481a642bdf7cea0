"""The databases a benchmark drains into: a SQLite file in the work directory, or a fresh
PostgreSQL database per run (dropped after it), and the few reads the benchmark makes of them
(the table is a contract of vodpoller's: SPEC.md, "Database")."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


@contextmanager
def database(kind: str, workdir: Path, postgres_url: str | None) -> Iterator[str]:
    """The URL of an empty database of `kind` ("sqlite" or "postgresql"), removed after."""
    if kind == "sqlite":
        path = workdir / f"events-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if postgres_url is None:
        raise ValueError("a PostgreSQL phase needs --postgres-url")
    with fresh_postgres(postgres_url) as url:
        yield url


@contextmanager
def fresh_postgres(server_url: str) -> Iterator[str]:
    """A database with a random name on the server of `server_url`, dropped after (with any
    connection still open to it), as tests/databases.py does for the tests."""
    server = make_url(server_url)
    name = f"vodpoller_bench_{uuid.uuid4().hex[:12]}"
    with _autocommit(server_url) as admin:
        admin.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with _autocommit(server_url) as admin:
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            admin.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


@contextmanager
def _autocommit(url: str) -> Iterator[Connection]:
    """CREATE/DROP DATABASE refuse to run inside a transaction."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@contextmanager
def reader(url: str) -> Iterator[Connection]:
    """A connection for the benchmark's reads; each statement sees what is committed."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def sqlite_commit_ms(directory: Path, *, wal: bool, commits: int = 50) -> float:
    """Milliseconds per one-row transaction committed to a SQLite file in `directory`: what the
    disk's fsync costs there (the hand loop commits each event; vodpoller uses WAL)."""
    path = directory / f"probe-{uuid.uuid4().hex[:8]}.db"
    connection = sqlite3.connect(path)
    try:
        if wal:
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE probe (value INTEGER)")
        started = time.perf_counter()
        for value in range(commits):
            connection.execute("INSERT INTO probe VALUES (?)", (value,))
            connection.commit()
        return (time.perf_counter() - started) * 1000 / commits
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def count_rows(url: str) -> int:
    with reader(url) as connection:
        return int(connection.execute(text("SELECT count(*) FROM vod_events")).scalar_one())


def rows_after(connection: Connection, last_id: int) -> list[tuple[int, str | None, datetime]]:
    """(id, session_context, received_at) of the rows after `last_id`, in id order."""
    result = connection.execute(
        text(
            "SELECT id, session_context, received_at FROM vod_events WHERE id > :last ORDER BY id"
        ),
        {"last": last_id},
    )
    return [(int(row[0]), row[1], as_utc(row[2])) for row in result]


def as_utc(value: Any) -> datetime:
    """A timestamp column as read without vodpoller's types: an aware datetime (PostgreSQL),
    or naive UTC, as a datetime or as SQLite's text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
