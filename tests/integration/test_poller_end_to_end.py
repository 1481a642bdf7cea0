"""The poller end to end: the real SDK against the emulator over HTTP, into a real database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import EmulatorFactory
from tests.helpers import settings_for
from vodpoller import app, migrate
from vodpoller.config import Settings
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.samples import load_samples
from vodpoller.errors import StorageError
from vodpoller.events import PAYLOAD_COLUMNS, parse_entry
from vodpoller.poller import Poller
from vodpoller.schema import vod_events
from vodpoller.store import EventStore


@pytest.fixture
def build(database_url: str) -> Iterator[Any]:
    """Components (store migrated, SDK source, poller) on the test's database; closed after."""
    with contextlib.ExitStack() as stack:

        def make(settings_of: Any, **poll: Any) -> app.Components:
            return stack.enter_context(app.components(settings_of(database_url, **poll)))

        yield make


def _rows(store: EventStore) -> list[dict[str, Any]]:
    with store.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(vod_events))]


def test_every_sample_type_is_stored_with_its_typed_columns(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory(samples=True)
    built = build(lambda url, **p: settings_for(emulator, url, **p))

    result = built.drain()

    samples = load_samples()
    assert (result.pulled, result.stored, result.confirmed) == (len(samples),) * 3
    rows = {row["event_type"]: row for row in _rows(built.store)}
    assert len(rows) == len(samples) == 37
    for sample in samples:
        expected = parse_entry(sample, None)
        row = rows[sample["EventType"]]
        for column in PAYLOAD_COLUMNS:
            assert row[column] == getattr(expected, column), (sample["EventType"], column)
        assert (row["dedup_key"], row["content_key"], row["occurrence"]) == (
            expected.legacy_key,
            expected.content_key,
            0,
        )
        payload = dict(row["payload"])
        assert payload.pop("EventHandle") == row["event_handle"]
        assert payload == sample
        assert row["sub_app_id"] is None
        assert row["deliveries"] == 1
        assert row["confirmed_at"] is not None
    stats = EmulatorAdmin(emulator.url).stats()
    assert (stats["Queued"], stats["Leased"], stats["Confirmed"]) == (0, 0, 37)


def test_the_same_content_enqueued_twice_is_two_events_and_two_rows(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory()
    sample = load_samples()[0]
    EmulatorAdmin(emulator.url).enqueue([sample, sample])
    built = build(lambda url, **p: settings_for(emulator, url, **p))

    result = built.drain()

    assert (result.pulled, result.stored, result.duplicates, result.confirmed) == (2, 2, 0, 2)
    rows = _rows(built.store)
    assert [(row["occurrence"], row["deliveries"]) for row in rows] == [(0, 1), (1, 1)]


class _FailingStore:
    """A store whose commits fail: the database is gone."""

    def __init__(self, inner: EventStore):
        self.inner = inner
        self.attempts = 0

    def write(self, answers: Any, confirmed: Any, released: Any, **_: Any) -> Any:
        self.attempts += 1
        assert not confirmed, "nothing may be confirmed when nothing was stored"
        assert not released, "nothing may be let go of when nothing was stored"
        raise StorageError("database is gone (injected)")


def test_events_are_confirmed_only_after_commit_and_come_back_after_a_failed_store(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory(lease_seconds=1.0)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(20)
    built = build(lambda url, **p: settings_for(emulator, url, **p))
    failing = _FailingStore(built.store)
    broken = Poller(built.source, failing, concurrency=1)

    with pytest.raises(StorageError):
        broken.drain(None)

    stats = admin.stats()
    assert stats["Confirmed"] == 0
    # The first batch, and the second if the puller got to it before the first failed to
    # commit (pipelined): none of it confirmed.
    leased = stats["Leased"]
    assert leased in (16, 20)
    assert _rows(built.store) == []

    time.sleep(1.1)  # the lease runs out: the same events are delivered again
    result = built.drain()

    assert result.stored == 20
    stats = admin.stats()
    assert (stats["Confirmed"], stats["Leased"], stats["Queued"]) == (20, 0, 0)
    assert stats["Redelivered"] == leased
    assert len(_rows(built.store)) == 20


def test_a_redelivery_after_the_lease_adds_no_row(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory(lease_seconds=1.0)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(5)
    # Confirms fail until the budget is spent: stored, not confirmed, delivered again later.
    admin.set_faults({"ConfirmEvents": {"error_rate": 1.0, "error_codes": ["InternalError"]}})
    built = build(lambda url, **p: settings_for(emulator, url, **p), confirm_budget_seconds=0.3)

    first = built.drain()
    assert (first.stored, first.confirmed) == (5, 0)

    admin.set_faults({})
    time.sleep(1.1)
    second = built.drain()

    assert (second.pulled, second.stored, second.duplicates, second.confirmed) == (5, 0, 5, 5)
    rows = _rows(built.store)
    assert len(rows) == 5
    assert {row["deliveries"] for row in rows} == {2}
    assert all(row["confirmed_at"] is not None for row in rows)
    assert admin.stats()["Redelivered"] == 5


def test_several_applications_drain_into_one_table_with_their_sub_app_ids(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    counts = {1500000001: 7, 1500000002: 40, 1500000003: 1}
    for sub_app_id, count in counts.items():
        admin.generate(count, sub_app_id=sub_app_id)
    admin.generate(3)  # the default application is not configured: left alone
    built = build(lambda url, **p: settings_for(emulator, url, sub_app_ids=tuple(counts), **p))

    result = built.drain()

    assert result.stored == result.confirmed == sum(counts.values())
    by_app: dict[int | None, int] = {}
    for row in _rows(built.store):
        by_app[row["sub_app_id"]] = by_app.get(row["sub_app_id"], 0) + 1
    assert by_app == counts
    per_app = admin.stats()["Applications"]
    assert per_app["default"]["Queued"] == 3
    assert all(per_app[str(app)]["Confirmed"] == n for app, n in counts.items())


def test_a_backlog_drains_with_several_pullers_and_every_event_is_stored_once(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory(rate_limit=0)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(600)
    built = build(lambda url, **p: settings_for(emulator, url, **p), concurrency=4)

    result = built.drain()

    assert (result.pulled, result.stored, result.duplicates, result.confirmed) == (600,) * 2 + (
        0,
        600,
    )
    stats = admin.stats()
    assert (stats["Confirmed"], stats["Leased"], stats["Queued"]) == (600, 0, 0)
    assert built.store.count() == 600
    received = [row["received_at"] for row in _rows(built.store)]
    assert all(r.tzinfo is not None and r.utcoffset() == timedelta(0) for r in received)
    assert max(received) <= datetime.now(UTC)


def test_lost_confirm_answers_are_retried_and_every_event_ends_confirmed(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory(seed=7)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(120)
    admin.set_faults(
        {
            "ConfirmEvents": {"drop_rate": 0.3, "error_rate": 0.2, "http_error_rate": 0.1},
            "PullEvents": {"error_rate": 0.1, "http_error_rate": 0.05},
        }
    )
    built = build(lambda url, **p: settings_for(emulator, url, **p), concurrency=2)

    stored = 0
    for _ in range(10):
        try:
            stored += built.drain().stored
        except Exception:  # noqa: BLE001, S112 (a drain may end on a pull fault; drain again)
            continue
        if admin.stats()["Confirmed"] == 120:
            break

    stats = admin.stats()
    assert (stats["Confirmed"], stats["Leased"], stats["Queued"]) == (120, 0, 0)
    rows = _rows(built.store)
    assert len(rows) == 120 == stored
    assert all(row["confirmed_at"] is not None for row in rows)


def test_migrations_are_applied_by_open_store(database_url: str) -> None:
    store = EventStore.connect(database_url)
    try:
        assert migrate.current_revision(store.engine) is None
    finally:
        store.dispose()
    settings = Settings.model_validate({"database": {"url": database_url}})
    opened = app.open_store(settings, run_migrations=True)
    try:
        assert migrate.current_revision(opened.engine) == migrate.head_revision()
    finally:
        opened.dispose()
