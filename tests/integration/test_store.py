"""The event store on real SQLite, PostgreSQL and MySQL/MariaDB databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import Connection, text, update
from sqlalchemy.exc import SQLAlchemyError

from tests.databases import EventFactory, drop_database
from vodpoller.database import make_engine, writer
from vodpoller.errors import StorageError
from vodpoller.events import LONG_TEXT, PAYLOAD_COLUMNS, SHORT_TEXT, Event
from vodpoller.migrate import upgrade
from vodpoller.schema import vod_events
from vodpoller.store import EventStore, SaveResult, SettleResult

CHINA = timezone(timedelta(hours=8))
TYPED_COLUMNS = ("event_type", "event_handle", *PAYLOAD_COLUMNS)


def by_key(store: EventStore) -> dict[str, dict[str, Any]]:
    return {str(row["dedup_key"]): row for row in store.rows()}


def test_batch_is_stored_with_every_typed_column(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    received_at = datetime(2025, 3, 1, 20, 15, 30, 123456, tzinfo=CHINA)
    events = [
        event_factory(sub_app_id=1400123456, ErrCode=40001, Status="FAIL"),
        event_factory("PullComplete"),
        event_factory("NewFileUpload", sub_app_id=(2**63) - 1),
    ]

    result = migrated_store.save(events, received_at=received_at)

    assert result == SaveResult(stored=3, duplicates=0)
    ids = [row["id"] for row in migrated_store.rows()]
    assert ids == sorted(set(ids))
    stored = by_key(migrated_store)
    for event in events:
        row = stored[event.legacy_key]
        assert {column: row[column] for column in TYPED_COLUMNS} == {
            column: getattr(event, column) for column in TYPED_COLUMNS
        }
        assert row["payload"] == event.payload
        assert row["received_at"] == received_at
        assert row["confirmed_at"] is None
        assert row["deliveries"] == 1
    first = stored[events[0].legacy_key]
    assert (first["err_code"], first["content_key"], first["occurrence"]) == (
        40001,
        events[0].content_key,
        0,
    )
    assert first["task_id"] is not None
    assert first["session_context"] is not None
    assert result.ids == tuple(stored[event.legacy_key]["id"] for event in events)


def test_redelivered_event_adds_no_row(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    first = event_factory()
    again = event_factory.redelivery(first)
    assert (again.content_key, again.legacy_key) == (first.content_key, first.legacy_key)
    assert again.event_handle != first.event_handle

    assert migrated_store.save([first]) == SaveResult(stored=1, duplicates=0)
    assert migrated_store.save([again, event_factory()]) == SaveResult(stored=1, duplicates=1)

    assert migrated_store.count() == 2
    row = by_key(migrated_store)[first.legacy_key]
    assert row["deliveries"] == 2
    assert row["event_handle"] == first.event_handle


def test_identical_entries_of_one_answer_are_distinct_events(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    event = event_factory()
    twin = event_factory.redelivery(event)

    result = migrated_store.save([event, twin, event_factory()])

    assert result == SaveResult(stored=3, duplicates=0)
    rows = [row for row in migrated_store.rows() if row["content_key"] == event.content_key]
    assert [(row["occurrence"], row["deliveries"]) for row in rows] == [(0, 1), (1, 1)]
    assert [row["event_handle"] for row in rows] == [event.event_handle, twin.event_handle]

    # Delivered again together (neither was confirmed): each goes back to its own row.
    assert migrated_store.save([twin, event]) == SaveResult(stored=0, duplicates=2)
    rows = [row for row in migrated_store.rows() if row["content_key"] == event.content_key]
    assert [row["deliveries"] for row in rows] == [2, 2]
    assert migrated_store.count() == 3


def test_empty_batch_stores_nothing(migrated_store: EventStore) -> None:
    assert migrated_store.save([]) == SaveResult(stored=0, duplicates=0)
    assert migrated_store.settle([]) == SettleResult(0, 0, 0)
    assert migrated_store.count() == 0


def test_settle_sets_confirmed_at_once(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    first, second, third = event_factory.batch(3)
    ids = migrated_store.save([first, second, third]).ids
    early = datetime(2025, 3, 1, 12, 0, 0, 500, tzinfo=UTC)
    late = early + timedelta(minutes=5)

    assert migrated_store.settle([ids[0], ids[1]], at=early).confirmed == 2
    assert migrated_store.settle(ids, at=late).confirmed == 3  # rows touched; first mark kept
    assert migrated_store.settle([max(ids) + 1000]).confirmed == 0

    confirmed = {key: row["confirmed_at"] for key, row in by_key(migrated_store).items()}
    assert confirmed == {first.legacy_key: early, second.legacy_key: early, third.legacy_key: late}


def test_payload_round_trips_exactly(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    event = event_factory(
        Message="视频处理完成 ✅ — ok",
        Output={
            "FileId": "5285890784246869930",
            "Nested": {"List": [1, None, {"Deep": True, "Empty": {}}], "EmptyList": []},
            "Null": None,
            "BigInt": 2**63 - 1,
            "BiggerThan64Bits": 2**70,
            "Negative": -(2**63),
            "Float": 0.1,
            "Emoji": "🎬🎞️",
            "Quote": 'it\'s "quoted" \\ back\\slash\n',
        },
    )

    migrated_store.save([event])

    (row,) = migrated_store.rows()
    assert row["payload"] == event.payload
    assert row["message"] == "视频处理完成 ✅ — ok"


def test_timestamps_are_timezone_aware_utc(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    before = datetime.now(UTC)
    migrated_store.save([event_factory()])
    after = datetime.now(UTC)
    migrated_store.settle([row["id"] for row in migrated_store.rows()])

    (row,) = migrated_store.rows()
    for column in ("received_at", "confirmed_at"):
        value = row[column]
        assert isinstance(value, datetime)
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= value <= after + timedelta(seconds=5)


def test_naive_timestamps_are_refused(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    with pytest.raises(ValueError, match="naive"):
        migrated_store.save([event_factory()], received_at=datetime(2025, 1, 1))
    assert migrated_store.count() == 0


def test_over_long_values_fit_their_columns(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    # Four-byte characters: MySQL counts utf8mb4 characters, not bytes, against VARCHAR(255).
    event = event_factory(
        "X" * (SHORT_TEXT * 2),
        handle="h" * (LONG_TEXT * 2),
        TaskId="🎬" * (SHORT_TEXT + 50),
        FileId="9" * (SHORT_TEXT * 4),
        Status="S" * 1000,
        SessionId="i" * 1000,
        Message="m" * (LONG_TEXT * 3),
        FileUrl="https://example.com/" + "u" * (LONG_TEXT * 3),
        SessionContext="c" * (LONG_TEXT * 3),
        ErrCode=str(2**62),
    )
    for column in ("event_type", "task_id", "file_id", "status", "session_id"):
        assert len(getattr(event, column)) == SHORT_TEXT
    for column in ("event_handle", "message", "file_url", "session_context"):
        assert len(getattr(event, column)) == LONG_TEXT

    assert migrated_store.save([event]) == SaveResult(stored=1, duplicates=0)

    (row,) = migrated_store.rows()
    assert {column: row[column] for column in TYPED_COLUMNS} == {
        column: getattr(event, column) for column in TYPED_COLUMNS
    }
    assert row["err_code"] == 2**62


def test_unmigrated_database_raises_storage_error(
    database_url: str, event_factory: EventFactory
) -> None:
    store = EventStore.connect(database_url)
    try:
        with pytest.raises(StorageError, match="storing a batch of 1 events failed") as caught:
            store.save([event_factory()])
        assert isinstance(caught.value.__cause__, SQLAlchemyError)
        with pytest.raises(StorageError):
            store.count()
    finally:
        store.dispose()


def test_dropped_database_raises_storage_error(
    database_url: str, migrated_store: EventStore, event_factory: EventFactory
) -> None:
    migrated_store.save([event_factory()])

    migrated_store.dispose()  # SQLite: let go of the file; servers: FORCE/KILL does it
    drop_database(database_url)

    with pytest.raises(StorageError) as caught:
        migrated_store.save([event_factory()])
    assert isinstance(caught.value.__cause__, SQLAlchemyError)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/missing", id="postgresql"),
        pytest.param("mysql+pymysql://root@127.0.0.1:1/missing", id="mysql"),
    ],
)
def test_unreachable_server_raises_storage_error(url: str, event_factory: EventFactory) -> None:
    store = EventStore.connect(url)  # lazy: connecting happens on first use
    try:
        with pytest.raises(StorageError) as caught:
            store.save([event_factory()])
        assert isinstance(caught.value.__cause__, SQLAlchemyError)
        with pytest.raises(StorageError, match="recording how 1 confirms went failed"):
            store.settle([1])
    finally:
        store.dispose()


def test_sqlite_directory_that_cannot_exist_raises_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(StorageError, match="cannot set up the database") as caught:
        EventStore.connect(f"sqlite:///{blocker / 'events.db'}")
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "unparseable"),
        ("postgresql+psycopg://h:port/x", "unparseable"),
        ("nosuch://x", "cannot set up the database nosuch://x"),
        ("mysql+mysqldb://root:hunter2@x/y", r"no driver for mysql\+mysqldb://root:\*\*\*@x/y"),
    ],
)
def test_bad_url_raises_storage_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as caught:
        EventStore.connect(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.sqlite
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    with EventStore.connect(url) as store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000


def save_in_batches(store: EventStore, events: Sequence[Event]) -> list[SaveResult]:
    return [store.save(events[start : start + 16]) for start in range(0, len(events), 16)]


def test_two_daemons_saving_the_same_events_at_once_store_each_once(
    database_url: str, migrated_store: EventStore, event_factory: EventFactory
) -> None:
    events = event_factory.batch(500)
    # One writer goes forwards and the other backwards, so their batches overlap and collide.
    orders = [events, events[::-1]]
    stores = [EventStore.connect(database_url) for _ in orders]
    start = threading.Barrier(len(orders))
    results: list[SaveResult] = []
    errors: list[BaseException] = []

    def writer(store: EventStore, batch: Sequence[Event]) -> None:
        try:
            start.wait()
            results.extend(save_in_batches(store, batch))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread below
            errors.append(error)

    threads = [
        threading.Thread(target=writer, args=(store, order))
        for store, order in zip(stores, orders, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        for store in stores:
            store.dispose()

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    rows = migrated_store.rows()
    assert len(rows) == 500
    assert {row["dedup_key"] for row in rows} == {event.legacy_key for event in events}
    assert sum(row["deliveries"] for row in rows) == 1000
    assert sum(result.stored for result in results) == 500
    assert sum(result.duplicates for result in results) == 500


def lock_waits(monitor: Connection) -> int:
    """How many transactions of this database wait for a row lock right now."""
    if monitor.dialect.name == "postgresql":
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
    else:
        query = "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
    return int(monitor.execute(text(query)).scalar_one())


def wait_for_lock_waits(monitor: Connection, count: int) -> None:
    deadline = time.monotonic() + 20
    while lock_waits(monitor) < count:
        assert time.monotonic() < deadline, "the store never started waiting for the lock"
        # Not faster: InnoDB refreshes INNODB_TRX only when it was not read for 0.1 s.
        time.sleep(0.25)


def test_save_that_loses_a_deadlock_runs_again(
    database_url: str, migrated_store: EventStore, event_factory: EventFactory
) -> None:
    if migrated_store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: it cannot deadlock")
    events = sorted(event_factory.batch(10), key=lambda event: event.legacy_key)
    migrated_store.save(events)
    first, second = events[0], events[1]
    key = vod_events.c.dedup_key
    outcome: list[SaveResult | BaseException] = []

    def redeliver_first_two() -> None:
        try:
            outcome.append(
                migrated_store.save([event_factory.redelivery(e) for e in (first, second)])
            )
        except BaseException as error:  # noqa: BLE001 - reported by the main thread below
            outcome.append(error)

    other = make_engine(database_url)
    saver = threading.Thread(target=redeliver_first_two)
    try:
        with (
            structlog.testing.capture_logs() as logs,
            # READ COMMITTED: no InnoDB gap lock that would make the store wait before it
            # holds anything (then there is no cycle, only a wait).
            other.connect().execution_options(isolation_level="READ COMMITTED") as blocker,
            other.connect().execution_options(isolation_level="AUTOCOMMIT") as monitor,
        ):
            # The blocker holds every row but the first (a big transaction: InnoDB picks the
            # smaller one as its victim); the store takes the first row, then waits for the
            # second; the blocker asking for the first row closes the cycle.
            held = [event.legacy_key for event in events[1:]]  # exact keys: no gap locks
            blocker.execute(update(vod_events).where(key.in_(held)).values(status="X"))
            saver.start()
            wait_for_lock_waits(monitor, 1)
            blocker.execute(update(vod_events).where(key == first.legacy_key).values(status="X"))
            blocker.commit()
            saver.join(timeout=60)
    finally:
        other.dispose()

    assert outcome == [SaveResult(stored=0, duplicates=2)]
    assert [entry["event"] for entry in logs] == ["storage_transaction_retried"]
    deliveries = {key: row["deliveries"] for key, row in by_key(migrated_store).items()}
    assert deliveries[first.legacy_key] == deliveries[second.legacy_key] == 2


def test_sqlite_readers_are_not_blocked_by_a_write_in_progress(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    with (
        EventStore.connect(url) as daemon,
        EventStore.connect(url) as reader,
        writer(daemon.engine).begin() as holding,  # the write lock, held
    ):
        holding.exec_driver_sql("UPDATE vod_events SET deliveries = deliveries")
        started = time.monotonic()
        assert reader.count() == 0
        assert time.monotonic() - started < 1.0
