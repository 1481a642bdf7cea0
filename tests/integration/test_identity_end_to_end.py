"""Event identity end to end: the real SDK against the emulator over HTTP, the daemon's own
wiring (`app.components`), into each of the three databases."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import settings_for
from vodpoller import app
from vodpoller.emulator.admin import EmulatorAdmin

APP = 1500000001


@pytest.fixture
def build(database_url: str) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:

        def make(emulator: Any, **poll: Any) -> app.Components:
            settings = settings_for(emulator, database_url, sub_app_ids=(APP,), **poll)
            return stack.enter_context(app.components(settings))

        yield make


def cast(status: str) -> dict[str, Any]:
    return {
        "EventType": "MediaCastStatusChanged",
        "MediaCastStatusChangedEvent": {"CastId": "4c84af40c5af834d", "Status": status},
    }


def test_working_stopped_working_is_three_rows_and_the_newest_says_working(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    built = build(emulator)

    for status in ("Working", "Stopped", "Working"):
        admin.enqueue(cast(status), sub_app_id=APP)
        assert built.drain().stored == 1

    rows = built.store.rows()
    assert [row["status"] for row in rows] == ["Working", "Stopped", "Working"]
    assert max(rows, key=lambda row: row["id"])["status"] == "Working"
    assert [row["deliveries"] for row in rows] == [1, 1, 1]
    assert all(row["confirmed_at"] is not None for row in rows)


def test_the_three_in_one_answer_are_three_rows_in_their_order(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).enqueue([cast("Working"), cast("Stopped"), cast("Working")], APP)
    built = build(emulator)

    result = built.drain()

    assert (result.pulled, result.stored, result.duplicates, result.confirmed) == (3, 3, 0, 3)
    rows = sorted(built.store.rows(), key=lambda row: row["id"])
    assert [row["status"] for row in rows] == ["Working", "Stopped", "Working"]


def test_two_identical_entries_of_one_answer_are_two_rows(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory()
    deleted = {"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["5285890784"]}}
    EmulatorAdmin(emulator.url).enqueue([deleted, deleted], APP)
    built = build(emulator)

    result = built.drain()

    assert (result.stored, result.duplicates, result.confirmed) == (2, 0, 2)
    assert [row["occurrence"] for row in built.store.rows()] == [0, 1]


def test_a_redelivery_after_a_lost_confirm_is_one_row_with_two_deliveries(
    emulator_factory: EmulatorFactory, build: Any
) -> None:
    emulator = emulator_factory(lease_seconds=1.0)
    admin = EmulatorAdmin(emulator.url)
    admin.enqueue([cast("Working"), cast("Stopped")], APP)
    # Every confirm fails before it reaches the service, until the budget is spent.
    admin.set_faults({"ConfirmEvents": {"http_error_rate": 1.0}})
    built = build(emulator, confirm_budget_seconds=0.3)

    first = built.drain()
    admin.set_faults({})
    time.sleep(1.1)  # the lease runs out: VOD delivers both again
    again = built.drain()

    assert (first.stored, first.confirmed) == (2, 0)
    assert (again.stored, again.duplicates, again.confirmed) == (0, 2, 2)
    rows = built.store.rows()
    assert [(row["status"], row["deliveries"]) for row in rows] == [("Working", 2), ("Stopped", 2)]
    assert all(row["confirmed_at"] is not None and row["held_by"] is None for row in rows)
    stats = admin.stats()
    assert (stats["Confirmed"], stats["Leased"], stats["Queued"]) == (2, 0, 0)
