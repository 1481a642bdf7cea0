"""`poller.py`: a drain over the in-process lease queue into a real SQLite file, pipelined:
the store worker and the confirmer behind the pullers. Confirm rules in detail are in
test_confirmer.py, the store worker's in test_storer.py."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FakeClock
from vodpoller import migrate
from vodpoller import poller as poller_module
from vodpoller.emulator.queue import LeaseQueue, QueueCounts
from vodpoller.errors import FatalSourceError, SourceError, StorageError, TransientSourceError
from vodpoller.poller import PULL_ATTEMPTS, DrainResult, Poller, Rates
from vodpoller.source import Batch, EventSource, HandlesRejectedError, LeaseQueueSource
from vodpoller.store import Answer, EventStore, Release, SaveResult, SettleResult

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


class ScriptedSource:
    """Wraps a source: scripted pull failures first, then the real thing; records calls;
    `on_confirm` runs before each confirm, `confirm_error` makes every confirm fail."""

    def __init__(
        self,
        inner: EventSource,
        *,
        pull_errors: Sequence[Callable[[], SourceError]] = (),
        confirm_error: Callable[[], SourceError] | None = None,
        on_confirm: Callable[[list[str]], None] | None = None,
        on_pull: Callable[[], None] | None = None,
    ):
        self.inner = inner
        self.pull_errors = list(pull_errors)
        self.confirm_error = confirm_error
        self.on_confirm = on_confirm
        self.on_pull = on_pull
        self.pulls = 0
        self.pulling = 0
        self.most_pulling = 0
        self.pull_threads: set[int] = set()
        self.confirms: list[list[str]] = []
        self._lock = threading.Lock()

    def pull(self, sub_app_id: int | None) -> Batch:
        with self._lock:
            self.pulls += 1
            self.pulling += 1
            self.most_pulling = max(self.most_pulling, self.pulling)
            self.pull_threads.add(threading.get_ident())
            make_error = self.pull_errors.pop(0) if self.pull_errors else None
        try:
            if self.on_pull is not None:
                self.on_pull()
            if make_error is not None:
                raise make_error()
            return self.inner.pull(sub_app_id)
        finally:
            with self._lock:
                self.pulling -= 1

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        with self._lock:
            self.confirms.append(list(handles))
        if self.on_confirm is not None:
            self.on_confirm(list(handles))
        if self.confirm_error is not None:
            raise self.confirm_error()
        self.inner.confirm(sub_app_id, handles)


class HookedStore:
    """The real store with hooks: fail every write, or act before one."""

    def __init__(self, inner: EventStore, *, fail: bool = False):
        self.inner = inner
        self.fail = fail
        self.before_write: Callable[[Sequence[Answer]], None] | None = None
        self.writes = 0

    def write(
        self,
        answers: Sequence[Answer],
        confirmed: Sequence[int],
        released: Sequence[Release],
        *,
        holder: str | None,
    ) -> tuple[list[SaveResult], SettleResult]:
        self.writes += 1
        if self.before_write is not None:
            self.before_write(answers)
        if self.fail and any(answer.events for answer in answers):
            raise StorageError("storing a batch failed: database is locked")
        return self.inner.write(answers, confirmed, released, holder=holder)


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
        store: Any = None,
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
            rates=Rates.per_second(10_000.0),
        )
        self.pollers.append(poller)
        return poller

    def scripted(self, **script: Any) -> ScriptedSource:
        return ScriptedSource(self.source, **script)

    def enqueue(self, count: int, app: int | None = None, start: int = 0) -> None:
        self.queue.enqueue(app, event_entries(count, start))

    def counts(self, app: int | None = None) -> QueueCounts:
        return self.queue.counts()[app]

    def rows(self) -> list[dict[str, Any]]:
        """The rows once every poller recorded the outcomes of its confirms."""
        for poller in self.pollers:
            assert poller.storer.flush()
        return self.store.rows()


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
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pull retries without real pauses."""
    monkeypatch.setattr(poller_module, "PULL_RETRY_FIRST_SECONDS", 0.0)


# -- draining --------------------------------------------------------------------------------


