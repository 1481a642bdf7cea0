"""Event identity on real SQLite, PostgreSQL and MySQL/MariaDB databases: one row per event,
never two events in one row, with daemons holding, releasing, dying and racing."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update

from tests.databases import EventFactory
from vodpoller.daemons import DaemonRegistry, LocalHost
from vodpoller.database import transaction, writer
from vodpoller.events import Event, parse_entry
from vodpoller.schema import vod_daemons, vod_events
from vodpoller.store import Answer, EventStore, Release, SaveResult, _save, _settle

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cast(status: str, handle: str) -> Event:
    entry = {
        "EventHandle": handle,
        "EventType": "MediaCastStatusChanged",
        "MediaCastStatusChangedEvent": {"CastId": "cast-1", "Status": status},
    }
    return parse_entry(entry, 1500000001)


def redelivered(event: Event, handle: str, **added: Any) -> Event:
    """The same event again with a new handle; `added` keys join the entry (VOD's release)."""
    return parse_entry({**event.payload, **added, "EventHandle": handle}, event.sub_app_id)


def live_daemon(store: EventStore) -> str:
    registry = DaemonRegistry(store.engine, command="test")
    registry.register()
    return registry.daemon_id


def dead_daemon(store: EventStore) -> str:
    """A daemon registered on this host whose process has exited (killed, say)."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    local = LocalHost.current()
    daemon_id = f"{local.name}:{finished.stdout.strip()}:dead"
    row = {
        "id": daemon_id,
        "host": local.name,
        "pid": int(finished.stdout),
        "boot_id": local.boot_id,
        "version": "0.2.0",
        "command": "run",
        "applications": "[]",
        "started_at": datetime.now(UTC),
        "heartbeat_at": datetime.now(UTC),
    }
    transaction(writer(store.engine), "test", lambda c: c.execute(insert(vod_daemons), row))
    return daemon_id


def rows_of(store: EventStore, content_key: str) -> list[dict[str, Any]]:
    return [row for row in store.rows() if row["content_key"] == content_key]


def test_working_stopped_working_is_three_rows_and_the_newest_says_working(
    migrated_store: EventStore,
) -> None:
    daemon = live_daemon(migrated_store)
    for n, status in enumerate(["Working", "Stopped", "Working"]):
        saved = migrated_store.save([cast(status, f"h{n}")], at(n), holder=daemon)
        migrated_store.settle(saved.ids, holder=daemon)

    rows = migrated_store.rows()
    assert [row["status"] for row in rows] == ["Working", "Stopped", "Working"]
    assert max(rows, key=lambda row: row["id"])["status"] == "Working"
    assert [row["deliveries"] for row in rows] == [1, 1, 1]
    assert all(row["confirmed_at"] is not None and row["held_by"] is None for row in rows)


def test_working_stopped_working_in_one_answer_is_three_rows_in_arrival_order(
    migrated_store: EventStore,
) -> None:
    answer = [cast("Working", "h1"), cast("Stopped", "h2"), cast("Working", "h3")]

    assert migrated_store.save(answer, holder=live_daemon(migrated_store)).stored == 3

    rows = sorted(migrated_store.rows(), key=lambda row: row["id"])
    assert [row["status"] for row in rows] == ["Working", "Stopped", "Working"]


def test_a_redelivery_after_a_refused_confirm_is_one_row_also_with_a_new_null_key(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    daemon = live_daemon(migrated_store)
    first = event_factory()
    (row_id,) = migrated_store.save([first], at(0), holder=daemon).ids
    assert migrated_store.settle(released=[Release(row_id, at(0))], holder=daemon).released == 1

    again = redelivered(first, "h-2", NewEventOfARelease=None)
    assert again.legacy_key != first.legacy_key
    saved = migrated_store.save([again], at(31), holder=daemon)
    migrated_store.settle(saved.ids, holder=daemon)

    assert saved == SaveResult(stored=0, duplicates=1)
    (row,) = migrated_store.rows()
    assert (row["id"], row["deliveries"], row["held_by"]) == (row_id, 2, None)
    assert row["confirmed_at"] is not None
    assert row["event_handle"] == first.event_handle
    assert (row["received_at"], row["delivered_at"]) == (at(0), at(31))


def test_a_row_held_by_a_dead_daemon_takes_the_redelivery(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    crashed = dead_daemon(migrated_store)
    first = event_factory()
    migrated_store.save([first], at(0), holder=crashed)  # committed; then the crash

    saved = migrated_store.save(
        [redelivered(first, "h-2")], at(40), holder=live_daemon(migrated_store)
    )

    assert saved == SaveResult(stored=0, duplicates=1)
    (row,) = migrated_store.rows()
    assert row["deliveries"] == 2


def test_a_row_a_living_daemon_still_confirms_does_not_take_a_twin(
    migrated_store: EventStore,
) -> None:
    holder, other = live_daemon(migrated_store), live_daemon(migrated_store)
    migrated_store.save([cast("Working", "h1")], at(0), holder=holder)  # confirm in flight

    saved = migrated_store.save([cast("Working", "h2")], at(0.2), holder=other)
    migrated_store.settle(
        migrated_store.rows()[0]["id"] and [r["id"] for r in migrated_store.rows()], holder=holder
    )

    assert saved == SaveResult(stored=1, duplicates=0)
    assert [row["occurrence"] for row in migrated_store.rows()] == [0, 1]


def test_a_twin_stored_while_the_holder_still_held_folds_in_when_it_lets_go(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    slow, fast = live_daemon(migrated_store), live_daemon(migrated_store)
    first = event_factory()
    (held,) = migrated_store.save([first], at(0), holder=slow).ids
    # Its lease ran out before the slow daemon confirmed: VOD delivered the event again.
    (twin,) = migrated_store.save([redelivered(first, "h-2")], at(31), holder=fast).ids
    migrated_store.settle([twin], holder=fast)
    assert len(migrated_store.rows()) == 2

    settled = migrated_store.settle(released=[Release(held, at(0))], holder=slow)

    assert (settled.released, settled.folded) == (1, 1)
    (row,) = migrated_store.rows()
    assert (row["id"], row["deliveries"]) == (twin, 2)
    assert (row["received_at"], row["event_handle"]) == (at(0), first.event_handle)
    assert row["confirmed_at"] is not None


def test_a_released_row_without_a_later_twin_stays_and_waits(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    daemon = live_daemon(migrated_store)
    event = event_factory()
    answer = [event, redelivered(event, "h-same-answer")]  # two events of one answer
    first, second = migrated_store.save(answer, at(0), holder=daemon).ids

    settled = migrated_store.settle(released=[Release(first, at(0))], holder=daemon)

    assert (settled.released, settled.folded) == (1, 0)
    assert [row["id"] for row in migrated_store.rows()] == [first, second]


def race(stores: Sequence[EventStore], work: Any) -> list[Any]:
    """Run `work(index, store)` in one thread per store, all released at once."""
    start = threading.Barrier(len(stores))
    results: list[Any] = [None] * len(stores)
    errors: list[BaseException] = []

    def run(index: int, store: EventStore) -> None:
        try:
            start.wait()
            results[index] = work(index, store)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return results


def test_two_daemons_racing_on_the_same_redelivery_end_with_one_row(
    database_url: str, migrated_store: EventStore, event_factory: EventFactory
) -> None:
    """One copy is the expired earlier delivery (its confirm is refused), the other the
    redelivery (confirmed): whoever wins the row, the other's copy folds in."""
    first = event_factory()
    migrated_store.save([first], at(0))  # stored without a holder: nobody holds it
    daemons = [live_daemon(migrated_store), live_daemon(migrated_store)]
    copies = [(redelivered(first, "h-expired"), at(31)), (redelivered(first, "h-valid"), at(62))]
    stores = [EventStore.connect(database_url) for _ in daemons]
    try:
        saved = race(
            stores,
            lambda i, store: store.save([copies[i][0]], copies[i][1], holder=daemons[i]),
        )
        # The expired copy's confirm is refused; the valid one's goes through.
        stores[0].settle(released=[Release(saved[0].ids[0], copies[0][1])], holder=daemons[0])
        stores[1].settle(saved[1].ids, holder=daemons[1])
    finally:
        for store in stores:
            store.dispose()

    (row,) = migrated_store.rows()
    assert row["deliveries"] == 3
    assert row["confirmed_at"] is not None
    assert row["held_by"] is None
    assert row["received_at"] == at(0)


def test_two_daemons_storing_one_new_event_at_once_end_with_one_row(
    database_url: str, migrated_store: EventStore, event_factory: EventFactory
) -> None:
    """Both copies new to the database: one insert wins the unique key, the other decides
    again; the expired copy folds in when its confirm is refused."""
    first = event_factory()
    daemons = [live_daemon(migrated_store), live_daemon(migrated_store)]
    copies = [(first, at(0)), (redelivered(first, "h-valid"), at(31))]
    stores = [EventStore.connect(database_url) for _ in daemons]
    try:
        saved = race(
            stores,
            lambda i, store: store.save([copies[i][0]], copies[i][1], holder=daemons[i]),
        )
        assert sorted(result.stored for result in saved) == [1, 1]
        stores[0].settle(released=[Release(saved[0].ids[0], copies[0][1])], holder=daemons[0])
        stores[1].settle(saved[1].ids, holder=daemons[1])
    finally:
        for store in stores:
            store.dispose()

    (row,) = migrated_store.rows()
    assert row["deliveries"] == 2
    assert row["confirmed_at"] is not None
    assert row["held_by"] is None


def in_background(work: Any) -> tuple[threading.Thread, list[Any]]:
    """Start `work()` in a thread; the list gets its result (or the error it raised)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # noqa: BLE001 - the test looks at it
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_twin_arriving_while_the_holder_lets_go_takes_the_released_row(
    database_url: str, migrated_store: EventStore, event_factory: EventFactory
) -> None:
    """The holder's release is in flight (its transaction has let go of the row, not yet
    committed) when another daemon stores the redelivery: the redelivery waits for the
    release and then takes the row, rather than becoming a second one beside it."""
    slow, fast = live_daemon(migrated_store), live_daemon(migrated_store)
    first = event_factory()
    (held,) = migrated_store.save([first], at(0), holder=slow).ids
    other = EventStore.connect(database_url)
    try:
        with writer(migrated_store.engine).connect() as releasing:
            releasing.begin()
            _settle(releasing, [], [Release(held, at(0))], slow, at(40))
            thread, outcome = in_background(
                lambda: other.save([redelivered(first, "h-2")], at(31), holder=fast)
            )
            thread.join(0.5)
            releasing.commit()
        thread.join(60)
    finally:
        other.dispose()

    assert outcome == [SaveResult(stored=0, duplicates=1, row_ids=(held,))]
    (row,) = migrated_store.rows()
    assert (row["held_by"], row["deliveries"]) == (fast, 2)


def test_a_release_waiting_for_a_twin_being_stored_folds_into_it(
    database_url: str, migrated_store: EventStore, event_factory: EventFactory
) -> None:
    """The other way round: the redelivery is being stored (not yet committed) when the
    holder lets go. The release waits for it and folds its row into the twin, also when an
    earlier release in the same transaction read the table before the twin was committed
    (InnoDB's REPEATABLE READ would keep showing that older state to a plain read)."""
    slow, fast = live_daemon(migrated_store), live_daemon(migrated_store)
    lonely, first = event_factory(), event_factory()
    alone, held = migrated_store.save([lonely, first], at(0), holder=slow).ids
    other = EventStore.connect(database_url)
    try:
        with writer(other.engine).connect() as storing:
            storing.begin()
            (saved,) = _save(storing, [Answer([redelivered(first, "h-2")], at(31))], fast)
            thread, outcome = in_background(
                lambda: migrated_store.settle(
                    released=[Release(alone, at(0)), Release(held, at(0))], holder=slow
                )
            )
            thread.join(0.5)
            storing.commit()
        thread.join(60)
        other.settle(saved.ids, holder=fast)
    finally:
        other.dispose()

    assert [(result.released, result.folded) for result in outcome] == [(2, 1)]
    twin = saved.ids[0]
    assert [row["id"] for row in migrated_store.rows()] == [alone, twin]
    row = migrated_store.rows()[1]
    assert (row["deliveries"], row["confirmed_at"] is not None) == (2, True)


def test_a_heartbeat_reaps_dead_daemons_and_lets_go_of_their_rows(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    crashed = dead_daemon(migrated_store)
    migrated_store.save([event_factory()], at(0), holder=crashed)
    registry = DaemonRegistry(migrated_store.engine, command="test")
    registry.register()

    assert registry.reap() == [crashed]

    (row,) = migrated_store.rows()
    assert row["held_by"] is None
    assert [record.id for record in registry.records()] == [registry.daemon_id]


def test_a_row_with_a_push_folds_into_the_twin_with_its_pushed_delivery_counted(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    first, second = live_daemon(migrated_store), live_daemon(migrated_store)
    event = event_factory()
    (held,) = migrated_store.save([event], at(0), holder=first).ids
    pushed = parse_entry({k: v for k, v in event.payload.items() if k != "EventHandle"}, None)
    (absorbed,) = migrated_store.save_answers([Answer([pushed], at(1), pushed=True)])
    assert (absorbed.duplicates, absorbed.row_ids) == (1, (held,))  # held, yet the same event
    # The lease ran out: VOD delivered it again to the other daemon, then refused the confirm.
    (twin,) = migrated_store.save([redelivered(event, "h-2")], at(31), holder=second).ids
    settled = migrated_store.settle(released=[Release(held, at(0))], holder=first)

    assert settled.folded == 1
    (row,) = migrated_store.rows()
    assert (row["id"], row["deliveries"], row["pushed_deliveries"]) == (twin, 3, 1)


@pytest.mark.postgres
def test_a_twin_committed_between_the_reads_of_a_save_is_absorbed_not_numbered_past(
    database_url: str,
) -> None:
    # PostgreSQL reads each statement at its own moment (READ COMMITTED): a pushed copy that
    # commits after the save's first read and before its second must not be seen only by the
    # numbering (the pulled copy would become occurrence 1 beside it) but by the candidates.
    if not database_url.startswith("postgresql"):
        pytest.skip("READ COMMITTED statement snapshots are PostgreSQL's")
    from sqlalchemy import event as sqlalchemy_event

    from vodpoller.migrate import upgrade

    upgrade(database_url)
    pulled = cast("Working", "h1")
    pushed = parse_entry(
        {k: v for k, v in pulled.payload.items() if k != "EventHandle"}, pulled.sub_app_id
    )
    with EventStore.connect(database_url) as store, EventStore.connect(database_url) as other:
        holder = live_daemon(store)  # (and the connection's own set-up queries are behind us)
        injected: list[bool] = []

        def push_between_reads(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if not injected and statement.lstrip().upper().startswith("SELECT"):
                injected.append(True)
                other.save_answers([Answer([pushed], at(0), pushed=True)])

        sqlalchemy_event.listen(store.engine, "after_cursor_execute", push_between_reads)
        try:
            saved = store.save_answers([Answer([pulled], at(1))], holder=holder)
        finally:
            sqlalchemy_event.remove(store.engine, "after_cursor_execute", push_between_reads)
        rows = store.rows()

    assert injected
    assert (saved[0].stored, saved[0].duplicates) == (0, 1)
    assert [(r["deliveries"], r["pushed_deliveries"]) for r in rows] == [(2, 1)]


def _switch_cast(status: str, handle: str | None) -> Event:
    entry: dict[str, Any] = {
        "EventType": "MediaCastStatusChanged",
        "MediaCastStatusChangedEvent": {"CastId": "cast-9", "Status": status},
    }
    if handle is not None:
        entry["EventHandle"] = handle
    return parse_entry(entry, None)


def test_a_cast_pushed_before_a_switch_to_pull_and_working_again_after_it_is_three_rows(
    migrated_store: EventStore,
) -> None:
    # The README's migration: Working pushed, the application switched to reliable callback,
    # then Stopped and Working again pulled ten and twenty minutes later.
    store = migrated_store
    store.save_answers([Answer([_switch_cast("Working", None)], at(0), pushed=True)])
    for minutes, status in ((10, "Stopped"), (20, "Working")):
        saved = store.save([_switch_cast(status, f"h{minutes}")], at(minutes * 60))
        store.settle(saved.ids, at=at(minutes * 60 + 1))

    rows = store.rows()
    statuses = [(r["status"], r["deliveries"], r["pushed_deliveries"]) for r in rows]
    assert statuses == [("Working", 1, 1), ("Stopped", 1, 0), ("Working", 1, 0)]


def test_a_push_long_after_a_pulled_and_confirmed_twin_is_a_new_event(
    migrated_store: EventStore,
) -> None:
    store = migrated_store
    saved = store.save([_switch_cast("Working", "h1"), _switch_cast("Stopped", "h2")], at(0))
    store.settle(saved.ids, at=at(1))
    # An hour later: another event. Within the window: the pushed copy of that event.
    far = store.save_answers([Answer([_switch_cast("Working", None)], at(3600), pushed=True)])
    near = store.save_answers([Answer([_switch_cast("Stopped", None)], at(60), pushed=True)])

    assert (far[0].stored, far[0].duplicates) == (1, 0)
    assert (near[0].stored, near[0].duplicates) == (0, 1)
    rows = [(r["status"], r["deliveries"], r["pushed_deliveries"]) for r in store.rows()]
    assert rows == [("Working", 1, 0), ("Stopped", 2, 1), ("Working", 1, 1)]


def test_a_row_already_forwarded_folds_into_its_twin_as_forwarded(
    migrated_store: EventStore, event_factory: EventFactory
) -> None:
    # The handler got the event under the released row's key: the twin it folds into must not
    # send it again under another.
    first, second = live_daemon(migrated_store), live_daemon(migrated_store)
    event = event_factory()
    (held,) = migrated_store.save([event], at(0), holder=first).ids
    forwarded = at(2)
    with migrated_store.engine.begin() as connection:
        connection.execute(
            update(vod_events).where(vod_events.c.id == held).values(forwarded_at=forwarded)
        )
    (twin,) = migrated_store.save([redelivered(event, "h-2")], at(31), holder=second).ids
    settled = migrated_store.settle(released=[Release(held, at(0))], holder=first)

    assert settled.folded == 1
    (row,) = migrated_store.rows()
    assert (row["id"], row["forwarded_at"]) == (twin, forwarded)
