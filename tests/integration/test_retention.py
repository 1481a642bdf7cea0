"""Retention on real SQLite, PostgreSQL and MySQL/MariaDB databases: older rows go in bounded
batches, newer ones stay, a dry run counts, a stop ends it between batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from structlog.testing import capture_logs

from tests.databases import EventFactory
from vodpoller.config import RetentionSettings, settings_from
from vodpoller.errors import ConfigError, StorageError
from vodpoller.retention import (
    BATCH_ROWS,
    count_before,
    cutoff_for,
    purge_before,
    purge_older_than,
)
from vodpoller.schema import vod_events
from vodpoller.store import EventStore

CUTOFF = datetime(2026, 3, 1, tzinfo=UTC)


def _received(store: EventStore) -> list[datetime]:
    with store.engine.connect() as connection:
        column = vod_events.c.received_at
        return list(connection.scalars(select(column).order_by(column)))


def _fill(store: EventStore, events: EventFactory, old: int, new: int) -> None:
    """`old` rows received before the cutoff (one batch per day back), `new` at it and after."""
    for day in range(old):
        store.save([events()], CUTOFF - timedelta(days=day + 1))
    store.save([events()], CUTOFF)  # exactly at the cutoff: not before it, so it stays
    for day in range(new - 1):
        store.save([events()], CUTOFF + timedelta(days=day + 1))


@pytest.fixture
def deletes(migrated_store: EventStore) -> Iterator[list[int]]:
    """The row count of every DELETE the store's engine runs."""
    counts: list[int] = []

    def record(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            counts.append(cursor.rowcount)

    event.listen(migrated_store.engine, "after_cursor_execute", record)
    yield counts
    event.remove(migrated_store.engine, "after_cursor_execute", record)


def test_rows_received_before_the_cutoff_go_in_batches_of_at_most_the_bound(
    migrated_store: EventStore, event_factory: EventFactory, deletes: list[int]
) -> None:
    _fill(migrated_store, event_factory, old=10, new=4)

    removed = purge_before(migrated_store.engine, CUTOFF, batch_rows=3, pause_seconds=0)

    assert removed == 10
    assert deletes == [3, 3, 3, 1]
    kept = _received(migrated_store)
    assert len(kept) == 4
    assert min(kept) == CUTOFF


def test_an_exact_multiple_of_the_batch_ends_with_an_empty_read(
    migrated_store: EventStore, event_factory: EventFactory, deletes: list[int]
) -> None:
    _fill(migrated_store, event_factory, old=6, new=1)

    assert purge_before(migrated_store.engine, CUTOFF, batch_rows=3, pause_seconds=0) == 6
    assert deletes == [3, 3]
    assert _received(migrated_store) == [CUTOFF]


def test_the_oldest_rows_go_first(migrated_store: EventStore, event_factory: EventFactory) -> None:
    _fill(migrated_store, event_factory, old=5, new=1)
    stop = threading.Event()

    def stop_after_the_first_batch(*_args: Any) -> None:
        stop.set()

    event.listen(migrated_store.engine, "commit", stop_after_the_first_batch)
    removed = purge_before(migrated_store.engine, CUTOFF, batch_rows=2, stop=stop)

    assert removed == 2
    assert min(_received(migrated_store)) == CUTOFF - timedelta(days=3)


def test_a_dry_run_counts_and_removes_nothing(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    _fill(migrated_store, event_factory, old=7, new=2)

    assert count_before(migrated_store.engine, CUTOFF) == 7
    assert count_before(migrated_store.engine, CUTOFF + timedelta(microseconds=1)) == 8
    assert len(_received(migrated_store)) == 9


def test_nothing_older_means_nothing_removed(
    migrated_store: EventStore, event_factory: EventFactory, deletes: list[int]
) -> None:
    _fill(migrated_store, event_factory, old=0, new=3)

    assert purge_before(migrated_store.engine, CUTOFF) == 0
    assert deletes == []


def test_redelivered_and_many_event_batches_go_as_rows(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    batch = event_factory.batch(25)
    migrated_store.save(batch, CUTOFF - timedelta(days=1))
    migrated_store.save([event_factory.redelivery(batch[0])], CUTOFF + timedelta(days=1))

    assert purge_before(migrated_store.engine, CUTOFF, batch_rows=10, pause_seconds=0) == 25
    # The redelivery found its row (received before the cutoff): nothing is left.
    assert _received(migrated_store) == []


def test_the_daily_job_purges_what_is_older_than_the_days_and_logs_it(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    now = datetime.now(UTC)
    migrated_store.save([event_factory()], now - timedelta(days=31))
    migrated_store.save([event_factory()], now - timedelta(days=29))

    with capture_logs() as logs:
        removed = purge_older_than(migrated_store.engine, 30)

    assert removed == 1
    assert [entry["event"] for entry in logs] == ["retention"]
    assert logs[0]["removed"] == 1
    assert logs[0]["days"] == 30


def test_a_missing_table_is_a_storage_error(database_url: str) -> None:
    with EventStore.connect(database_url) as store:
        with pytest.raises(StorageError, match="purging events failed after removing 0"):
            purge_before(store.engine, CUTOFF)
        with pytest.raises(StorageError, match="counting events failed"):
            count_before(store.engine, CUTOFF)


def test_a_batch_bound_below_one_is_a_bug(migrated_store: EventStore) -> None:
    engine: Engine = migrated_store.engine
    with pytest.raises(ValueError, match="at least 1"):
        purge_before(engine, CUTOFF, batch_rows=0)


def test_the_defaults_are_a_thousand_rows_and_the_cutoff_is_days_before_now() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)

    assert BATCH_ROWS == 1000
    assert cutoff_for(30, now) == datetime(2026, 4, 1, 12, tzinfo=UTC)


def test_retention_is_off_by_default_and_days_cannot_be_negative() -> None:
    assert RetentionSettings().days == 0
    assert settings_from({"retention": {"days": 90}}, {}, "t.toml").retention.days == 90
    with pytest.raises(ConfigError, match=r"`retention\.days`"):
        settings_from({"retention": {"days": -1}}, {}, "t.toml")
    with pytest.raises(ConfigError, match=r"`retention\.days`"):
        settings_from({"retention": {"days": 1.5}}, {}, "t.toml")