def test_a_drain_stores_every_event_once_and_confirms_it(rig: Rig) -> None:
    rig.enqueue(40)

    result = rig.poller().drain(None)

    assert (result.pulled, result.stored, result.duplicates, result.confirmed) == (40, 40, 0, 40)
    assert (result.unconfirmed, result.pulls) == (0, 4)  # 16 + 16 + 8, then an empty pull
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=40)
    rows = rig.rows()
    assert {row["task_id"] for row in rows} == {f"1256712345-Pull-{n:04d}" for n in range(40)}
    assert all(row["confirmed_at"] is not None and row["deliveries"] == 1 for row in rows)
    assert all(row["held_by"] is None and row["sub_app_id"] is None for row in rows)


def test_the_summary_line_has_the_documented_format(rig: Rig) -> None:
    rig.queue.enqueue(None, [*event_entries(20), event_entry(3)])

    summary = rig.poller().drain(None).summary()

    # Event 3 twice: the second is another event (the first was confirmed), not a redelivery.
    assert summary == "pulled=21 stored=21 duplicates=0 confirmed=21"
    assert re.fullmatch(r"pulled=\d+ stored=\d+ duplicates=\d+ confirmed=\d+", summary)


def test_drain_results_add_up_field_by_field() -> None:
    total = DrainResult(1, 2, 3, 4, 5, 6)
    total.add(DrainResult(10, 20, 30, 40, 50, 60))
    assert total == DrainResult(11, 22, 33, 44, 55, 66)


def test_an_empty_queue_gives_an_empty_result_after_one_pull(rig: Rig) -> None:
    scripted = rig.scripted()
    result = rig.poller(scripted, concurrency=8).drain(None)
    assert result == DrainResult(pulls=1)
    assert scripted.pulls == 1


def test_a_drain_reads_only_its_own_application(rig: Rig) -> None:
    rig.enqueue(3, app=APP)
    rig.enqueue(2)

    result = rig.poller().drain(APP)

    assert result.stored == 3
    assert {row["sub_app_id"] for row in rig.rows()} == {APP}
    assert rig.counts(None).queued == 2


# -- identity through a drain ------------------------------------------------------------------


def test_two_identical_entries_of_one_answer_are_two_events(rig: Rig) -> None:
    rig.queue.enqueue(None, [event_entry(7), event_entry(7)])

    result = rig.poller().drain(None)

    assert (result.pulled, result.stored, result.duplicates, result.confirmed) == (2, 2, 0, 2)
    assert [row["deliveries"] for row in rig.rows()] == [1, 1]


def test_identical_content_after_a_confirmed_event_is_a_new_event(rig: Rig) -> None:
    poller = rig.poller()
    statuses = ["Working", "Stopped", "Working"]
    for status in statuses:
        payload = {"CastId": "c", "Status": status}
        rig.queue.enqueue(
            None, [{"EventType": "MediaCastStatusChanged", "MediaCastStatusChangedEvent": payload}]
        )
        poller.drain(None)

    rows = rig.rows()
    assert [row["status"] for row in rows] == statuses
    assert [row["occurrence"] for row in rows] == [0, 0, 1]
    assert all(row["confirmed_at"] is not None and row["held_by"] is None for row in rows)


def test_an_event_whose_confirm_was_refused_comes_back_into_its_row(rig: Rig) -> None:
    rig.queue.enqueue(None, [event_entry(7)])
    refusing = rig.scripted(
        confirm_error=lambda: HandlesRejectedError("expired", code="InvalidParameterValue")
    )

    first = rig.poller(refusing).drain(None)
    rig.clock.advance(LEASE + 1)  # the lease runs out: VOD delivers it again
    second = rig.poller().drain(None)

    assert (first.stored, first.confirmed, first.unconfirmed) == (1, 0, 1)
    assert (second.stored, second.duplicates, second.confirmed) == (0, 1, 1)
    (row,) = rig.rows()
    assert (row["deliveries"], row["held_by"]) == (2, None)
    assert row["confirmed_at"] is not None


# -- never confirm what is not stored --------------------------------------------------------


