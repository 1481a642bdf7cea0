"""`storeprocess.py`: the store's write served by a child process, on each database."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.databases import EventFactory
from vodpoller.errors import StorageError
from vodpoller.migrate import upgrade
from vodpoller.store import Answer, EventStore, Release
from vodpoller.storeprocess import StoreProcess


@pytest.fixture
def child(database_url: str) -> Iterator[StoreProcess]:
    upgrade(database_url)
    process = StoreProcess(database_url, level="warning", fmt="console")
    yield process
    process.close()


def test_answers_and_outcomes_are_written_by_the_child(
    child: StoreProcess, database_url: str, event_factory: EventFactory
) -> None:
    events = event_factory.batch(3)
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)

    results, _ = child.write([Answer(events, at)], [], [], holder="me")
    ids = results[0].ids
    _, settled = child.write([], list(ids[:2]), [Release(ids[2], at)], holder="me")

    assert (results[0].stored, settled.confirmed, settled.released) == (3, 2, 1)
    with EventStore.connect(database_url) as store:
        rows = store.rows()
    assert [row["confirmed_at"] is not None for row in rows] == [True, True, False]
    assert all(row["held_by"] is None for row in rows)
    assert rows[0]["payload"] == events[0].payload


def test_a_storage_error_in_the_child_is_a_storage_error_here(
    child: StoreProcess, database_url: str, event_factory: EventFactory
) -> None:
    with EventStore.connect(database_url) as store, store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE vod_events")

    with pytest.raises(StorageError, match="storing a batch of 1 events failed"):
        child.write([Answer([event_factory()], datetime.now(UTC))], [], [], holder="me")


@pytest.mark.sqlite
def test_a_child_that_died_fails_the_batch_and_is_started_again(
    tmp_path: object, event_factory: EventFactory
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    upgrade(url)
    process = StoreProcess(url, level="warning", fmt="console")
    try:
        process.write([Answer([event_factory()], datetime.now(UTC))], [], [], holder="me")
        assert process._process is not None
        os.kill(process._process.pid, signal.SIGKILL)
        process._process.join(5)

        with pytest.raises(StorageError, match="died"):
            process.write([Answer([event_factory()], datetime.now(UTC))], [], [], holder="me")
        results, _ = process.write(
            [Answer([event_factory()], datetime.now(UTC))], [], [], holder="me"
        )
        assert results[0].stored == 1
    finally:
        process.close()
    with EventStore.connect(url) as store:
        assert store.count() == 2


@pytest.mark.sqlite
def test_the_child_ends_with_its_pipe(tmp_path: object, event_factory: EventFactory) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    upgrade(url)
    process = StoreProcess(url, level="warning", fmt="console")
    process.write([Answer([event_factory()], datetime.now(UTC))], [], [], holder="me")
    child = process._process
    assert child is not None
    assert process._pipe is not None

    process._pipe.close()  # what a killed parent leaves behind
    child.join(10)

    assert child.exitcode == 0
    process._pipe = None
    process.close()


def test_a_database_the_child_cannot_open_is_said_at_the_first_write(
    tmp_path: object, event_factory: EventFactory
) -> None:
    process = StoreProcess("postgresql+psycopg://nobody@127.0.0.1:1/none", level="warning")
    try:
        with pytest.raises(StorageError):
            process.write([Answer([event_factory()], datetime.now(UTC))], [], [], holder="me")
    finally:
        process.close()
