"""The daemon's scheduling: each application drained again after each run, backoff on error
streaks, a stop that waits for the drains in flight and never deadlocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from vodpoller import migrate
from vodpoller.emulator.queue import LeaseQueue
from vodpoller.errors import StorageError
from vodpoller.poller import Poller
from vodpoller.service import Service
from vodpoller.source import Batch, LeaseQueueSource
from vodpoller.store import EventStore

APPS = (None, 1500000001, 1500000002, 1500000003)


class CountingSource(LeaseQueueSource):
    """Counts pulls per application."""

    def __init__(self, queue: LeaseQueue):
        super().__init__(queue)
        self.pulls: dict[int | None, int] = dict.fromkeys(APPS, 0)
        self._lock = threading.Lock()

    def pull(self, sub_app_id: int | None) -> Batch:
        with self._lock:
            self.pulls[sub_app_id] += 1
        return super().pull(sub_app_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.connect(f"sqlite:///{tmp_path / 'events.db'}") as opened:
        migrate.upgrade(opened.engine)
        yield opened


def _run_in_thread(service: Service) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(
        target=lambda: code.append(service.run(install_signal_handlers=False))
    )
    thread.start()
    return thread, code


def test_every_application_is_drained_again_and_again_even_with_no_interval(
    store: EventStore,
) -> None:
    queue = LeaseQueue()
    source = CountingSource(queue)
    service = Service(Poller(source, store), APPS, interval_seconds=0.0)
    thread, code = _run_in_thread(service)
    try:
        deadline = time.monotonic() + 10
        while min(source.pulls.values()) < 20:
            assert time.monotonic() < deadline, source.pulls
            time.sleep(0.01)
    finally:
        service.stop()
        thread.join(10)

    assert not thread.is_alive()
    assert code == [0]


def test_stop_waits_for_the_batch_in_flight_and_confirms_it(store: EventStore) -> None:
    queue = LeaseQueue()
    queue.enqueue(None, [{"EventType": "X", "X": {"TaskId": str(n)}} for n in range(5)])
    saving = threading.Event()
    release = threading.Event()

    class SlowStore:
        def write(self, answers: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
            if any(answer.events for answer in answers):
                saving.set()
                release.wait(5)
            return store.write(answers, *args, **kwargs)

    service = Service(Poller(LeaseQueueSource(queue), SlowStore()), (None,))
    thread, code = _run_in_thread(service)
    assert saving.wait(5)

    service.stop()
    time.sleep(0.2)
    assert thread.is_alive()  # still finishing the batch
    release.set()
    thread.join(10)

    assert code == [0]
    assert queue.counts()[None].confirmed == 5
    assert store.count() == 5


def test_backoff_doubles_per_failure_up_to_the_cap_without_overflowing(
    store: EventStore,
) -> None:
    service = Service(
        Poller(LeaseQueueSource(LeaseQueue()), store),
        (None,),
        interval_seconds=0.5,
        max_backoff_seconds=60.0,
    )
    streak = service._streaks[None]

    delays = []
    for failures in (0, 1, 2, 3, 7, 8, 5000):
        streak.failures = failures
        delays.append(service._delay_after(streak))

    assert delays == [0.5, 1.0, 2.0, 4.0, 60.0, 60.0, 60.0]


def test_a_storage_failure_streak_is_logged_once_and_its_recovery_once(
    store: EventStore,
) -> None:
    from structlog.testing import capture_logs

    queue = LeaseQueue(lease_seconds=0.05)
    failing = [True]

    class FlakyStore:
        def write(self, answers: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
            count = sum(len(answer.events) for answer in answers)
            if failing[0] and count:
                raise StorageError(f"storing a batch of {count} events failed")
            return store.write(answers, *args, **kwargs)

    service = Service(
        Poller(LeaseQueueSource(queue), FlakyStore()),
        (None,),
        interval_seconds=0.0,
        max_backoff_seconds=0.01,
    )
    with capture_logs() as logs:
        thread, code = _run_in_thread(service)
        for n in range(6):
            queue.enqueue(
                None, [{"EventType": "X", "X": {"TaskId": f"{n}-{i}"}} for i in range(n + 1)]
            )
            time.sleep(0.1)
        failing[0] = False
        deadline = time.monotonic() + 10
        while queue.counts()[None].confirmed < 21:
            assert time.monotonic() < deadline, queue.counts()
            time.sleep(0.02)
        service.stop()
        thread.join(10)

    assert code == [0]
    streak = [line for line in logs if line["event"].startswith("drain failed;")]
    assert len(streak) == 1, streak
    assert streak[0]["log_level"] == "warning"
    assert [line["event"] for line in logs if line["event"] == "recovered"] == ["recovered"]


def test_live_figures_count_batch_by_batch_and_a_drain_end_adds_nothing_twice() -> None:
    from vodpoller.daemon import Tallied
    from vodpoller.metrics import Metrics
    from vodpoller.poller import DrainResult
    from vodpoller.service import Figures

    figures = Figures(live=True)
    tallied = Tallied(Metrics(), figures)
    tallied.pulled(None, 16, 0.1)
    tallied.stored(None, 12, 4)
    tallied.confirmed(None, 16, 0.2)
    tallied.confirm_expired(None, 3)
    figures.drained(DrainResult(pulled=16, stored=12, duplicates=4, confirmed=16))

    progress = figures.progress()
    assert (progress.pulled, progress.stored, progress.duplicates, progress.confirmed) == (
        16,
        12,
        4,
        16,
    )
    assert progress.last_poll_at is not None

    counted_at_the_end = Figures()
    counted_at_the_end.drained(DrainResult(pulled=5, stored=5, confirmed=5))
    assert counted_at_the_end.progress().stored == 5