def test_a_failing_store_confirms_nothing_and_the_events_come_back_after_the_lease(
    rig: Rig,
) -> None:
    rig.enqueue(40)
    scripted = rig.scripted()

    with pytest.raises(StorageError, match="database is locked"):
        rig.poller(scripted, HookedStore(rig.store, fail=True)).drain(None)

    assert scripted.confirms == []
    assert rig.rows() == []
    assert rig.counts().confirmed == 0
    rig.clock.advance(LEASE + 1)
    assert rig.poller().drain(None).stored == 40
    assert rig.counts() == QueueCounts(queued=0, leased=0, confirmed=40)


def test_a_failing_store_with_many_pullers_confirms_nothing(rig: Rig) -> None:
    rig.enqueue(200)
    scripted = rig.scripted()

    with pytest.raises(StorageError):
        rig.poller(scripted, HookedStore(rig.store, fail=True), concurrency=4).drain(None)

    assert scripted.confirms == []
    assert rig.counts().confirmed == 0


def test_every_confirmed_handle_belongs_to_a_committed_row(rig: Rig) -> None:
    rig.enqueue(100)
    unstored: list[str] = []

    def check(handles: list[str]) -> None:
        stored = {row["event_handle"] for row in rig.store.rows()}
        unstored.extend(handle for handle in handles if handle not in stored)

    result = rig.poller(rig.scripted(on_confirm=check), concurrency=4).drain(None)

    assert result.confirmed == 100
    assert unstored == []


# -- pipelining and pullers ------------------------------------------------------------------


def test_the_next_pull_goes_out_while_the_last_batch_is_being_confirmed(rig: Rig) -> None:
    rig.enqueue(48)
    second_pull = threading.Event()
    scripted: ScriptedSource

    def wait_for_the_next_pull(_handles: list[str]) -> None:
        # The first confirm holds until another pull went out: without pipelining it never does.
        assert second_pull.wait(5), "no pull while the first batch was being confirmed"

    def count_pulls() -> None:
        if scripted.pulls >= 2:
            second_pull.set()

    scripted = rig.scripted(on_confirm=wait_for_the_next_pull, on_pull=count_pulls)

    result = rig.poller(scripted).drain(None)

    assert result.confirmed == 48


def test_full_answers_bring_more_pullers_up_to_the_concurrency(rig: Rig) -> None:
    rig.enqueue(800)
    scripted = rig.scripted(on_pull=lambda: time.sleep(0.02))  # a network's worth of wait

    result = rig.poller(scripted, concurrency=3).drain(None)

    assert result.stored == 800
    assert scripted.most_pulling == 3  # as many as allowed, never more
    assert len(scripted.pull_threads) == 3


def test_idle_is_one_pull_at_a_time(rig: Rig) -> None:
    scripted = rig.scripted()
    poller = rig.poller(scripted, concurrency=16)
    for _ in range(5):
        poller.drain(None)
    assert (scripted.pulls, scripted.most_pulling) == (5, 1)


def test_a_short_answer_sends_extra_pullers_home(rig: Rig) -> None:
    rig.enqueue(16 * 30 + 5)
    scripted = rig.scripted()

    result = rig.poller(scripted, concurrency=6).drain(None)

    assert result.stored == 16 * 30 + 5
    # Past the backlog's end each of the 6 pullers pulls at most once more (a short or an
    # empty answer sends it home), and the last one ends on an empty pull.
    assert result.pulls - 30 <= 6 + 1
    assert scripted.pulls == result.pulls


def test_a_stop_request_before_the_drain_means_no_pull(rig: Rig) -> None:
    rig.enqueue(5)
    scripted = rig.scripted()
    poller = rig.poller(scripted)
    poller.stopping.set()

    assert poller.drain(None) == DrainResult()
    assert scripted.pulls == 0


def test_a_stop_request_during_a_pull_stores_and_confirms_its_batch_and_pulls_no_more(
    rig: Rig,
) -> None:
    rig.enqueue(40)
    poller: Poller

    def stop() -> None:
        poller.stopping.set()

    scripted = rig.scripted(on_pull=stop)
    poller = rig.poller(scripted)
    result = poller.drain(None)

    assert (result.stored, result.confirmed, scripted.pulls) == (16, 16, 1)
    assert rig.counts() == QueueCounts(queued=24, leased=0, confirmed=16)


