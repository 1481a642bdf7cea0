"""`[database] notify_channel`: one NOTIFY per committed batch with its new rows, none for a
batch that rolled back or created no row; end to end through `vodpoller once`."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from tests.conftest import EmulatorFactory
from tests.databases import POSTGRES_URL_VARIABLE, EventFactory, fresh_database
from tests.helpers import emulator_config
from vodpoller import pgnotify
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.errors import StorageError
from vodpoller.migrate import upgrade
from vodpoller.store import Answer, EventStore

pytestmark = pytest.mark.postgres
CHANNEL = "vod_events"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = os.environ.get(POSTGRES_URL_VARIABLE)
    if not server:
        pytest.skip(f"NOTIFY tests need {POSTGRES_URL_VARIABLE}")
    with fresh_database(server) as url:
        upgrade(url)
        yield url


class Listener:
    """A separate connection that LISTENs, as an application would."""

    def __init__(self, url: str):
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.connection = psycopg.connect(dsn, autocommit=True)
        self.connection.execute(f"LISTEN {CHANNEL}")

    def received(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """The payloads that arrived, waiting `timeout` after the last one for more."""
        return [
            json.loads(notify.payload)
            for notify in self.connection.notifies(timeout=timeout)
            if notify.channel == CHANNEL
        ]

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def listener(postgres_url: str) -> Iterator[Listener]:
    listening = Listener(postgres_url)
    yield listening
    listening.close()


def test_a_committed_batch_notifies_its_new_rows_once(
    postgres_url: str, listener: Listener, event_factory: EventFactory
) -> None:
    at = datetime.now(UTC)
    first, second = event_factory.batch(2), event_factory.batch(3)
    with EventStore.connect(postgres_url, notify_channel=CHANNEL) as store:
        store.write([Answer(first, at), Answer(second, at)], [], [], holder=None)
        rows = store.rows()

    assert listener.received() == [
        {"ids": [row["id"] for row in rows], "event_types": [row["event_type"] for row in rows]}
    ]


def test_redeliveries_alone_notify_nothing_and_a_store_without_channel_is_silent(
    postgres_url: str, listener: Listener, event_factory: EventFactory
) -> None:
    events = event_factory.batch(2)
    with EventStore.connect(postgres_url) as silent:
        silent.save(events)
    with EventStore.connect(postgres_url, notify_channel=CHANNEL) as store:
        # Not held, not confirmed: the same content again is their redelivery, no new row.
        result = store.save([event_factory.redelivery(event) for event in events])
        assert (result.stored, result.duplicates) == (0, 2)
        fresh = store.save([event_factory()])
        newest = store.rows()[-1]

    assert listener.received() == [
        {"ids": list(fresh.row_ids), "event_types": [newest["event_type"]]}
    ]


def test_a_batch_that_rolls_back_after_its_notify_notifies_nothing(
    postgres_url: str,
    listener: Listener,
    event_factory: EventFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send = pgnotify.send

    def send_then_fail(connection: Connection, channel: str, created: Any) -> None:
        send(connection, channel, created)
        connection.execute(text("SELECT 1 / 0"))  # the transaction fails after its NOTIFY

    monkeypatch.setattr(pgnotify, "send", send_then_fail)
    with EventStore.connect(postgres_url, notify_channel=CHANNEL) as store:
        with pytest.raises(StorageError):
            store.save(event_factory.batch(2))
        assert store.count() == 0
        assert listener.received() == []

        monkeypatch.setattr(pgnotify, "send", send)
        saved = store.save(event_factory.batch(1))

    assert [payload["ids"] for payload in listener.received()] == [list(saved.row_ids)]


def test_vodpoller_once_notifies_every_new_row_exactly_once(
    postgres_url: str, listener: Listener, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).generate(300)
    config = emulator_config(
        tmp_path / "config.toml",
        emulator,
        postgres_url,
        database={"notify_channel": CHANNEL},
    )

    done = subprocess.run(
        [sys.executable, "-m", "vodpoller", "once", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    notified = [row_id for payload in listener.received() for row_id in payload["ids"]]
    with EventStore.connect(postgres_url) as store:
        rows = store.rows()
    assert len(rows) == 300
    assert sorted(notified) == [row["id"] for row in rows]


def _readme_listener() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### New rows as notifications") :]
    return section[section.index("```python\n") + len("```python\n") :].split("```", 1)[0]


def test_the_readme_listener_prints_each_new_row(
    postgres_url: str, event_factory: EventFactory, tmp_path: Path
) -> None:
    source = _readme_listener()
    assert len(source.strip().splitlines()) <= 13  # "a listener in ten lines", imports aside
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    script = tmp_path / "listener.py"
    script.write_text(source.replace("postgresql://vodpoller@db.internal/vod", dsn))
    listening = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with EventStore.connect(postgres_url, notify_channel=CHANNEL) as store:
            _wait_for_a_listener(store)
            saved = store.save(event_factory.batch(3))
            rows = {row["id"]: row for row in store.rows()}
        assert listening.stdout is not None
        ready, _, _ = select.select([listening.stdout], [], [], 30)
        assert ready, "the listener printed nothing in 30 s"
        printed = [listening.stdout.readline().split() for _ in saved.row_ids]
    finally:
        listening.kill()
        listening.communicate()
    assert sorted(int(line[0]) for line in printed) == sorted(saved.ids)
    assert all(rows[int(line[0])]["event_type"] == line[1] for line in printed)


def _wait_for_a_listener(store: EventStore, seconds: float = 30.0) -> None:
    """Until a session has run LISTEN (a NOTIFY before that reaches nobody)."""
    statement = text(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN vod_events%' "
        "AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with store.engine.connect() as connection:
            if connection.execute(statement).scalar_one():
                return
        time.sleep(0.05)
    raise AssertionError("the README listener never ran LISTEN")
