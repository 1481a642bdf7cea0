"""The store worker: one thread writes what the pullers bring, several answers in one
transaction together with how earlier confirms went, then hands the stored batches to the
confirmer. Only what committed is ever confirmed; a batch that did not commit comes back from
VOD after its lease."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from vodpoller.confirmer import Confirmer, ConfirmJob
from vodpoller.errors import StorageError, describe
from vodpoller.events import Event
from vodpoller.logs import get_logger
from vodpoller.metrics import Metrics
from vodpoller.source import MAX_CONFIRM_HANDLES
from vodpoller.store import Answer, Reject, Release, SaveResult, SettleResult

log = get_logger(__name__)

# Answers written in one transaction at most: a backlog at 100 answers/s needs a few
# transactions a second, and a failure of one transaction fails no more than these.
ANSWERS_PER_TRANSACTION: Final = 32
# How long confirm outcomes wait for answers to share their transaction with.
SETTLE_DELAY_SECONDS: Final = 0.02
RETRY_PAUSE_SECONDS: Final = (0.2, 5.0)  # outcomes the database refused: first and longest pause


class Writer(Protocol):
    """What the store worker needs of the store."""

    def write(
        self,
        answers: Sequence[Answer],
        confirmed: Sequence[int],
        released: Sequence[Release],
        *,
        holder: str | None,
    ) -> tuple[list[SaveResult], SettleResult]: ...


class Ticket:
    """The fate of one pulled batch: stored, then each confirm job's outcome."""

    def __init__(self, pulled: int):
        self.pulled = pulled
        self.stored = 0
        self.duplicates = 0
        self.confirmed = 0
        self.refused = 0
        self.not_sent = 0
        self.rejected = 0  # kept in vod_rejects: unparseable, or refused by the database
        self.error: BaseException | None = None
        self._jobs = 0
        self._done = threading.Event()
        self._lock = threading.Lock()

    def saved(self, result: SaveResult, jobs: int, rejected: int = 0) -> None:
        with self._lock:
            self.stored, self.duplicates, self._jobs = result.stored, result.duplicates, jobs
            self.rejected = rejected
            if jobs == 0:
                self._done.set()

    def confirm_ended(
        self, confirmed: int, refused: int, not_sent: int, error: BaseException | None = None
    ) -> None:
        with self._lock:
            self.confirmed += confirmed
            self.refused += refused
            self.not_sent += not_sent
            if error is not None and self.error is None:
                self.error = error
            self._jobs -= 1
            if self._jobs <= 0:
                self._done.set()

    def failed(self, error: BaseException) -> None:
        self.error = error
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


@dataclass
class StoreJob:
    """A pulled batch, parsed: its events with their handles exactly as received."""

    sub_app_id: int | None
    events: list[Event]
    handles: list[str | None]
    received_at: datetime
    deadline: float  # monotonic: when its confirm budget ends
    ticket: Ticket
    request_id: str | None = None
    sent_at: float = field(default_factory=time.monotonic)  # when its pull went out
    answered_at: float = field(default_factory=time.monotonic)  # when it was read
    rejects: list[Reject] = field(default_factory=list)  # entries that are no events

    @property
    def pulled_at(self) -> datetime:
        """When the pull went out, in wall-clock time (`received_at` minus the time since)."""
        return self.received_at - timedelta(seconds=max(0.0, self.answered_at - self.sent_at))


