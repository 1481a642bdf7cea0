"""The daemon's schedule: one APScheduler job per application, each run a drain, the next run
`poll.interval_seconds` after a drain ends (longer while errors repeat); the daily retention
job; what the drains did, for systemd's STATUS, its watchdog and the heartbeat; and a stop
that lets the drains in flight finish. Fatal errors (credentials, permissions, a wrong
SubAppId) stop the daemon: only someone can fix those, and systemd shows it failed."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_SCHEDULER_STARTED,
    JobExecutionEvent,
    SchedulerEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.blocking import BlockingScheduler

from vodpoller.classify import remedy
from vodpoller.daemons import Progress
from vodpoller.errors import FatalSourceError, VodpollerError, describe
from vodpoller.logs import get_logger
from vodpoller.poller import DrainResult, Poller
from vodpoller.signals import on_stop

log = get_logger(__name__)

MAX_DOUBLINGS: Final = 30  # 2**30 times the interval is beyond any max_backoff_seconds
STREAK_REPORT_SECONDS: Final = 300.0  # a streak of errors is logged again this often
RETENTION_FIRST_SECONDS: Final = 60.0  # the first purge a minute after start, then daily
EXIT_STOPPED: Final = 0
EXIT_FAILED: Final = 1


class _Streak:
    """Consecutive failures of one application: logged when it begins, every few minutes
    while it lasts, and once when it ends."""

    def __init__(self) -> None:
        self.failures = 0
        self.started = 0.0
        self.reported = 0.0
        self.kind = ""


def _kind(error: VodpollerError) -> str:
    """What makes two failures "the same": the class and the API code, not the message
    (which carries batch sizes and request ids)."""
    code = getattr(error, "code", None)
    return f"{type(error).__name__}:{code}" if code else type(error).__name__


@dataclass
class Hooks:
    """What the daemon around the schedule wants to hear; each is optional."""

    started: Callable[[], None] | None = None  # the scheduler runs: READY=1
    progressed: Callable[[int | None, float], None] | None = None  # (app, pause): watchdog
    changed: Callable[[], None] | None = None  # after each drain: STATUS, figures


class Figures:
    """Running totals and the latest poll and error, for STATUS, the heartbeat and status.
    `live`: the totals are counted batch by batch (`counted`), not when a drain ends: a drain
    of a large backlog lasts minutes."""

    def __init__(self, *, live: bool = False) -> None:
        self.live = live
        self._lock = threading.Lock()
        self.total = DrainResult()
        self.last_poll_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None

    def polled(self) -> None:
        """A `PullEvents` answered (an empty long poll too). Recorded as it happens, not when
        the drain ends: a drain of a large backlog lasts minutes, and `check` would take a
        daemon that is busy draining for one that stopped polling."""
        with self._lock:
            self.last_poll_at = datetime.now(UTC)

    def counted(
        self, *, pulled: int = 0, stored: int = 0, duplicates: int = 0, confirmed: int = 0
    ) -> None:
        with self._lock:
            self.total.add(
                DrainResult(
                    pulled=pulled, stored=stored, duplicates=duplicates, confirmed=confirmed
                )
            )

    def drained(self, result: DrainResult) -> None:
        with self._lock:
            if not self.live:
                self.total.add(result)
            self.last_poll_at = datetime.now(UTC)

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.last_error = describe(error)
            self.last_error_at = datetime.now(UTC)

    def progress(self) -> Progress:
        with self._lock:
            return Progress(
                pulled=self.total.pulled,
                stored=self.total.stored,
                duplicates=self.total.duplicates,
                confirmed=self.total.confirmed,
                last_poll_at=self.last_poll_at,
                last_error=self.last_error,
                last_error_at=self.last_error_at,
            )


class Service:
    def __init__(
        self,
        poller: Poller,
        applications: tuple[int | None, ...],
        *,
        interval_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        hooks: Hooks | None = None,
        retention: Callable[[threading.Event], object] | None = None,
        figures: Figures | None = None,
    ):
        self.poller = poller
        self.applications = applications
        self.interval_seconds = interval_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.hooks = hooks or Hooks()
        self.figures = figures or Figures()
        self.retention = retention
        self.scheduler = BlockingScheduler(
            # One thread per application, and one for the retention job.
            executors={"default": ThreadPoolExecutor(max_workers=len(applications) + 1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone="UTC",
        )
        # The next run is planned when APScheduler reports the previous one done, when it no
        # longer counts as running (planning it from inside the job could see it skipped).
        self.scheduler.add_listener(self._plan_next, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.scheduler.add_listener(self._started, EVENT_SCHEDULER_STARTED)
        self._apps_by_job: dict[str, int | None] = {}
        self._runs = itertools.count(1)
        self._streaks = {app: _Streak() for app in applications}
        self._next_delay = dict.fromkeys(applications, interval_seconds)
        self._crash: BaseException | None = None
        self._stopper: threading.Thread | None = None
        self._returned = threading.Event()  # the scheduler's loop has ended (or never began)
        self._lock = threading.Lock()  # guards _stopper
        # Runs from their start to the end of planning the next one. Shutdown waits for none
        # to be left: add_job during shutdown(wait=True) would wait on a lock that shutdown
        # holds while it waits for the job, a deadlock. No lock of ours is held across
        # add_job: APScheduler may call the listener with its own job-store lock held.
        self._in_flight = 0
        self._settled = threading.Condition()

    # -- planning --------------------------------------------------------------------------

    def _schedule(self, app: int | None, delay: float) -> None:
        # A fresh id per run: APScheduler removes a fired date job by its id after submitting
        # it, which could otherwise remove the next run planned by a very quick drain.
        job_id = f"drain-{'default' if app is None else app}-{next(self._runs)}"
        self._apps_by_job[job_id] = app
        self.scheduler.add_job(
            self._run,
            "date",
            run_date=datetime.now(self.scheduler.timezone) + timedelta(seconds=delay),
            args=[app],
            id=job_id,
        )

    def _plan_next(self, event: JobExecutionEvent) -> None:
        if event.job_id not in self._apps_by_job:
            return  # the retention job: APScheduler plans its next run itself
        try:
            app = self._apps_by_job.pop(event.job_id)
            if not self.poller.stopping.is_set():
                self._schedule(app, self._next_delay[app])
        finally:
            with self._settled:
                self._in_flight -= 1
                self._settled.notify_all()

    def _started(self, _event: SchedulerEvent) -> None:
        if self.hooks.started is not None:
            self.hooks.started()

    def _delay_after(self, streak: _Streak) -> float:
        if not streak.failures:
            return self.interval_seconds
        doublings = min(streak.failures - 1, MAX_DOUBLINGS)
        return min(max(self.interval_seconds, 1.0) * 2.0**doublings, self.max_backoff_seconds)

    # -- one run ---------------------------------------------------------------------------

    def _run(self, app: int | None) -> None:
        with self._settled:
            self._in_flight += 1
        streak = self._streaks[app]
        try:
            result = self.poller.drain(app)
        except FatalSourceError as error:
            # Credentials, permissions, a wrong SubAppId: no retry helps until someone acts.
            log.error(
                "fatal: stopping; fix this, then systemd restarts the service",
                sub_app_id=app,
                error=describe(error),
                fix=remedy(error),
            )
            self.figures.failed(error)
            self._crash = error
            self.stop()
        except VodpollerError as error:
            self._failed(app, streak, error)
            self.figures.failed(error)
        except BaseException as error:
            # A bug, not a fault of VOD or the database: stop, exit 1, let systemd restart us.
            log.critical("unexpected error: stopping", sub_app_id=app, exc_info=error)
            self._crash = error
            self.stop()
        else:
            self.figures.drained(result)
            # An empty drain proves the API works, not the database: it ends a streak of
            # source errors, but a streak of storage errors only once something was stored.
            proven = result.pulled > 0 or not streak.kind.startswith("StorageError")
            if streak.failures and proven:
                log.info(
                    "recovered",
                    sub_app_id=app,
                    failures=streak.failures,
                    seconds=round(time.monotonic() - streak.started, 1),
                )
                streak.failures = 0
                streak.kind = ""
        self._next_delay[app] = self._delay_after(streak)
        log.debug("next drain planned", sub_app_id=app, in_seconds=self._next_delay[app])
        # A handled failure is progress too: the loop is alive and the next run is planned.
        if self.hooks.progressed is not None:
            self.hooks.progressed(app, self._next_delay[app])
        if self.hooks.changed is not None:
            self.hooks.changed()

    def _failed(self, app: int | None, streak: _Streak, error: VodpollerError) -> None:
        kind = _kind(error)
        now = time.monotonic()
        if not streak.failures:
            streak.started = now
        streak.failures += 1
        if streak.failures == 1 or kind != streak.kind:
            streak.reported = now
            log.warning(
                "drain failed; retrying (logged when a streak begins and every few minutes)",
                sub_app_id=app,
                kind=kind,
                error=describe(error),
                failures=streak.failures,
            )
        elif now - streak.reported >= STREAK_REPORT_SECONDS:
            streak.reported = now
            log.warning(
                "drain still failing; retrying",
                sub_app_id=app,
                kind=kind,
                error=describe(error),
                failures=streak.failures,
                seconds=round(now - streak.started),
            )
        else:
            log.debug("drain failed again", sub_app_id=app, kind=kind, failures=streak.failures)
        streak.kind = kind

    # -- retention ---------------------------------------------------------------------------

    def _retention(self) -> None:
        if self.retention is None:
            return
        try:
            self.retention(self.poller.stopping)
        except VodpollerError as error:
            log.warning("retention purge failed; trying again tomorrow", error=describe(error))

    # -- start and stop ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop pulling; the batches in flight are stored and confirmed; `run` then returns."""
        with self._lock:
            if self._stopper is not None:
                return
            self.poller.stopping.set()
            # shutdown(wait=True) blocks until running drains end: not in a signal handler.
            self._stopper = threading.Thread(target=self._shut_down, name="stopper")
            self._stopper.start()

    def _shut_down(self) -> None:
        # A signal can come just before the scheduler starts: wait for it to be running.
        while not self.scheduler.running:
            if self._returned.wait(0.01):
                return
        with self._settled:
            self._settled.wait_for(lambda: self._in_flight == 0)
        self.scheduler.shutdown(wait=True)

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Block until stopped; 0 after a graceful stop, 1 after a fatal or unexpected error."""
        for app in self.applications:
            self._schedule(app, 0)
        if self.retention is not None:
            self.scheduler.add_job(
                self._retention,
                "interval",
                days=1,
                next_run_time=datetime.now(UTC) + timedelta(seconds=RETENTION_FIRST_SECONDS),
                id="retention",
            )
        log.info(
            "started",
            applications=["default" if a is None else a for a in self.applications],
            concurrency=self.poller.concurrency,
        )
        with on_stop(self.stop, install=install_signal_handlers):
            if not self.poller.stopping.is_set():
                try:
                    self.scheduler.start()
                except JobLookupError:
                    # APScheduler's loop can trip over a fired job while shutdown empties the
                    # job store; harmless once we are stopping.
                    if not self.poller.stopping.is_set():
                        raise
            self._returned.set()
            if self._stopper is not None:
                self._stopper.join()
        self.poller.close()
        log.info("stopped")
        return EXIT_FAILED if self._crash is not None else EXIT_STOPPED
