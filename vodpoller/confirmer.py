"""Confirms after commit, pipelined: stored batches come here and sender threads confirm them
while the pullers already pull the next ones. Every confirm is sent within the budget that
started when its pull was sent (VOD leases the events from then), or not at all; at most 16
handles a call; a failure is retried inside the budget. What became of each row (confirmed,
or let go of so that its event comes back) goes to `settle`."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from vodpoller.errors import FatalSourceError, TransientSourceError, describe
from vodpoller.logs import get_logger
from vodpoller.metrics import Metrics
from vodpoller.pacing import AdaptiveRate, Stopped
from vodpoller.source import MAX_CONFIRM_HANDLES, EventSource, HandlesRejectedError
from vodpoller.store import Release

log = get_logger(__name__)

RETRY_FIRST_SECONDS: Final = 0.1
RETRY_MAX_SECONDS: Final = 2.0


@dataclass(frozen=True)
class ConfirmJob:
    """Handles of one stored batch (at most 16) and the rows they belong to, in order."""

    sub_app_id: int | None
    handles: tuple[str, ...]
    row_ids: tuple[int, ...]
    received_at: datetime  # the answer's, as the rows were saved with it
    deadline: float  # monotonic: the pull's send time plus the budget
    # (confirmed, refused or expired, not sent, the fatal error that ended it or None)
    done: Callable[[int, int, int, BaseException | None], None]
    sent_at: float | None = None  # monotonic: when the pull went out (for the metrics)


Settle = Callable[[Sequence[int], Sequence[Release]], None]


class Confirmer:
    """Sender threads fed by `submit`; `close` waits for every job to end (each ends within
    its deadline) and then for the threads."""

    def __init__(
        self,
        source: EventSource,
        settle: Settle,
        *,
        senders: int,
        rate: AdaptiveRate | None = None,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
        metrics: Metrics | None = None,
    ):
        self.source = source
        self.metrics = metrics or Metrics()
        self.settle = settle
        self.rate = rate
        self._clock = clock
        self._pause = pause
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="confirm")
        self._pending = 0
        self._idle = threading.Condition()

    def submit(self, job: ConfirmJob) -> None:
        if not 0 < len(job.handles) <= MAX_CONFIRM_HANDLES:
            raise ValueError(f"a confirm takes 1 to 16 handles, not {len(job.handles)}")
        with self._idle:
            self._pending += 1
        self._pool.submit(self._run, job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has ended."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self.wait_idle()
        self._pool.shutdown(wait=True)

    def _run(self, job: ConfirmJob) -> None:
        fatal: BaseException | None = None
        try:
            outcome = self._confirm(job)
        except FatalSourceError as error:
            self.metrics.api_error("ConfirmEvents", error.code)
            # Credentials, permissions, a wrong SubAppId: the daemon must stop and say so.
            fatal, outcome = error, "refused"
        except BaseException as error:  # a bug: the rows are let go of, and it is logged
            log.critical("confirming failed unexpectedly", exc_info=error)
            fatal, outcome = error, "refused"
        count = len(job.handles)
        if outcome == "confirmed":
            sent_at = job.sent_at if job.sent_at is not None else self._clock()
            self.metrics.confirmed(job.sub_app_id, count, self._clock() - sent_at)
        else:
            self.metrics.confirm_expired(job.sub_app_id, count)
        try:
            if outcome == "confirmed":
                self.settle(job.row_ids, ())
            else:
                self.settle((), [Release(row_id, job.received_at) for row_id in job.row_ids])
        finally:
            job.done(
                count if outcome == "confirmed" else 0,
                count if outcome == "refused" else 0,
                count if outcome == "not sent" else 0,
                fatal,
            )
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _confirm(self, job: ConfirmJob) -> str:  # noqa: PLR0911 (one outcome per way out)
        """'confirmed', 'refused' (expired, or the budget ran out between tries) or 'not
        sent' (the budget was spent before the first try)."""
        ambiguous = False
        attempt = 0
        while True:
            if self._clock() >= job.deadline:
                if attempt == 0:
                    log.warning(
                        "confirm budget spent before the confirm was sent; the events will "
                        "come back and find their rows",
                        sub_app_id=job.sub_app_id,
                        handles=len(job.handles),
                    )
                    return "not sent"
                return "refused"
            attempt += 1
            try:
                if self.rate is not None:
                    self.rate.acquire()
                self.source.confirm(job.sub_app_id, list(job.handles))
            except HandlesRejectedError as error:
                self.metrics.api_error("ConfirmEvents", error.code)
                if ambiguous:
                    return "confirmed"  # an earlier try went through; its answer was lost
                log.info(
                    "handles expired before the confirm; the events will come back and "
                    "find their rows",
                    sub_app_id=job.sub_app_id,
                    handles=len(job.handles),
                    error=describe(error),
                )
                return "refused"
            except TransientSourceError as error:
                # No answer, a gateway's, or one we could not read: it may have been applied.
                ambiguous = ambiguous or (error.ambiguous and not error.never_sent)
                if self.rate is not None and (error.code or "").startswith("RequestLimitExceeded"):
                    self.rate.throttled()
                wait = random.uniform(0, min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2**attempt))
                if self._clock() + wait >= job.deadline:
                    log.warning(
                        "confirm budget spent; the events will come back and find their rows",
                        sub_app_id=job.sub_app_id,
                        handles=len(job.handles),
                        error=describe(error),
                    )
                    # Whether an ambiguous try went through is unknown: the rows are let go
                    # of; if it did, the events do not come back and the rows stay as they are.
                    return "refused"
                self._pause(wait)
                continue
            except Stopped:
                return "refused"
            if self.rate is not None:
                self.rate.succeeded()
            return "confirmed"
