"""One drain of an application, pipelined: pullers pull and parse, the store worker writes,
the confirmer confirms, and a puller is already pulling the next batch while the last one is
stored and confirmed. As many pullers as the answers warrant (`pacing.PullerLimit`): one long
poll when idle, more while answers come back full. A drain ends when a pull comes back empty
and every batch it pulled is settled. Never confirms an event before its batch committed."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Final

from vodpoller.confirmer import Confirmer
from vodpoller.errors import SourceError, TransientSourceError, describe
from vodpoller.events import Event, parse_entry
from vodpoller.logs import get_logger
from vodpoller.metrics import Metrics
from vodpoller.pacing import AdaptiveRate, PullerLimit, Stopped
from vodpoller.source import Batch, EventSource
from vodpoller.store import Reject, Release
from vodpoller.storer import StoreJob, Storer, Ticket, Writer

log = get_logger(__name__)

FULL_BATCH: Final = 16  # PullEvents answers at most 16 events: a full answer means more wait
MAX_SENDERS: Final = 64  # the most pullers per application and confirm senders there can be
PULL_ATTEMPTS: Final = 5
PULL_RETRY_FIRST_SECONDS: Final = 0.2
PULL_RETRY_MAX_SECONDS: Final = 5.0
FLUSH_SECONDS: Final = 5.0
PROGRESS_SECONDS: Final = 10.0  # a long drain says how it goes this often


@dataclass
class DrainResult:
    pulled: int = 0
    stored: int = 0
    duplicates: int = 0
    confirmed: int = 0
    unconfirmed: int = 0  # handles given up on: those events come back and find their rows
    pulls: int = 0
    rejected: int = 0  # entries kept in vod_rejects (unparseable, or refused by the database)

    def add(self, other: DrainResult) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return (
            f"pulled={self.pulled} stored={self.stored} duplicates={self.duplicates} "
            f"confirmed={self.confirmed}"
        )


def _result_of(ticket: Ticket) -> DrainResult:
    return DrainResult(
        pulled=ticket.pulled,
        stored=ticket.stored,
        duplicates=ticket.duplicates,
        confirmed=ticket.confirmed,
        unconfirmed=ticket.refused + ticket.not_sent,
        pulls=1,
        rejected=ticket.rejected,
    )


@dataclass(frozen=True)
class Rates:
    """One adaptive token bucket per API action, shared by every application."""

    pull: AdaptiveRate
    confirm: AdaptiveRate

    @classmethod
    def per_second(cls, rate: float) -> Rates:
        return cls(AdaptiveRate(rate), AdaptiveRate(rate))


class _Drain:
    """The pullers of one drain and what they pulled."""

    def __init__(self, maximum: int):
        self.limit = PullerLimit(maximum)
        self.lock = threading.Lock()
        self.active = 0
        self.pulls = 0
        self.pulled = 0
        self.started = time.monotonic()
        self.next_progress = self.started + PROGRESS_SECONDS
        self.tickets: list[Ticket] = []
        self.helpers: list[Future[None]] = []
        self.errors: list[BaseException] = []
        self.failed = threading.Event()


class Poller:
    """Drains applications; one drain per application at a time is the caller's rule (the
    scheduler's `max_instances=1`). `close` settles everything in flight."""

    def __init__(
        self,
        source: EventSource,
        store: Writer,
        *,
        concurrency: int = 32,
        confirm_budget_seconds: float = 30.0,
        stop: threading.Event | None = None,
        holder: str | None = None,
        rates: Rates | None = None,
        metrics: Metrics | None = None,
        progressed: Callable[[int | None], None] | None = None,
    ):
        self.source = source
        self.store = store
        self.concurrency = concurrency
        self.confirm_budget_seconds = confirm_budget_seconds
        self.stopping = stop or threading.Event()
        self.holder = holder
        self.rates = rates or Rates.per_second(100.0)
        self.metrics = metrics or Metrics()
        # Told of every answer, empty ones included: the watchdog's sign of life.
        self.progressed = progressed
        self.confirmer = Confirmer(
            source,
            self._settle,
            senders=MAX_SENDERS,
            rate=self.rates.confirm,
            metrics=self.metrics,
        )
        self.storer = Storer(
            store, self.confirmer, holder=holder, capacity=2 * MAX_SENDERS, metrics=self.metrics
        )
        # Extra pullers, a pool per application so that a busy one never starves another.
        self._helpers: dict[int | None, ThreadPoolExecutor] = {}
        self._helpers_lock = threading.Lock()
        self._closed = False

    def _settle(self, confirmed: Sequence[int], released: Sequence[Release]) -> None:
        """Confirm outcomes go to the store worker (built after the confirmer)."""
        self.storer.settle(confirmed, released)

    def _helpers_of(self, sub_app_id: int | None) -> ThreadPoolExecutor:
        with self._helpers_lock:
            pool = self._helpers.get(sub_app_id)
            if pool is None:
                # Threads start only when needed: the size allows a reload that raises
                # `concurrency` without a restart.
                pool = self._helpers[sub_app_id] = ThreadPoolExecutor(
                    max_workers=MAX_SENDERS,
                    thread_name_prefix=f"pull-{sub_app_id or 'default'}",
                )
            return pool

    def close(self) -> None:
        """Stop the helpers; store and confirm what is in flight; record every outcome."""
        if self._closed:
            return
        self._closed = True
        with self._helpers_lock:
            pools = list(self._helpers.values())
        for pool in pools:
            pool.shutdown(wait=True)
        self.storer.close()
        self.confirmer.close()

    # -- one drain -----------------------------------------------------------------------

    def drain(self, sub_app_id: int | None) -> DrainResult:
        """Pull until a pull comes back empty, then wait for every batch of the drain to be
        settled. Raises the first error (a pull that failed every try, a batch that did not
        commit) once all of it ended."""
        drain = _Drain(self.concurrency)
        started = drain.started
        with drain.lock:
            drain.active = 1
        self._pull_loop(sub_app_id, drain)
        while True:
            with drain.lock:
                pending = [helper for helper in drain.helpers if not helper.done()]
            if not pending:
                break
            for helper in pending:
                helper.result()
        total = DrainResult(pulls=drain.pulls - len(drain.tickets))
        errors = list(drain.errors)
        for ticket in drain.tickets:
            ticket.wait()
            if ticket.error is not None:
                errors.append(ticket.error)
            total.add(_result_of(ticket))
        if drain.tickets:
            # What the confirms did is recorded before the drain reports it (unless the
            # database is failing right now: then it is recorded with a later write).
            self.storer.flush(FLUSH_SECONDS)
        if total.pulled:
            log.info(
                "drained",
                sub_app_id=sub_app_id,
                pulled=total.pulled,
                stored=total.stored,
                duplicates=total.duplicates,
                confirmed=total.confirmed,
                unconfirmed=total.unconfirmed,
                pulls=total.pulls,
                seconds=round(time.monotonic() - started, 3),
            )
        if errors:
            raise errors[0]
        return total

    def _pull_loop(self, sub_app_id: int | None, drain: _Drain) -> None:
        """One puller: pull, hand over, pull again; bring in another puller while answers
        come back full; leave when an answer is short (unless last) or empty."""
        try:
            while not (self.stopping.is_set() or drain.failed.is_set()):
                with drain.lock:
                    if drain.active > drain.limit.limit:
                        return  # fewer pullers wanted now
                pulled = self._pull(sub_app_id, drain)
                if pulled is None:
                    return  # stopped while waiting
                batch, waited = pulled
                with drain.lock:
                    drain.pulls += 1
                if not batch:
                    drain.limit.empty_answer()
                    return
                ticket = self._hand_over(batch)
                with drain.lock:
                    drain.tickets.append(ticket)
                    drain.pulled += len(batch)
                    report = time.monotonic() >= drain.next_progress
                    if report:
                        drain.next_progress += PROGRESS_SECONDS
                if report:
                    log.info(
                        "draining",
                        sub_app_id=sub_app_id,
                        pulled=drain.pulled,
                        pullers=drain.active,
                        seconds=round(time.monotonic() - drain.started, 1),
                    )
                if len(batch) >= FULL_BATCH:
                    self._maybe_grow(sub_app_id, drain, waited)
                else:
                    drain.limit.short_answer()
                    with drain.lock:
                        if drain.active > 1:
                            return
        except BaseException as error:  # noqa: BLE001 (raised by drain once all of it ended)
            drain.failed.set()
            with drain.lock:
                drain.errors.append(error)
        finally:
            with drain.lock:
                drain.active -= 1

    def _maybe_grow(self, sub_app_id: int | None, drain: _Drain, waited: float) -> None:
        with drain.lock:
            wanted = drain.limit.full_answer(active=drain.active, waited_for_rate=waited > 0)
            if drain.active >= wanted or self.stopping.is_set() or drain.failed.is_set():
                return
            drain.active += 1
            try:
                helper = self._helpers_of(sub_app_id).submit(self._pull_loop, sub_app_id, drain)
            except RuntimeError:  # the pool is shut down: closing
                drain.active -= 1
                return
            drain.helpers.append(helper)

    def _pull(self, sub_app_id: int | None, drain: _Drain) -> tuple[Batch, float] | None:
        """One answer, with its wait for the rate limit; transient failures are tried again
        (a few times, with random exponential pauses). None when stopped meanwhile."""
        attempt = 0
        while True:
            attempt += 1
            try:
                waited = self.rates.pull.acquire(self.stopping)
            except Stopped:
                return None
            sent = time.monotonic()
            try:
                batch = self.source.pull(sub_app_id)
            except SourceError as error:
                self.metrics.api_error("PullEvents", error.code)
                if not isinstance(error, TransientSourceError):
                    raise
                if (error.code or "").startswith("RequestLimitExceeded"):
                    self.rates.pull.throttled()
                    drain.limit.throttled()
                if attempt >= PULL_ATTEMPTS:
                    raise
                pause = random.uniform(
                    0, min(PULL_RETRY_MAX_SECONDS, PULL_RETRY_FIRST_SECONDS * 2**attempt)
                )
                log.debug(
                    "pull retry",
                    sub_app_id=sub_app_id,
                    attempt=attempt,
                    error=describe(error),
                )
                if self.stopping.wait(pause):
                    return None
                continue
            self.rates.pull.succeeded()
            self.metrics.pulled(sub_app_id, len(batch), time.monotonic() - sent)
            if self.progressed is not None:
                self.progressed(sub_app_id)
            return batch, waited

    def _hand_over(self, batch: Batch) -> Ticket:
        """Parse the batch and give it to the store worker (which may make us wait). The
        handles go back to VOD exactly as received."""
        events: list[Event] = []
        handles: list[str | None] = []
        rejects: list[Reject] = []
        for delivery in batch.deliveries:
            if delivery.entry is None or delivery.problem is not None:
                reason = delivery.problem or "not an object"
                rejects.append(Reject(delivery.text, delivery.handle, reason))
                continue
            try:
                events.append(parse_entry(delivery.entry, batch.sub_app_id, delivery.text))
            except Exception as error:
                log.error("an entry could not be parsed", exc_info=error)
                reason = f"vodpoller could not parse it: {type(error).__name__}"
                rejects.append(Reject(delivery.text, delivery.handle, reason))
                continue
            handles.append(delivery.handle)
        ticket = Ticket(len(batch.deliveries))
        self.storer.submit(
            StoreJob(
                sent_at=batch.sent_at,
                sub_app_id=batch.sub_app_id,
                events=events,
                handles=handles,
                received_at=datetime.now(UTC),
                deadline=batch.sent_at + self.confirm_budget_seconds,
                ticket=ticket,
                request_id=batch.request_id,
                rejects=rejects,
            )
        )
        return ticket
