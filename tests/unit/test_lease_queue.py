"""`LeaseQueue` on a fake clock: leases, redelivery, confirmation, and a model-based test."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.helpers import FakeClock
from vodpoller.emulator import wire
from vodpoller.emulator.queue import AppId, LeaseQueue, QueueCounts

LEASE = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> LeaseQueue:
    return LeaseQueue(LEASE, clock=clock)


def events(*ids: int) -> list[dict[str, Any]]:
    return [{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": str(i)}} for i in ids]


def ids_of(entries: list[dict[str, Any]]) -> list[int]:
    return [int(entry["FileUploadEvent"]["FileId"]) for entry in entries]


def test_pull_leases_at_most_max_events_in_enqueue_order(queue: LeaseQueue) -> None:
    assert queue.enqueue(None, events(1, 2, 3, 4, 5)) == 5
    assert ids_of(queue.pull(None, 3)) == [1, 2, 3]
    assert ids_of(queue.pull(None, 3)) == [4, 5]
    assert queue.counts()[None] == QueueCounts(queued=0, leased=5, confirmed=0)


def test_leased_event_is_invisible_until_its_lease_runs_out(
    queue: LeaseQueue, clock: FakeClock
) -> None:
    queue.enqueue(None, events(1))
    queue.pull(None, 16)
    clock.advance(LEASE - 0.001)
    assert queue.pull(None, 16) == []
    assert queue.waiting(None) == 0


def test_redelivered_event_gets_a_new_handle(queue: LeaseQueue, clock: FakeClock) -> None:
    queue.enqueue(None, events(1))
    [first] = queue.pull(None, 16)
    clock.advance(LEASE)
    assert queue.waiting(None) == 1
    [again] = queue.pull(None, 16)
    assert ids_of([again]) == [1]
    assert again["EventHandle"] != first["EventHandle"]
    assert queue.redelivered == 1


def test_expired_events_come_back_before_never_delivered_ones(
    queue: LeaseQueue, clock: FakeClock
) -> None:
    queue.enqueue(None, events(1, 2))
    queue.pull(None, 2)
    queue.enqueue(None, events(3))
    clock.advance(LEASE)
    assert ids_of(queue.pull(None, 16)) == [1, 2, 3]


def test_confirmed_event_never_comes_back(queue: LeaseQueue, clock: FakeClock) -> None:
    queue.enqueue(None, events(1))
    [entry] = queue.pull(None, 16)
    outcome = queue.confirm(None, [entry["EventHandle"]])
    assert (outcome.confirmed, outcome.rejected) == (1, [])
    clock.advance(10 * LEASE)
    assert queue.pull(None, 16) == []
    assert queue.counts()[None] == QueueCounts(queued=0, leased=0, confirmed=1)


def test_handle_is_accepted_only_once(queue: LeaseQueue) -> None:
    queue.enqueue(None, events(1))
    [entry] = queue.pull(None, 16)
    handle = entry["EventHandle"]
    assert queue.confirm(None, [handle, handle]).rejected == [handle]
    assert queue.confirm(None, [handle]).rejected == [handle]
    assert queue.counts()[None].confirmed == 1


def test_expired_handle_is_rejected_and_the_event_stays(
    queue: LeaseQueue, clock: FakeClock
) -> None:
    queue.enqueue(None, events(1))
    [entry] = queue.pull(None, 16)
    clock.advance(LEASE)
    outcome = queue.confirm(None, [entry["EventHandle"]])
    assert (outcome.confirmed, outcome.rejected) == (0, [entry["EventHandle"]])
    assert queue.counts()[None] == QueueCounts(queued=1, leased=0, confirmed=0)


def test_stale_handle_is_rejected_after_redelivery(queue: LeaseQueue, clock: FakeClock) -> None:
    queue.enqueue(None, events(1))
    [first] = queue.pull(None, 16)
    clock.advance(LEASE)
    [second] = queue.pull(None, 16)
    assert queue.confirm(None, [first["EventHandle"]]).rejected == [first["EventHandle"]]
    assert queue.confirm(None, [second["EventHandle"]]).confirmed == 1


def test_confirm_applies_live_handles_and_reports_the_others(queue: LeaseQueue) -> None:
    queue.enqueue(None, events(1, 2))
    live = [entry["EventHandle"] for entry in queue.pull(None, 16)]
    outcome = queue.confirm(None, [live[0], "unknown", live[1]])
    assert (outcome.confirmed, outcome.rejected) == (2, ["unknown"])


def test_handle_in_an_enqueued_entry_is_dropped(queue: LeaseQueue) -> None:
    queue.enqueue(None, [{"EventHandle": "mine", "EventType": "FileDeleted"}])
    [entry] = queue.pull(None, 16)
    assert entry["EventHandle"] != "mine"
    assert entry["EventType"] == "FileDeleted"
    assert queue.confirm(None, ["mine"]).rejected == ["mine"]


def test_handles_come_from_the_given_factory(clock: FakeClock) -> None:
    numbers = itertools.count(1)
    queue = LeaseQueue(LEASE, clock=clock, new_handle=lambda: f"h{next(numbers)}")
    queue.enqueue(None, events(1, 2))
    assert [entry["EventHandle"] for entry in queue.pull(None, 16)] == ["h1", "h2"]


def test_applications_are_kept_apart(queue: LeaseQueue) -> None:
    queue.enqueue(1, events(1))
    queue.enqueue(2, events(2, 3))
    assert queue.waiting(1) == 1
    assert queue.waiting(2) == 2
    assert queue.waiting(None) == 0
    [entry] = queue.pull(1, 16)
    assert queue.confirm(2, [entry["EventHandle"]]).rejected == [entry["EventHandle"]]
    assert queue.confirm(1, [entry["EventHandle"]]).confirmed == 1
    counts = queue.counts()
    assert counts[1] == QueueCounts(queued=0, leased=0, confirmed=1)
    assert counts[2] == QueueCounts(queued=2, leased=0, confirmed=0)


def test_encoded_events_are_pulled_as_entries_and_leased_as_they_are(queue: LeaseQueue) -> None:
    [first, second] = events(1, 2)
    queue.enqueue(None, [wire.encode(first), second])
    pulled = queue.pull(None, 16)
    assert [{k: v for k, v in e.items() if k != "EventHandle"} for e in pulled] == [first, second]
    queue.enqueue(None, [wire.encode(first)])
    [delivery] = queue.lease(None, 16)
    assert delivery.event == wire.encode(first)


def test_released_events_wait_again_first_in_line_and_count_as_redelivered(
    queue: LeaseQueue, clock: FakeClock
) -> None:
    queue.enqueue(None, events(1, 2, 3))
    leased = [entry["EventHandle"] for entry in queue.pull(None, 2)]
    assert queue.release(None, [leased[1], "unknown", leased[0]]) == 2
    assert queue.counts()[None] == QueueCounts(queued=3, leased=0, confirmed=0)
    assert ids_of(queue.pull(None, 16)) == [1, 2, 3]
    assert queue.redelivered == 2
    assert queue.confirm(None, leased).rejected == leased  # released handles are spent
    clock.advance(LEASE)
    assert queue.release(None, [e["EventHandle"] for e in queue.pull(None, 1)]) == 1
    assert queue.release(1, ["never-issued"]) == 0


def test_empty_pull_without_wait_answers_at_once(queue: LeaseQueue) -> None:
    assert queue.pull(None, 16) == []


def test_long_poll_is_woken_by_an_enqueue() -> None:
    queue = LeaseQueue(LEASE)
    pulled: list[list[dict[str, Any]]] = []
    puller = threading.Thread(target=lambda: pulled.append(queue.pull(None, 16, 10.0)))
    started = time.monotonic()
    puller.start()
    queue.enqueue(None, events(7))
    puller.join(timeout=10)
    assert not puller.is_alive()
    assert time.monotonic() - started < 5
    assert [ids_of(batch) for batch in pulled] == [[7]]


def test_long_poll_returns_an_event_whose_lease_runs_out_while_waiting() -> None:
    queue = LeaseQueue(0.2)
    queue.enqueue(None, events(1))
    queue.pull(None, 16)
    started = time.monotonic()
    assert ids_of(queue.pull(None, 16, 5.0)) == [1]
    assert time.monotonic() - started < 2.5


# -- a model-based test -----------------------------------------------------------------

APPS: tuple[AppId, ...] = (None, 1500000001, 1500000002)


@dataclass
class AppModel:
    queued: set[int] = field(default_factory=set)
    leased: dict[str, tuple[int, float]] = field(default_factory=dict)  # handle -> (id, expiry)
    confirmed: set[int] = field(default_factory=set)
    enqueued: int = 0


class LeaseQueueMachine(RuleBasedStateMachine):
    """Random enqueues, pulls, confirms (with stale and foreign handles) and clock jumps."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.queue = LeaseQueue(LEASE, clock=self.clock)
        self.apps = {app: AppModel() for app in APPS}
        self.ids = itertools.count(1)
        self.seen_handles: list[str] = []  # in the order issued: draws must not depend on uuids
        self.accepted_handles: set[str] = set()
        self.delivered: set[int] = set()
        self.redelivered = 0

    def _expire(self) -> None:
        for model in self.apps.values():
            for handle, (event_id, expires_at) in list(model.leased.items()):
                if expires_at <= self.clock.now:
                    del model.leased[handle]
                    model.queued.add(event_id)

    @rule(app=st.sampled_from(APPS), count=st.integers(1, 4))
    def enqueue(self, app: AppId, count: int) -> None:
        new = [next(self.ids) for _ in range(count)]
        assert self.queue.enqueue(app, events(*new)) == count
        self.apps[app].queued.update(new)
        self.apps[app].enqueued += count

    @rule(app=st.sampled_from(APPS), max_events=st.integers(1, 5))
    def pull(self, app: AppId, max_events: int) -> None:
        self._expire()
        model = self.apps[app]
        pulled = self.queue.pull(app, max_events)
        assert len(pulled) == min(max_events, len(model.queued))
        for entry in pulled:
            [event_id] = ids_of([entry])
            handle = entry["EventHandle"]
            assert event_id in model.queued, "delivered an event that is leased or confirmed"
            assert handle not in self.seen_handles, "a handle was reused"
            self.seen_handles.append(handle)
            model.queued.remove(event_id)
            model.leased[handle] = (event_id, self.clock.now + LEASE)
            if event_id in self.delivered:
                self.redelivered += 1
            self.delivered.add(event_id)

    @precondition(lambda self: bool(self.seen_handles))
    @rule(app=st.sampled_from(APPS), data=st.data())
    def confirm(self, app: AppId, data: st.DataObject) -> None:
        known = st.sampled_from(self.seen_handles)
        handles = data.draw(st.lists(st.one_of(known, st.just("never-issued")), max_size=6))
        self._expire()
        model = self.apps[app]
        expected_rejected: list[str] = []
        confirmed: list[str] = []
        for handle in handles:
            if handle in model.leased:
                event_id, _ = model.leased.pop(handle)
                model.confirmed.add(event_id)
                confirmed.append(handle)
            else:
                expected_rejected.append(handle)
        outcome = self.queue.confirm(app, handles)
        assert outcome.confirmed == len(confirmed)
        assert outcome.rejected == expected_rejected
        assert not self.accepted_handles & set(confirmed), "a handle was accepted twice"
        self.accepted_handles.update(confirmed)

    @rule(seconds=st.sampled_from([0.5, LEASE - 0.5, LEASE, LEASE + 0.5, 3 * LEASE]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def no_event_is_lost(self) -> None:
        self._expire()
        counts = self.queue.counts()
        for app, model in self.apps.items():
            got = counts.get(app, QueueCounts(0, 0, 0))
            assert got == QueueCounts(len(model.queued), len(model.leased), len(model.confirmed))
            assert got.total == model.enqueued

    @invariant()
    def redeliveries_are_counted(self) -> None:
        assert self.queue.redelivered == self.redelivered


LeaseQueueMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestLeaseQueueModel = LeaseQueueMachine.TestCase
