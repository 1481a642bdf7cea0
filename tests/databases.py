"""Fixtures for tests on real databases: a fresh SQLite file, PostgreSQL or MySQL/MariaDB database
per test (servers from VODPOLLER_TEST_POSTGRES_URL / VODPOLLER_TEST_MYSQL_URL), and events."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import URL, Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from vodpoller.events import Event, parse_entry
from vodpoller.eventtypes import PAYLOAD_FIELD_BY_TYPE
from vodpoller.migrate import upgrade
from vodpoller.store import EventStore

POSTGRES_URL_VARIABLE: Final = "VODPOLLER_TEST_POSTGRES_URL"
MYSQL_URL_VARIABLE: Final = "VODPOLLER_TEST_MYSQL_URL"
_EXAMPLE_URLS: Final = {
    POSTGRES_URL_VARIABLE: "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    MYSQL_URL_VARIABLE: "mysql+pymysql://root@127.0.0.1:3306/test",
}

DATABASES: Final = [
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of each kind, dropped after the test."""
    kind: str = request.param
    if kind == "sqlite":
        # A directory that does not exist yet: the store has to create it.
        yield f"sqlite:///{tmp_path / 'state' / 'events.db'}"
        return
    variable = POSTGRES_URL_VARIABLE if kind == "postgresql" else MYSQL_URL_VARIABLE
    server_url = os.environ.get(variable)
    if not server_url:
        pytest.skip(f"{kind} tests need {variable}, e.g. {_EXAMPLE_URLS[variable]}")
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture
def migrated_store(database_url: str) -> Iterator[EventStore]:
    """An `EventStore` on a database brought to the newest revision."""
    upgrade(database_url)
    store = EventStore.connect(database_url)
    yield store
    store.dispose()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create a database with a random name on the server of `server_url`; drop it after."""
    server = make_url(server_url)
    name = f"vodpoller_test_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as admin:
        if server.get_backend_name() == "postgresql":
            admin.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            admin.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(server.set(database=name).render_as_string(hide_password=False), server_url)


def drop_database(url: str, server_url: str | None = None) -> None:
    """Remove the database of `url` even while connections to it are open; `server_url` names
    the database to connect to for that (default: `postgres` / `information_schema`)."""
    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise ValueError(f"no database named in {url}")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)
        return
    maintenance = parsed.set(
        database="postgres" if backend == "postgresql" else "information_schema"
    )
    with _admin(server_url or maintenance) as admin:
        if backend == "postgresql":
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            version = admin.dialect.server_version_info or (0,)
            force = " WITH (FORCE)" if version >= (13,) else ""
            admin.execute(text(f'DROP DATABASE IF EXISTS "{name}"{force}'))
        else:
            leftovers = admin.execute(
                text(
                    "SELECT id FROM information_schema.processlist"
                    " WHERE db = :name AND id <> CONNECTION_ID()"
                ),
                {"name": name},
            ).scalars()
            for connection_id in list(leftovers):
                admin.execute(text(f"KILL {int(connection_id)}"))
            admin.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


@contextmanager
def _admin(url: str | URL) -> Iterator[Connection]:
    """An AUTOCOMMIT connection: CREATE/DROP DATABASE refuse to run inside a transaction."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


class EventFactory:
    """`EventSet` entries shaped like VOD's, each a distinct event, parsed with `parse_entry`."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)

    def entry(
        self,
        event_type: str = "ProcedureStateChanged",
        *,
        handle: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """One entry; `fields` go into (and override) its payload object."""
        number = next(self._numbers)
        payload: dict[str, Any] = {
            "TaskId": f"1256712345-Procedure-{number:032x}t2",
            "Status": "FINISH",
            "ErrCode": 0,
            "Message": "SUCCESS",
            "FileId": str(5285890784246869930 + number),
            "FileName": f"video-{number}.mp4",
            "FileUrl": f"https://example.vod2.myqcloud.com/video-{number}.mp4",
            "SessionContext": f"context-{number}",
            "SessionId": f"session-{number}",
            **fields,
        }
        return {
            "EventHandle": handle or f"handle-{uuid.uuid4().hex}",
            "EventType": event_type,
            PAYLOAD_FIELD_BY_TYPE.get(event_type, f"{event_type}Event"): payload,
        }

    def __call__(
        self,
        event_type: str = "ProcedureStateChanged",
        *,
        sub_app_id: int | None = None,
        handle: str | None = None,
        **fields: Any,
    ) -> Event:
        return parse_entry(self.entry(event_type, handle=handle, **fields), sub_app_id)

    def batch(self, count: int, *, sub_app_id: int | None = None) -> list[Event]:
        return [self(sub_app_id=sub_app_id) for _ in range(count)]

    @staticmethod
    def redelivery(event: Event) -> Event:
        """The same event delivered again: same content and dedup key, a new handle."""
        entry = {**event.payload, "EventHandle": f"handle-{uuid.uuid4().hex}"}
        return parse_entry(entry, event.sub_app_id)


@pytest.fixture
def event_factory() -> EventFactory:
    return EventFactory()