# -- pull errors -----------------------------------------------------------------------------


def test_a_fatal_pull_error_propagates_without_a_retry(rig: Rig) -> None:
    denied = FatalSourceError("denied", code="AuthFailure.SignatureFailure")
    scripted = rig.scripted(pull_errors=[lambda: denied])

    with pytest.raises(FatalSourceError) as caught:
        rig.poller(scripted).drain(None)

    assert caught.value is denied
    assert scripted.pulls == 1


@pytest.mark.usefixtures("instant_retries")
def test_transient_pull_errors_are_retried_until_the_pull_works(rig: Rig) -> None:
    rig.enqueue(3)
    scripted = rig.scripted(pull_errors=[transient, transient, transient])

    result = rig.poller(scripted).drain(None)

    assert result.stored == 3
    assert scripted.pulls == 5  # three failures, the batch, the empty pull


@pytest.mark.usefixtures("instant_retries")
def test_a_pull_that_keeps_failing_transiently_gives_up_after_the_attempt_limit(
    rig: Rig,
) -> None:
    scripted = rig.scripted(pull_errors=[transient] * 100)

    with pytest.raises(TransientSourceError):
        rig.poller(scripted).drain(None)

    assert scripted.pulls == PULL_ATTEMPTS


@pytest.mark.usefixtures("instant_retries")
def test_a_throttled_pull_cuts_the_pull_rate(rig: Rig) -> None:
    rig.enqueue(3)
    scripted = rig.scripted(pull_errors=[lambda: transient("RequestLimitExceeded")])
    poller = rig.poller(scripted)

    assert poller.drain(None).stored == 3
    assert poller.rates.pull.throttles == 1
    assert poller.rates.pull.rate < 10_000.0


def test_a_fatal_confirm_error_ends_the_drain_with_the_batch_stored_and_let_go(rig: Rig) -> None:
    rig.enqueue(3)
    denied = FatalSourceError("denied", code="UnauthorizedOperation")
    poller = rig.poller(rig.scripted(confirm_error=lambda: denied))

    with pytest.raises(FatalSourceError):
        poller.drain(None)
    poller.close()

    rows = rig.rows()
    assert len(rows) == 3
    assert all(row["confirmed_at"] is None and row["held_by"] is None for row in rows)


# -- odd values and answers ------------------------------------------------------------------


def test_an_event_with_a_lone_surrogate_is_stored_and_confirmed(rig: Rig) -> None:
    rig.queue.enqueue(None, [{"EventType": "X", "X": {"TaskId": "cut \ud83d"}}])
    assert rig.poller().drain(None).confirmed == 1
    assert rig.rows()[0]["task_id"] == "cut \ufffd"


def test_an_event_with_a_huge_err_code_is_stored_and_confirmed(rig: Rig) -> None:
    rig.queue.enqueue(None, [{"EventType": "X", "X": {"TaskId": "t", "ErrCode": 2**70}}])
    assert rig.poller().drain(None).confirmed == 1
    assert rig.rows()[0]["err_code"] is None


def test_an_answer_of_more_than_sixteen_events_is_confirmed_sixteen_at_a_time(
    rig: Rig,
) -> None:
    # PullEvents promises at most 16; a service that sends more is still confirmed correctly.
    rig.enqueue(40)
    scripted = ScriptedSource(LeaseQueueSource(rig.queue, max_events=40))

    result = rig.poller(scripted).drain(None)

    assert result.confirmed == 40
    assert sorted(len(handles) for handles in scripted.confirms) == [8, 16, 16]


def test_close_waits_for_confirms_in_flight(rig: Rig) -> None:
    rig.enqueue(5)
    release = threading.Event()
    poller = rig.poller(rig.scripted(on_confirm=lambda _: release.wait(5)))
    drain = threading.Thread(target=poller.drain, args=(None,))
    drain.start()
    time.sleep(0.3)
    threading.Timer(0.3, release.set).start()

    poller.close()
    drain.join(5)

    assert rig.counts().confirmed == 5
    assert all(row["confirmed_at"] is not None for row in rig.rows())
