"""One drain cycle: pull -> store -> confirm, again at once while events come, until a pull
comes back empty. Never confirms an event before its batch is committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_random_exponential,
)

from vodpoller.errors import StorageError, TransientSourceError, describe
from vodpoller.events import Event, parse_entry
from vodpoller.logs import get_logger
from vodpoller.source import MAX_CONFIRM_HANDLES, Batch, EventSource, HandlesRejectedError
from vodpoller.store import Release

log = get_logger(__name__)

FULL_BATCH = 16  # PullEvents answers at most 16 events: a full answer means more are waiting.
PULL_ATTEMPTS = 5


class SaveResultLike(Protocol):
    @property
    def stored(self) -> int: ...

    @property
    def duplicates(self) -> int: ...

    @property
    def row_ids(self) -> tuple[int, ...]: ...


class EventSink(Protocol):
    """What the poller needs of the store."""

    def save(
        self,
        events: Sequence[Event],
        received_at: datetime | None = None,
        *,
        holder: str | None = None,
    ) -> SaveResultLike: ...

    def settle(
        self,
        confirmed: Sequence[int] = (),
        released: Sequence[Release] = (),
        *,
        holder: str | None = None,
        at: datetime | None = None,
    ) -> Any: ...


@dataclass
class _Settlement:
    """Confirm outcomes the database has yet to record."""

    confirmed: list[int] = field(default_factory=list)
    released: list[Release] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.confirmed or self.released)

    def __len__(self) -> int:
        return len(self.confirmed) + len(self.released)


def _raw_handle(entry: dict[str, Any]) -> str | None:
    """The handle exactly as received: VOD wants back the very bytes it sent."""
    handle = entry.get("EventHandle")
    return handle if isinstance(handle, str) and handle else None


@dataclass
class DrainResult:
    pulled: int = 0
    stored: int = 0
    duplicates: int = 0
    confirmed: int = 0
    unconfirmed: int = 0  # handles given up on: those events come back and dedupe
    pulls: int = 0

    def add(self, other: DrainResult) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return (
            f"pulled={self.pulled} stored={self.stored} duplicates={self.duplicates} "
            f"confirmed={self.confirmed}"
        )


def _stop_at(deadline: float) -> Callable[[RetryCallState], bool]:
    """Stop retrying when the next attempt would start at or after `deadline` (monotonic)."""

    def stop(state: RetryCallState) -> bool:
        return time.monotonic() + state.upcoming_sleep >= deadline

    return stop


def _outcome_error(state: RetryCallState) -> str | None:
    error = state.outcome.exception() if state.outcome else None
    return describe(error) if error else None


# No answer, a gateway's answer, or one we could not read: the service may have done the work.
_OUTCOME_UNKNOWN = frozenset({"ClientNetworkError", "ServerNetworkError", None})


def _is_ambiguous(error: TransientSourceError) -> bool:
    """The call may have been applied although its answer said nothing (timeout, reset, 502).
    An answer from the service itself (InternalError, throttling), or a connection that was
    never made, means it was not."""
    return error.code in _OUTCOME_UNKNOWN and not error.never_sent


class Poller:
    """Drains applications. Thread-safe: one drain per application at a time is the caller's
    rule (the scheduler's `max_instances=1`)."""

    def __init__(
        self,
        source: EventSource,
        store: EventSink,
        *,
        concurrency: int = 4,
        confirm_budget_seconds: float = 30.0,
        stop: threading.Event | None = None,
        holder: str | None = None,
    ):
        self.source = source
        self.store = store
        self.concurrency = concurrency
        self.confirm_budget_seconds = confirm_budget_seconds
        self.stopping = stop or threading.Event()
        # The daemon id the stored rows are held under until their confirm is settled.
        self.holder = holder
        self._unsettled = _Settlement()  # confirm outcomes not yet recorded
        self._unsettled_lock = threading.Lock()
        # Extra pullers, a pool per application so that a busy one never starves another.
        self._helpers: dict[int | None, ThreadPoolExecutor] = {}
        self._helpers_lock = threading.Lock()

    def _helpers_of(self, sub_app_id: int | None) -> ThreadPoolExecutor:
        with self._helpers_lock:
            pool = self._helpers.get(sub_app_id)
            if pool is None:
                pool = self._helpers[sub_app_id] = ThreadPoolExecutor(
                    max_workers=self.concurrency - 1,
                    thread_name_prefix=f"drain-{sub_app_id or 'default'}",
                )
            return pool

    def close(self) -> None:
        with self._helpers_lock:
            pools = list(self._helpers.values())
        for pool in pools:
            pool.shutdown(wait=True)
        if self._unsettled:
            self._settle(_Settlement())  # a last try for outcomes still waiting
        if self._unsettled:
            log.error(
                "confirm outcomes left unrecorded",
                confirmed=len(self._unsettled.confirmed),
                released=len(self._unsettled.released),
                row_ids=self._unsettled.confirmed[:20],
            )

    # -- one drain -----------------------------------------------------------------------

    def drain(self, sub_app_id: int | None) -> DrainResult:
        """Pull and handle batches until a pull comes back empty; extra workers join while
        answers come back full, up to `concurrency`. Raises the first worker's error."""
        if self._unsettled:
            self._settle(_Settlement())  # outcomes the database could not take before
        total = DrainResult()
        lock = threading.Lock()
        failed = threading.Event()
        errors: list[BaseException] = []
        workers: list[Future[None]] = []
        active = [1]  # pullers at work now, this thread included

        def may_grow() -> None:
            with lock:
                if failed.is_set() or active[0] >= self.concurrency:
                    return
                active[0] += 1
                workers.append(self._helpers_of(sub_app_id).submit(work))

        def work() -> None:
            try:
                while not (self.stopping.is_set() or failed.is_set()):
                    batch = self._pull(sub_app_id)
                    if not batch:
                        with lock:
                            total.pulls += 1
                        return
                    if len(batch) >= FULL_BATCH:
                        may_grow()
                    part = self.handle(batch)
                    with lock:
                        total.add(part)
            except BaseException as error:  # noqa: BLE001 (re-raised by drain once all workers end)
                failed.set()
                with lock:
                    errors.append(error)
            finally:
                with lock:
                    active[0] -= 1

        work()
        while True:
            with lock:
                pending = [w for w in workers if not w.done()]
            if not pending:
                break
            for worker in pending:
                worker.result()
        if errors:
            raise errors[0]
        return total

    def _pause(self, seconds: float) -> None:
        """Sleep between retries, cut short by a stop request."""
        self.stopping.wait(seconds)

    def _pull(self, sub_app_id: int | None) -> Batch:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientSourceError),
            stop=stop_after_attempt(PULL_ATTEMPTS) | stop_when_event_set(self.stopping),
            wait=wait_random_exponential(multiplier=0.2, max=5.0),
            sleep=self._pause,
            before_sleep=lambda state: log.debug(
                "pull retry",
                sub_app_id=sub_app_id,
                attempt=state.attempt_number,
                error=_outcome_error(state),
            ),
            reraise=True,
        )
        return retrying(self.source.pull, sub_app_id)

    # -- one batch -----------------------------------------------------------------------

    def handle(self, batch: Batch) -> DrainResult:
        """Store one batch in one transaction, then confirm its handles within the budget."""
        started = time.monotonic()
        received_at = datetime.now(UTC)
        events = [parse_entry(entry, batch.sub_app_id) for entry in batch.entries]
        # StorageError: nothing is confirmed, the events come back.
        saved = self.store.save(events, received_at, holder=self.holder)
        handles = [_raw_handle(entry) for entry in batch.entries]
        confirmable = [
            (handle, row_id)
            for handle, row_id in zip(handles, saved.row_ids, strict=True)
            if handle is not None
        ]
        # Without a handle nothing can be confirmed: let go at once.
        outcome = _Settlement(
            released=[
                Release(row_id, received_at)
                for handle, row_id in zip(handles, saved.row_ids, strict=True)
                if handle is None
            ]
        )
        try:
            for start in range(0, len(confirmable), MAX_CONFIRM_HANDLES):
                chunk = confirmable[start : start + MAX_CONFIRM_HANDLES]
                if self._confirm(batch, [handle for handle, _ in chunk]):
                    outcome.confirmed.extend(row_id for _, row_id in chunk)
                else:
                    outcome.released.extend(Release(row_id, received_at) for _, row_id in chunk)
        finally:
            # Even when a later chunk failed: what is settled is recorded.
            if outcome:
                self._settle(outcome)
        confirmed = len(outcome.confirmed)
        result = DrainResult(
            pulled=len(events),
            stored=saved.stored,
            duplicates=saved.duplicates,
            confirmed=confirmed,
            unconfirmed=len(confirmable) - confirmed,
            pulls=1,
        )
        log.info(
            "batch",
            sub_app_id=batch.sub_app_id,
            pulled=result.pulled,
            stored=result.stored,
            duplicates=result.duplicates,
            confirmed=result.confirmed,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            request_id=batch.request_id,
        )
        return result

    def _settle(self, outcome: _Settlement) -> None:
        """Record confirm outcomes. Confirmed events will not come back, and released ones
        must be let go of, so when the database fails right now they wait here and are
        recorded with a later batch."""
        with self._unsettled_lock:
            waiting = self._unsettled
            self._unsettled = _Settlement()
        pending = _Settlement(
            waiting.confirmed + outcome.confirmed, waiting.released + outcome.released
        )
        try:
            self.store.settle(pending.confirmed, pending.released, holder=self.holder)
        except StorageError as error:
            with self._unsettled_lock:
                self._unsettled.confirmed.extend(pending.confirmed)
                self._unsettled.released.extend(pending.released)
                count = len(self._unsettled)
            log.warning(
                "confirm outcomes to be recorded later",
                waiting=count,
                error=describe(error),
            )

    def _confirm(self, batch: Batch, handles: list[str]) -> bool:
        """True when the service took the handles. Retries transient failures until the
        budget that started with the pull's answer is spent, then gives up on them."""
        deadline = batch.answered_at + self.confirm_budget_seconds
        ambiguous = False
        retrying = Retrying(
            retry=retry_if_exception_type(TransientSourceError),
            stop=_stop_at(deadline),
            wait=wait_random_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        self.source.confirm(batch.sub_app_id, handles)
                    except TransientSourceError as error:
                        ambiguous = ambiguous or _is_ambiguous(error)
                        raise
        except HandlesRejectedError as error:
            if ambiguous:
                # An earlier attempt went through but its answer was lost.
                return True
            log.info(
                "handles expired before confirm; the events will come back and dedupe",
                sub_app_id=batch.sub_app_id,
                handles=len(handles),
                error=describe(error),
            )
            return False
        except TransientSourceError as error:
            log.warning(
                "confirm budget spent; the events will come back and dedupe",
                sub_app_id=batch.sub_app_id,
                handles=len(handles),
                budget_seconds=self.confirm_budget_seconds,
                error=describe(error),
            )
            return False
        return True