class Storer:
    """One thread; `submit` blocks while `capacity` batches wait (the pullers slow down when
    the database does). `settle` queues confirm outcomes for the next transaction."""

    def __init__(
        self,
        store: Writer,
        confirmer: Confirmer,
        *,
        holder: str | None,
        capacity: int = 64,
        metrics: Metrics | None = None,
    ):
        self.store = store
        self.metrics = metrics or Metrics()
        self.confirmer = confirmer
        self.holder = holder
        self.capacity = capacity
        self._jobs: deque[StoreJob] = deque()
        self._confirmed: list[int] = []
        self._released: list[Release] = []
        self._changed = threading.Condition()
        self._closing = False
        self._retry_after = 0.0
        self._settles_since = 0.0
        self._failing_settles = 0
        self._gave_up = False  # closing, and the database refused the last outcomes again
        self._writing = False  # work taken and not yet written (and handed to the confirmer)
        self._thread = threading.Thread(target=self._run, name="store", daemon=True)
        self._thread.start()

    # -- from other threads ---------------------------------------------------------------

    def submit(self, job: StoreJob) -> None:
        with self._changed:
            self._changed.wait_for(lambda: len(self._jobs) < self.capacity or self._closing)
            if self._closing:
                raise RuntimeError("the store worker is closed")
            self._jobs.append(job)
            self._changed.notify_all()

    def settle(self, confirmed: Sequence[int], released: Sequence[Release]) -> None:
        with self._changed:
            if not (self._confirmed or self._released):
                self._settles_since = time.monotonic()
            self._confirmed.extend(confirmed)
            self._released.extend(released)
            self._changed.notify_all()

    def close(self) -> None:
        """Write what is queued, wait for the confirms it starts and their outcomes, stop."""
        with self._changed:
            self._changed.wait_for(lambda: not self._jobs and not self._writing)
        self.confirmer.wait_idle()  # every outcome is queued here now
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what is queued is written and the outcomes known so far recorded;
        False if that took longer than `timeout` (the database is failing, say)."""
        deadline = time.monotonic() + timeout
        if not self.confirmer.wait_idle(timeout):
            return False
        with self._changed:
            self._changed.notify_all()
            return self._changed.wait_for(
                lambda: not (self._jobs or self._writing or self._confirmed or self._released),
                max(0.0, deadline - time.monotonic()),
            )

    @property
    def unsettled(self) -> int:
        with self._changed:
            return len(self._confirmed) + len(self._released)

    # -- the worker -----------------------------------------------------------------------

    def _take(self) -> tuple[list[StoreJob], list[int], list[Release]] | None:
        """The next transaction's work: answers (up to a limit) and every pending outcome.
        Outcomes alone wait a moment for answers to share their transaction, and longer
        after the database refused them. None when closed and nothing is left."""
        with self._changed:
            while not self._jobs:
                if not (self._confirmed or self._released):
                    if self._closing:
                        return None
                    self._changed.wait()
                    continue
                if self._closing and self._gave_up:
                    return None
                ready_at = max(self._retry_after, self._settles_since + SETTLE_DELAY_SECONDS)
                remaining = ready_at - time.monotonic()
                if remaining <= 0 or self._closing:
                    break
                self._changed.wait(remaining)
            count = min(len(self._jobs), ANSWERS_PER_TRANSACTION)
            jobs = [self._jobs.popleft() for _ in range(count)]
            self._writing = True
            confirmed, released = self._confirmed, self._released
            self._confirmed, self._released = [], []
            self._changed.notify_all()  # room in the queue
            return jobs, confirmed, released

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            jobs, confirmed, released = taken
            try:
                self._write(jobs, confirmed, released)
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _write(self, jobs: list[StoreJob], confirmed: list[int], released: list[Release]) -> None:
        """One transaction; then the stored batches go to the confirmer."""
        try:
            results, _settled = self.store.write(
                [Answer(job.events, job.received_at, job.sub_app_id, job.rejects) for job in jobs],
                confirmed,
                released,
                holder=self.holder,
            )
        except StorageError as error:
            self.metrics.storage_error()
            self._write_failed(jobs, confirmed, released, error)
            return
        except BaseException as error:  # a bug: fail these batches, keep going
            log.critical("storing failed unexpectedly", exc_info=error)
            self._write_failed(jobs, confirmed, released, error)
            return
        self._failing_settles = 0
        for job, result in zip(jobs, results, strict=True):
            if job.events:
                self.metrics.stored(job.sub_app_id, result.stored, result.duplicates)
            if result.refused or job.rejects:
                self.metrics.quarantined(job.sub_app_id, result.refused + len(job.rejects))
            self._confirm(job, result)

    def _write_failed(
        self,
        jobs: list[StoreJob],
        confirmed: list[int],
        released: list[Release],
        error: BaseException,
    ) -> None:
        for job in jobs:
            job.ticket.failed(error)  # not stored: nothing confirmed, the events come back
        if confirmed or released:
            self._failing_settles += 1
            first, longest = RETRY_PAUSE_SECONDS
            pause = min(longest, first * 2 ** (self._failing_settles - 1))
            if self._failing_settles == 1:
                log.warning(
                    "confirm outcomes to be recorded later",
                    waiting=len(confirmed) + len(released),
                    error=describe(error),
                )
            with self._changed:
                if self._closing:
                    # The last try at the end: these outcomes stay unrecorded. Confirmed
                    # rows keep confirmed_at NULL; let-go rows stay held by this daemon,
                    # which counts as dead once it is gone: their events find them again.
                    self._gave_up = True
                    log.error(
                        "confirm outcomes left unrecorded",
                        confirmed=len(confirmed),
                        released=len(released),
                        row_ids=confirmed[:20],
                    )
                    return
                self._confirmed[:0] = confirmed
                self._released[:0] = released
                self._retry_after = time.monotonic() + pause

    def _confirm(self, job: StoreJob, result: SaveResult) -> None:
        """Hand the stored batch's handles to the confirmer, 16 at a time. Rows without a
        handle cannot be confirmed and are let go of at once; entries kept in vod_rejects are
        confirmed so that they do not come back, and have no row to settle."""
        paired = list(zip(job.handles, result.row_ids, strict=True))
        with_rows = [(h, row) for h, row in paired if h is not None and row is not None]
        without = [
            Release(row, job.received_at, job.pulled_at) for h, row in paired if h is None and row
        ]
        rejected = [h for h, row in paired if h is not None and row is None]
        rejected += [reject.handle for reject in job.rejects if reject.handle is not None]
        if without:
            self.settle((), without)
        chunks: list[tuple[tuple[str, ...], tuple[int, ...]]] = []
        for start in range(0, len(with_rows), MAX_CONFIRM_HANDLES):
            chunk = with_rows[start : start + MAX_CONFIRM_HANDLES]
            chunks.append((tuple(h for h, _ in chunk), tuple(row for _, row in chunk)))
        for start in range(0, len(rejected), MAX_CONFIRM_HANDLES):
            chunks.append((tuple(rejected[start : start + MAX_CONFIRM_HANDLES]), ()))
        kept = len(job.rejects) + result.refused
        if kept:
            log.warning(
                "entries kept in vod_rejects, not as events",
                sub_app_id=job.sub_app_id,
                count=kept,
                reasons=sorted({reject.reason for reject in job.rejects})[:5],
                refused_by_database=result.refused,
                request_id=job.request_id,
            )
        job.ticket.saved(result, len(chunks), kept)
        for handles, row_ids in chunks:
            self.confirmer.submit(
                ConfirmJob(
                    sub_app_id=job.sub_app_id,
                    handles=handles,
                    row_ids=row_ids,
                    received_at=job.received_at,
                    deadline=job.deadline,
                    done=job.ticket.confirm_ended,
                    sent_at=job.sent_at,
                    pulled_at=job.pulled_at,
                )
            )
