"""`poller.py`: one drain cycle over the in-process lease queue and a real SQLite file; and how
`source.py` sorts SDK errors into transient, fatal and rejected handles."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import tenacity
from structlog.testing import capture_logs
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from tests.helpers import FakeClock
from vodpoller import migrate
from vodpoller import poller as poller_module
from vodpoller.emulator.queue import LeaseQueue, QueueCounts
from vodpoller.errors import FatalSourceError, SourceError, StorageError, TransientSourceError
from vodpoller.events import Event
from vodpoller.poller import PULL_ATTEMPTS, DrainResult, EventSink, Poller
from vodpoller.source import (
    Batch,
    EventSource,
    HandlesRejectedError,
    LeaseQueueSource,
    is_transient,
    translate,
)
from vodpoller.store import EventStore, Release, SaveResult, SettleResult

LEASE = 30.0
APP = 1400000001


def event_entry(n: int) -> dict[str, Any]:
    """A distinct event per `n` (no handle: the queue gives one on every delivery)."""
    return {
        "EventType": "PullComplete",
        "PullCompleteEvent": {"TaskId": f"1256712345-Pull-{n:04d}", "FileId": f"52858907{n:08d}"},
    }


def event_entries(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [event_entry(n) for n in range(start, start + count)]


def transient(code: str = "ClientNetworkError") -> TransientSourceError:
    return TransientSourceError(f"{code}: try again", code=code)


def rejected() -> HandlesRejectedError:
    return HandlesRejectedError("handles expired", code="InvalidParameterValue")


# A confirm step gets the real confirm and decides what happens on that call.
ConfirmStep = Callable[[Callable[[], None]], None]


def fails_with(make_error: Callable[[], SourceError]) -> ConfirmStep:
    """The call fails before it reaches the service."""

    def step(_real: Callable[[], None]) -> None:
        raise make_error()

    return step


def answer_lost(make_error: Callable[[], SourceError]) -> ConfirmStep:
    """The service applies the confirm but its answer never arrives."""

    def step(real: Callable[[], None]) -> None:
        real()
        raise make_error()

    return step


class ScriptedSource:
    """Wraps a source: scripted failures first, then the real thing; records every call."""

    def __init__(
        self,
        inner: EventSource,
        *,
        pull_errors: Sequence[Callable[[], SourceError]] = (),
        confirm_steps: Sequence[ConfirmStep] = (),
        confirm_always: Callable[[], SourceError] | None = None,
        on_confirm: Callable[[list[str]], None] | None = None,
    ):
        self.inner = inner
        self.pull_errors = list(pull_errors)
        self.confirm_steps = list(confirm_steps)
        self.confirm_always = confirm_always
        self.on_confirm = on_confirm
        self.pulls = 0
        self.pull_threads: set[int] = set()
        self.confirms: list[list[str]] = []
        self._lock = threading.Lock()

    def pull(self, sub_app_id: int | None) -> Batch:
        with self._lock:
            self.pulls += 1
            self.pull_threads.add(threading.get_ident())
            make_error = self.pull_errors.pop(0) if self.pull_errors else None
        if make_error is not None:
            raise make_error()
        return self.inner.pull(sub_app_id)

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        with self._lock:
            self.confirms.append(list(handles))
            step = self.confirm_steps.pop(0) if self.confirm_steps else None
        if self.on_confirm is not None:
            self.on_confirm(list(handles))
        if self.confirm_always is not None:
            raise self.confirm_always()
        if step is None:
            self.inner.confirm(sub_app_id, handles)
        else:
            step(lambda: self.inner.confirm(sub_app_id, handles))


class HookedStore:
    """The real store with hooks: fail or act before/after `save`, fail `settle`."""

    def __init__(
        self,
        inner: EventStore,
        *,
        before_save: Callable[[Sequence[Event]], None] | None = None,
        after_save: Callable[[Sequence[Event]], None] | None = None,
        fail_mark_confirmed: bool = False,
    ):
        self.inner = inner
        self.before_save = before_save
        self.after_save = after_save
        self.fail_mark_confirmed = fail_mark_confirmed
        self.saves = 0

    def save(
        self,
        events: Sequence[Event],
        received_at: datetime | None = None,
        *,
        holder: str | None = None,
    ) -> SaveResult:
        self.saves += 1
        if self.before_save is not None:
            self.before_save(events)
        result = self.inner.save(events, received_at, holder=holder)
        if self.after_save is not None:
            self.after_save(events)
        return result

    def settle(
        self,
        confirmed: Sequence[int] = (),
        released: Sequence[Release] = (),
        *,
        holder: str | None = None,
        at: datetime | None = None,
    ) -> SettleResult:
        if self.fail_mark_confirmed:
            raise StorageError("recording confirms failed: the database went away")
        return self.inner.settle(confirmed, released, holder=holder, at=at)


def storage_down(_events: Sequence[Event]) -> None:
    raise StorageError("storing a batch failed: database is locked")


# -- fixtures --------------------------------------------------------------------------------


@dataclass
class Rig:
    """A lease queue on a fake clock, its in-process source and a migrated SQLite store."""

    clock: FakeClock
    queue: LeaseQueue
    source: LeaseQueueSource
    store: EventStore
    pollers: list[Poller] = field(default_factory=list)

    def poller(
        self,
        source: EventSource | None = None,
        store: EventSink | None = None,
        *,
        concurrency: int = 1,
        confirm_budget_seconds: float = 30.0,
    ) -> Poller:
        """A poller on the rig's source and store unless told otherwise; closed after the test."""
        poller = Poller(
            source or self.source,
            store or self.store,
            concurrency=concurrency,
            confirm_budget_seconds=confirm_budget_seconds,
            holder=f"rig-daemon-{len(self.pollers)}",
        )
        self.pollers.append(poller)
        return poller

    def scripted(self, **script: Any) -> ScriptedSource:
        return ScriptedSource(self.source, **script)

    def hooked(self, **hooks: Any) -> HookedStore:
        return HookedStore(self.store, **hooks)

    def enqueue(self, count: int, app: int | None = None, start: int = 0) -> None:
        self.queue.enqueue(app, event_entries(count, start))

    def counts(self, app: int | None = None) -> QueueCounts:
        return self.queue.counts()[app]

    def confirmed_rows(self) -> list[bool]:
        """Per stored row, in order: has `confirmed_at` been set?"""
        return [row["confirmed_at"] is not None for row in self.store.rows()]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = FakeClock()
    queue = LeaseQueue(lease_seconds=LEASE, clock=clock)
    store = EventStore.connect(f"sqlite:///{tmp_path / 'events.db'}")
    migrate.upgrade(store.engine)
    made = Rig(clock, queue, LeaseQueueSource(queue), store)
    yield made
    for poller in made.pollers:
        poller.close()
    store.dispose()


