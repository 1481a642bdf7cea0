"""`storer.py`: the store worker writes several answers and the confirm outcomes in one
transaction, confirms only what committed, and slows the pullers down when it falls behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from vodpoller.confirmer import Confirmer
from vodpoller.errors import StorageError
from vodpoller.events import Event, parse_entry
from vodpoller.store import Answer, Release, SaveResult, SettleResult
from vodpoller.storer import StoreJob, Storer, Ticket

RECEIVED = datetime(2026, 12, 1, tzinfo=UTC)


class Writes:
    """A writer that records each transaction; it can be held, or made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[int], list[Release]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail: list[BaseException] = []
        self._ids = iter(range(1, 10**6))
        self.lock = threading.Lock()

    def write(
        self,
        answers: Sequence[Answer],
        confirmed: Sequence[int],
        released: Sequence[Release],
        *,
        holder: str | None,
    ) -> tuple[list[SaveResult], SettleResult]:
        self.entered.set()
        assert self.hold.wait(10)
        with self.lock:
            self.calls.append(([len(a.events) for a in answers], list(confirmed), list(released)))
            if self.fail:
                raise self.fail.pop(0)
            results = [
                SaveResult(len(a.events), 0, tuple(next(self._ids) for _ in a.events))
                for a in answers
            ]
        return results, SettleResult(len(confirmed), len(released), 0)


class Confirms:
    """A source that confirms everything and records the calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def pull(self, sub_app_id: int | None) -> Any:
        raise AssertionError

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        with self.lock:
            self.calls.append(list(handles))


def events(count: int, start: int = 0) -> list[Event]:
    return [
        parse_entry({"EventType": "X", "X": {"TaskId": f"t{n}"}}, None)
        for n in range(start, start + count)
    ]


def job(count: int, *, handles: list[str | None] | None = None, start: int = 0) -> StoreJob:
    return StoreJob(
        sub_app_id=None,
        events=events(count, start),
        handles=handles if handles is not None else [f"h{start + n}" for n in range(count)],
        received_at=RECEIVED,
        deadline=time.monotonic() + 30,
        ticket=Ticket(count),
    )


def worker(writes: Writes, capacity: int = 64) -> tuple[Storer, Confirms]:
    source = Confirms()
    storer: Storer

    def settle(confirmed: Sequence[int], released: Sequence[Release]) -> None:
        storer.settle(confirmed, released)

    confirmer = Confirmer(source, settle, senders=2)
    storer = Storer(writes, confirmer, holder="me", capacity=capacity)
    return storer, source


def test_a_batch_is_written_then_confirmed_and_its_outcome_written_later() -> None:
    writes = Writes()
    storer, source = worker(writes)
    stored = job(3)

    storer.submit(stored)
    assert stored.ticket.wait(5)
    storer.close()

    assert source.calls == [["h0", "h1", "h2"]]
    assert (stored.ticket.stored, stored.ticket.confirmed) == (3, 3)
    assert writes.calls[0] == ([3], [], [])
    assert writes.calls[-1] == ([], [1, 2, 3], [])


def test_answers_that_wait_are_written_together_with_the_outcomes_that_wait() -> None:
    writes = Writes()
    storer, _ = worker(writes)
    writes.hold.clear()
    first = job(1)
    storer.submit(first)
    assert writes.entered.wait(5)
    later = [job(2, start=10), job(3, start=20), job(4, start=30)]
    for each in later:
        storer.submit(each)
    storer.settle([77], [Release(78, RECEIVED)])
    writes.hold.set()
    for each in [first, *later]:
        assert each.ticket.wait(5)
    storer.close()

    assert writes.calls[0] == ([1], [], [])
    answers, confirmed, released = writes.calls[1]
    assert (answers, released) == ([2, 3, 4], [Release(78, RECEIVED)])
    assert confirmed[0] == 77  # and maybe the first batch's, if its confirm was quick


def test_rows_without_a_handle_are_let_go_of_and_the_rest_confirmed_sixteen_at_a_time() -> None:
    writes = Writes()
    storer, source = worker(writes)
    handles: list[str | None] = [f"h{n}" for n in range(40)]
    handles[5] = None
    stored = job(40, handles=handles)

    storer.submit(stored)
    assert stored.ticket.wait(5)
    storer.close()

    assert sorted(len(call) for call in source.calls) == [7, 16, 16]
    assert sorted(h for call in source.calls for h in call) == sorted(
        h for h in handles if h is not None
    )
    released = [r for _, _, rel in writes.calls for r in rel]
    assert released == [Release(6, RECEIVED)]  # the 6th row: no handle
    assert (stored.ticket.confirmed, stored.ticket.refused) == (39, 0)


def test_a_failed_write_fails_its_batches_and_keeps_the_outcomes_for_later() -> None:
    writes = Writes()
    storer, source = worker(writes)
    writes.hold.clear()
    storer.submit(job(1))
    assert writes.entered.wait(5)
    failing = job(2, start=5)
    storer.submit(failing)
    storer.settle([41], [])
    writes.fail.append(StorageError("database is gone"))  # the first write succeeds
    writes.fail.insert(0, StorageError("database is gone"))
    writes.hold.set()

    assert failing.ticket.wait(5)
    assert isinstance(failing.ticket.error, StorageError)
    storer.close()

    assert ["h5", "h6"] not in source.calls  # never confirmed: not stored
    assert any(41 in confirmed for _, confirmed, _ in writes.calls[2:])


def test_submit_waits_while_the_queue_is_full() -> None:
    writes = Writes()
    storer, _ = worker(writes, capacity=2)
    writes.hold.clear()
    storer.submit(job(1))
    assert writes.entered.wait(5)
    storer.submit(job(1, start=1))
    storer.submit(job(1, start=2))
    third = threading.Thread(target=storer.submit, args=(job(1, start=3),))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # the queue holds 2: the puller waits

    writes.hold.set()
    third.join(5)
    assert not third.is_alive()
    storer.close()


def test_close_writes_what_is_queued_and_the_outcomes_of_its_confirms() -> None:
    writes = Writes()
    storer, source = worker(writes)
    jobs = [job(2, start=10 * n) for n in range(5)]
    for each in jobs:
        storer.submit(each)

    storer.close()

    assert all(each.ticket.done for each in jobs)
    assert len(source.calls) == 5
    confirmed = sorted(row for _, rows, _ in writes.calls for row in rows)
    assert confirmed == list(range(1, 11))
    with pytest.raises(RuntimeError, match="closed"):
        storer.submit(job(1))


def test_outcomes_the_database_refuses_at_the_end_are_logged_not_kept_forever() -> None:
    from structlog.testing import capture_logs

    writes = Writes()
    storer, _ = worker(writes)
    storer.settle([5], [])
    writes.fail.extend([StorageError("down")] * 2)
    with capture_logs() as logs:
        storer.close()
    assert any(line["event"] == "confirm outcomes left unrecorded" for line in logs)