@pytest.fixture
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The poller's retries without real sleeps; the waits it asked for are recorded. Not for
    tests of the confirm budget, which is measured on the real monotonic clock."""
    asked: list[float] = []

    class InstantRetrying(tenacity.Retrying):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["sleep"] = asked.append
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(poller_module, "Retrying", InstantRetrying)
    return asked


# -- draining --------------------------------------------------------------------------------


def test_a_drain_stores_every_event_once_and_confirms_it(rig: Rig) -> None:
    rig.enqueue(40)

    result = rig.poller().drain(None)

    assert (result.pulled, result.stored, result.duplicates, result.confirmed) == (40, 40, 0, 40)
    assert result.unconfirmed == 0
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=40)
    rows = rig.store.rows()
    assert len(rows) == len({row["dedup_key"] for row in rows}) == 40
    assert {row["task_id"] for row in rows} == {f"1256712345-Pull-{n:04d}" for n in range(40)}
    assert all(row["confirmed_at"] is not None and row["deliveries"] == 1 for row in rows)
    assert all(row["event_handle"] and row["sub_app_id"] is None for row in rows)


def test_the_summary_line_has_the_documented_format(rig: Rig) -> None:
    # Event 3 twice: the second is another event (the first was confirmed), not a redelivery.
    rig.queue.enqueue(None, [*event_entries(20), event_entry(3)])

    summary = rig.poller().drain(None).summary()

    assert summary == "pulled=21 stored=21 duplicates=0 confirmed=21"
    assert re.fullmatch(r"pulled=\d+ stored=\d+ duplicates=\d+ confirmed=\d+", summary)


def test_drain_results_add_up_field_by_field() -> None:
    total = DrainResult(pulled=1, stored=1, confirmed=1, pulls=1)
    total.add(DrainResult(pulled=2, duplicates=2, unconfirmed=2, pulls=2))
    assert total == DrainResult(
        pulled=3, stored=1, duplicates=2, confirmed=1, unconfirmed=2, pulls=3
    )


def test_an_empty_queue_gives_an_empty_result_after_one_pull(rig: Rig) -> None:
    scripted = rig.scripted()
    assert rig.poller(scripted).drain(None) == DrainResult(pulls=1)
    assert scripted.pulls == 1
    assert scripted.confirms == []


def test_a_drain_reads_only_its_own_application(rig: Rig) -> None:
    rig.enqueue(3, app=APP)
    rig.enqueue(2, start=100)

    result = rig.poller().drain(APP)

    assert result.confirmed == 3
    assert {row["sub_app_id"] for row in rig.store.rows()} == {APP}
    assert rig.counts(None) == QueueCounts(queued=2, leased=0, confirmed=0)


def test_two_identical_entries_of_one_answer_are_two_events(rig: Rig) -> None:
    rig.queue.enqueue(None, [event_entry(7), event_entry(7)])

    result = rig.poller().drain(None)

    assert (result.pulled, result.stored, result.duplicates, result.confirmed) == (2, 2, 0, 2)
    assert [row["deliveries"] for row in rig.store.rows()] == [1, 1]
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=2)


def test_identical_content_after_a_confirmed_event_is_a_new_event(rig: Rig) -> None:
    poller = rig.poller()
    cast = {"EventType": "MediaCastStatusChanged", "MediaCastStatusChangedEvent": {"CastId": "c"}}
    statuses = ["Working", "Stopped", "Working"]
    for status in statuses:
        rig.queue.enqueue(
            None, [{**cast, "MediaCastStatusChangedEvent": {"CastId": "c", "Status": status}}]
        )
        poller.drain(None)

    rows = rig.store.rows()
    assert [row["status"] for row in rows] == statuses
    assert [row["deliveries"] for row in rows] == [1, 1, 1]
    assert [row["occurrence"] for row in rows] == [0, 0, 1]
    assert all(row["confirmed_at"] is not None and row["held_by"] is None for row in rows)


def test_an_event_whose_confirm_was_refused_comes_back_into_its_row(rig: Rig) -> None:
    poller = rig.poller()
    rig.queue.enqueue(None, [event_entry(7)])
    refused = rig.scripted(confirm_steps=[fails_with(rejected)])

    first = rig.poller(refused).drain(None)
    rig.clock.advance(LEASE + 1)  # the lease runs out: VOD delivers it again
    second = poller.drain(None)

    assert (first.stored, first.confirmed) == (1, 0)
    assert (second.stored, second.duplicates, second.confirmed) == (0, 1, 1)
    (row,) = rig.store.rows()
    assert (row["deliveries"], row["held_by"]) == (2, None)
    assert row["confirmed_at"] is not None


# -- never confirm what is not stored --------------------------------------------------------


def test_a_failing_store_confirms_nothing_and_the_events_come_back_after_the_lease(
    rig: Rig,
) -> None:
    rig.enqueue(40)
    scripted = rig.scripted()

    with pytest.raises(StorageError, match="database is locked"):
        rig.poller(scripted, rig.hooked(before_save=storage_down)).drain(None)

    assert scripted.confirms == []
    assert rig.counts() == QueueCounts(queued=24, leased=16, confirmed=0)
    assert rig.store.rows() == []

    rig.clock.advance(LEASE + 1)
    result = rig.poller().drain(None)

    assert (result.pulled, result.stored, result.confirmed) == (40, 40, 40)
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=40)
    assert rig.queue.redelivered == 16
    assert all(rig.confirmed_rows())


def test_a_failing_store_with_concurrent_workers_confirms_nothing(rig: Rig) -> None:
    rig.enqueue(100)
    scripted = rig.scripted()
    poller = rig.poller(scripted, rig.hooked(before_save=storage_down), concurrency=4)

    with pytest.raises(StorageError):
        poller.drain(None)

    assert scripted.confirms == []
    assert rig.counts().confirmed == 0


def test_confirm_is_called_only_after_the_batch_is_committed(rig: Rig) -> None:
    journal: list[tuple[str, frozenset[str]]] = []

    def saved(events: Sequence[Event]) -> None:
        journal.append(("saved", frozenset(event.event_handle for event in events)))

    def confirming(handles: list[str]) -> None:
        # Read through another pooled connection: only committed rows are visible there.
        stored = {row["event_handle"] for row in rig.store.rows()}
        journal.append(("confirm", frozenset(handles)))
        assert set(handles) <= stored

    rig.enqueue(20)
    scripted = rig.scripted(on_confirm=confirming)

    result = rig.poller(scripted, rig.hooked(after_save=saved)).drain(None)

    assert result.confirmed == 20
    assert [kind for kind, _ in journal] == ["saved", "confirm", "saved", "confirm"]
    assert journal[0][1] == journal[1][1]
    assert journal[2][1] == journal[3][1]
    assert len(journal[0][1]) == 16


# -- confirm retries and its budget ----------------------------------------------------------


@pytest.mark.usefixtures("instant_retries")
@pytest.mark.parametrize("code", ["RequestLimitExceeded", "InternalError", "ClientNetworkError"])
def test_a_transient_confirm_error_is_retried_and_then_succeeds(code: str, rig: Rig) -> None:
    rig.enqueue(5)
    scripted = rig.scripted(confirm_steps=[fails_with(lambda: transient(code))])

    result = rig.poller(scripted).drain(None)

    assert (result.confirmed, result.unconfirmed) == (5, 0)
    assert len(scripted.confirms) == 2
    assert scripted.confirms[0] == scripted.confirms[1]
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=5)
    assert all(rig.confirmed_rows())


def test_a_confirm_retry_waits_a_little_first(rig: Rig, instant_retries: list[float]) -> None:
    rig.enqueue(1)
    scripted = rig.scripted(confirm_steps=[fails_with(transient)])

    rig.poller(scripted).drain(None)

    (wait,) = instant_retries
    assert 0 < wait <= 2.0


def test_a_confirm_that_keeps_failing_is_given_up_when_the_budget_is_spent(rig: Rig) -> None:
    rig.enqueue(5)
    scripted = rig.scripted(confirm_always=lambda: transient("InternalError"))
    budget = 0.3

    started = time.monotonic()
    with capture_logs() as captured:
        result = rig.poller(scripted, confirm_budget_seconds=budget).drain(None)
    elapsed = time.monotonic() - started

    assert elapsed < budget + 0.5
    assert (result.pulled, result.stored, result.confirmed, result.unconfirmed) == (5, 5, 0, 5)
    assert len(scripted.confirms) >= 1
    assert rig.counts() == QueueCounts(queued=0, leased=5, confirmed=0)
    assert rig.confirmed_rows() == [False] * 5
    (warning,) = [line for line in captured if line["log_level"] == "warning"]
    assert "budget" in warning["event"]
    assert warning["handles"] == 5

    # The lease runs out; the events come back with new handles and dedupe.
    rig.clock.advance(LEASE + 1)
    again = rig.poller().drain(None)

    assert (again.pulled, again.stored, again.duplicates, again.confirmed) == (5, 0, 5, 5)
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=5)
    rows = rig.store.rows()
    assert [row["deliveries"] for row in rows] == [2] * 5
    assert all(row["confirmed_at"] is not None for row in rows)


def test_a_budget_already_spent_still_tries_the_confirm_once(rig: Rig) -> None:
    rig.enqueue(2)

    def slow(_events: Sequence[Event]) -> None:
        time.sleep(0.05)

    scripted = rig.scripted(confirm_always=lambda: transient("InternalError"))
    poller = rig.poller(scripted, rig.hooked(before_save=slow), confirm_budget_seconds=0.01)

    result = poller.drain(None)

    assert len(scripted.confirms) == 1
    assert (result.confirmed, result.unconfirmed) == (0, 2)


def test_handles_expired_before_the_confirm_are_not_an_error_and_the_events_dedupe(
    rig: Rig,
) -> None:
    rig.enqueue(3)
    stalls = [LEASE + 1]

    def stall_once(_events: Sequence[Event]) -> None:
        # The first save takes longer than the lease, on the queue's clock.
        if stalls:
            rig.clock.advance(stalls.pop())

    scripted = rig.scripted()
    with capture_logs() as captured:
        result = rig.poller(scripted, rig.hooked(before_save=stall_once)).drain(None)

    # First delivery: the confirm is refused. Second delivery, same drain: dedupe and confirm.
    assert (result.pulled, result.stored, result.duplicates) == (6, 3, 3)
    assert (result.confirmed, result.unconfirmed) == (3, 3)
    assert len(scripted.confirms) == 2
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=3)
    assert [row["deliveries"] for row in rig.store.rows()] == [2, 2, 2]
    assert any("expired" in line["event"] for line in captured)


def test_handles_rejected_on_the_first_attempt_are_left_unconfirmed_without_an_error(
    rig: Rig,
) -> None:
    rig.enqueue(4)
    scripted = rig.scripted(confirm_steps=[fails_with(rejected)])

    result = rig.poller(scripted).drain(None)

    assert (result.stored, result.confirmed, result.unconfirmed) == (4, 0, 4)
    assert len(scripted.confirms) == 1
    assert rig.confirmed_rows() == [False] * 4


@pytest.mark.usefixtures("instant_retries")
def test_a_lost_confirm_answer_then_rejected_handles_count_as_confirmed(rig: Rig) -> None:
    rig.enqueue(4)
    # The service applies the confirm and the answer is lost; the retry finds the handles used.
    scripted = rig.scripted(confirm_steps=[answer_lost(lambda: transient("ClientNetworkError"))])

    result = rig.poller(scripted).drain(None)

    assert (result.confirmed, result.unconfirmed) == (4, 0)
    assert len(scripted.confirms) == 2
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=4)
    assert all(rig.confirmed_rows())


@pytest.mark.usefixtures("instant_retries")
@pytest.mark.parametrize(
    ("code", "confirmed"),
    [
        ("ClientNetworkError", True),
        ("ServerNetworkError", True),
        ("InternalError", False),
        ("RequestLimitExceeded", False),
        ("RequestLimitExceeded.UinLimitExceeded", False),
    ],
)
def test_rejected_handles_after_a_transient_failure_count_as_confirmed_only_if_it_was_ambiguous(
    code: str, confirmed: bool, rig: Rig
) -> None:
    # A network error or a gateway's 502 may have gone through; an answer from the service
    # itself (throttled, InternalError) says it did nothing.
    rig.enqueue(2)
    scripted = rig.scripted(
        confirm_steps=[fails_with(lambda: transient(code)), fails_with(rejected)]
    )

    result = rig.poller(scripted).drain(None)

    assert result.confirmed == (2 if confirmed else 0)
    assert rig.confirmed_rows() == [confirmed] * 2


def test_a_fatal_confirm_error_stops_the_drain_with_the_batch_stored_but_unconfirmed(
    rig: Rig,
) -> None:
    rig.enqueue(3)
    denied = FatalSourceError("no permission", code="UnauthorizedOperation")
    scripted = rig.scripted(confirm_steps=[fails_with(lambda: denied)])

    with pytest.raises(FatalSourceError) as caught:
        rig.poller(scripted).drain(None)

    assert caught.value is denied
    assert len(rig.store.rows()) == 3
    assert rig.counts().leased == 3


def test_a_failure_to_record_confirmed_at_is_logged_and_the_drain_goes_on(rig: Rig) -> None:
    rig.enqueue(3)

    with capture_logs() as captured:
        result = rig.poller(store=rig.hooked(fail_mark_confirmed=True)).drain(None)

    assert result.confirmed == 3
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=3)
    assert rig.confirmed_rows() == [False] * 3
    assert any(line["log_level"] == "warning" for line in captured)


def test_confirmed_at_that_could_not_be_recorded_is_recorded_with_a_later_batch(
    rig: Rig,
) -> None:
    store = rig.hooked(fail_mark_confirmed=True)
    poller = rig.poller(store=store)
    rig.enqueue(3)
    poller.drain(None)
    assert rig.confirmed_rows() == [False] * 3

    store.fail_mark_confirmed = False
    rig.enqueue(2, start=3)
    poller.drain(None)

    assert rig.confirmed_rows() == [True] * 5


# -- concurrency and stopping ----------------------------------------------------------------


def test_four_workers_store_and_confirm_two_hundred_events_exactly_once(rig: Rig) -> None:
    rig.enqueue(200)
    scripted = rig.scripted()

    result = rig.poller(scripted, concurrency=4).drain(None)

    assert (result.pulled, result.stored, result.duplicates) == (200, 200, 0)
    assert (result.confirmed, result.unconfirmed) == (200, 0)
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=200)
    rows = rig.store.rows()
    assert len({row["dedup_key"] for row in rows}) == len(rows) == 200
    assert all(row["deliveries"] == 1 and row["confirmed_at"] is not None for row in rows)
    # A full answer brings in a helper: pulls came from more than one thread.
    assert len(scripted.pull_threads) > 1


def test_a_stop_request_before_the_drain_means_no_pull(rig: Rig) -> None:
    rig.enqueue(5)
    scripted = rig.scripted()
    poller = rig.poller(scripted)
    poller.stopping.set()

    assert poller.drain(None) == DrainResult()
    assert scripted.pulls == 0
    assert rig.counts() == QueueCounts(queued=5, leased=0, confirmed=0)


def test_a_stop_request_during_a_batch_finishes_it_and_pulls_no_more(rig: Rig) -> None:
    rig.enqueue(40)
    scripted = rig.scripted()
    stop = threading.Event()

    def stop_now(_events: Sequence[Event]) -> None:
        stop.set()

    poller = Poller(scripted, rig.hooked(before_save=stop_now), concurrency=1, stop=stop)

    result = poller.drain(None)

    assert poller.stopping is stop
    assert (result.pulled, result.stored, result.confirmed) == (16, 16, 16)
    assert scripted.pulls == 1
    assert rig.counts() == QueueCounts(queued=24, leased=0, confirmed=16)


# -- pull errors -----------------------------------------------------------------------------


def test_a_fatal_pull_error_propagates_without_a_retry(rig: Rig) -> None:
    auth = FatalSourceError("signature mismatch", code="AuthFailure.SignatureFailure")
    scripted = rig.scripted(pull_errors=[lambda: auth])

    with pytest.raises(FatalSourceError) as caught:
        rig.poller(scripted).drain(None)

    assert caught.value is auth
    assert scripted.pulls == 1


def test_transient_pull_errors_are_retried_until_the_pull_works(
    rig: Rig, instant_retries: list[float]
) -> None:
    rig.enqueue(3)
    scripted = rig.scripted(
        pull_errors=[lambda: transient("ClientNetworkError"), lambda: transient("InternalError")]
    )

    result = rig.poller(scripted).drain(None)

    assert (result.stored, result.confirmed) == (3, 3)
    assert scripted.pulls == 4  # two failures, the batch, the empty pull
    assert len(instant_retries) == 2
    assert all(0 < wait <= 6 for wait in instant_retries)


@pytest.mark.usefixtures("instant_retries")
def test_a_pull_that_keeps_failing_transiently_gives_up_after_the_attempt_limit(
    rig: Rig,
) -> None:
    scripted = rig.scripted(pull_errors=[transient] * (PULL_ATTEMPTS + 3))

    with pytest.raises(TransientSourceError):
        rig.poller(scripted).drain(None)

    assert scripted.pulls == PULL_ATTEMPTS


# -- found by review: poison values, secrets in objects, token pairing ----------------------


def test_an_event_with_a_lone_surrogate_is_stored_and_confirmed(rig: Rig) -> None:
    rig.queue.enqueue(None, [event_entry(1), {**event_entry(2), "Note": "cut emoji \ud83d"}])

    result = rig.poller().drain(None)

    assert (result.stored, result.confirmed) == (2, 2)


def test_an_event_with_a_huge_err_code_is_stored_and_confirmed(rig: Rig) -> None:
    huge = {"EventType": "PullComplete", "PullCompleteEvent": {"ErrCode": "1" * 25}}
    rig.queue.enqueue(None, [event_entry(1), huge])

    result = rig.poller().drain(None)

    assert (result.stored, result.confirmed) == (2, 2)


# -- translating SDK errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "ClientNetworkError",
        "ServerNetworkError",
        "InternalError",
        "InternalError.DbError",
        "RequestLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "ResourceUnavailable",
    ],
)
@pytest.mark.parametrize("action", ["PullEvents", "ConfirmEvents"])
def test_network_throttling_and_server_errors_are_transient(code: str, action: str) -> None:
    error = translate(TencentCloudSDKException(code, "boom", "req-1"), action)
    assert type(error) is TransientSourceError
    assert is_transient(code)


@pytest.mark.parametrize(
    "code",
    [
        "AuthFailure.SignatureFailure",
        "AuthFailure.SecretIdNotFound",
        "AuthFailure.SignatureExpire",
        "InvalidParameter",
        "UnauthorizedOperation",
        "FailedOperation.InvalidVodUser",
        "InvalidAction",
    ],
)
@pytest.mark.parametrize("action", ["PullEvents", "ConfirmEvents"])
def test_credential_permission_and_parameter_errors_are_fatal(code: str, action: str) -> None:
    error = translate(TencentCloudSDKException(code, "no", "req-1"), action)
    assert type(error) is FatalSourceError
    assert not is_transient(code)


def test_invalid_parameter_value_on_confirm_means_rejected_handles() -> None:
    error = translate(
        TencentCloudSDKException("InvalidParameterValue", "EventHandle expired", "req-2"),
        "ConfirmEvents",
    )
    assert type(error) is HandlesRejectedError
    assert isinstance(error, FatalSourceError)


def test_invalid_parameter_value_on_pull_is_fatal_not_rejected_handles() -> None:
    error = translate(TencentCloudSDKException("InvalidParameterValue", "x", None), "PullEvents")
    assert type(error) is FatalSourceError


def test_translation_keeps_the_code_the_request_id_and_the_message() -> None:
    error = translate(
        TencentCloudSDKException("InternalError", "try later", "9f1c-req"), "PullEvents"
    )
    assert (error.code, error.request_id) == ("InternalError", "9f1c-req")
    assert str(error) == "PullEvents failed: InternalError: try later (RequestId 9f1c-req)"


def test_a_bytes_message_is_decoded() -> None:
    error = translate(
        TencentCloudSDKException("ClientNetworkError", "连接超时".encode(), None), "PullEvents"
    )
    assert str(error) == "PullEvents failed: ClientNetworkError: 连接超时"


def test_an_undecodable_bytes_message_does_not_break_the_translation() -> None:
    error = translate(TencentCloudSDKException("InternalError", b"\xff\xfe oops", None), "X")
    assert "oops" in str(error)
    assert "b'" not in str(error)


def test_an_answer_of_more_than_sixteen_events_is_confirmed_sixteen_at_a_time(
    rig: Rig,
) -> None:
    # PullEvents promises at most 16; a service that sends more is still confirmed correctly.
    rig.enqueue(40)
    scripted = ScriptedSource(LeaseQueueSource(rig.queue, max_events=40))

    result = rig.poller(scripted).drain(None)

    assert [len(handles) for handles in scripted.confirms] == [16, 16, 8]
    assert (result.pulled, result.confirmed, result.unconfirmed) == (40, 40, 0)
    assert rig.confirmed_rows() == [True] * 40


def test_confirmed_at_waiting_for_the_database_is_recorded_by_the_next_drain_even_when_idle(
    rig: Rig,
) -> None:
    store = rig.hooked(fail_mark_confirmed=True)
    poller = rig.poller(store=store)
    rig.enqueue(3)
    poller.drain(None)

    store.fail_mark_confirmed = False
    poller.drain(None)  # nothing to pull

    assert rig.confirmed_rows() == [True] * 3


@pytest.mark.usefixtures("instant_retries")
def test_a_confirm_that_never_connected_does_not_make_a_rejection_count_as_confirmed(
    rig: Rig,
) -> None:
    refused = TransientSourceError(
        "ConfirmEvents failed: ClientNetworkError: ... NewConnectionError ...",
        code="ClientNetworkError",
        never_sent=True,
    )
    rig.enqueue(2)
    scripted = rig.scripted(confirm_steps=[fails_with(lambda: refused), fails_with(rejected)])

    result = rig.poller(scripted).drain(None)

    assert (result.confirmed, result.unconfirmed) == (0, 2)
    assert rig.confirmed_rows() == [False] * 2


def test_chunks_confirmed_before_a_later_chunk_fails_are_marked(rig: Rig) -> None:
    rig.enqueue(20)
    denied = FatalSourceError("no permission", code="UnauthorizedOperation")
    scripted = ScriptedSource(
        LeaseQueueSource(rig.queue, max_events=20),
        confirm_steps=[lambda confirm: confirm(), fails_with(lambda: denied)],
    )

    with pytest.raises(FatalSourceError):
        rig.poller(scripted).drain(None)

    assert rig.confirmed_rows().count(True) == 16


@pytest.mark.parametrize(
    ("message", "never_sent"),
    [
        ("HTTPConnectionPool(...): Max retries exceeded (Caused by NewConnectionError(...))", True),
        ("HTTPConnectionPool(...): (Caused by ConnectTimeoutError(...))", True),
        ("HTTPConnectionPool(...): Read timed out. (read timeout=10)", False),
        ("('Connection aborted.', RemoteDisconnected('Remote end closed connection'))", False),
    ],
)
def test_a_network_error_says_whether_the_request_can_have_reached_the_service(
    message: str, never_sent: bool
) -> None:
    error = translate(TencentCloudSDKException("ClientNetworkError", message), "ConfirmEvents")

    assert isinstance(error, TransientSourceError)
    assert error.never_sent is never_sent
