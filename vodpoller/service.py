"""The daemon: one APScheduler job per application, each run a drain; the next run
`poll.interval_seconds` after a drain ends (longer while errors repeat); graceful stop."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.blocking import BlockingScheduler

from vodpoller.errors import VodpollerError, describe
from vodpoller.logs import get_logger
from vodpoller.poller import Poller
from vodpoller.signals import on_stop

log = get_logger(__name__)


MAX_DOUBLINGS = 30  # 2**30 times the interval is beyond any max_backoff_seconds


class _Streak:
    """Consecutive failures of one application, so that a streak is logged once."""

    def __init__(self) -> None:
        self.failures = 0
        self.started = 0.0
        self.kind = ""


def _kind(error: VodpollerError) -> str:
    """What makes two failures "the same": the class and the API code, not the message
    (which carries batch sizes and request ids)."""
    code = getattr(error, "code", None)
    return f"{type(error).__name__}:{code}" if code else type(error).__name__


class Service:
    def __init__(
        self,
        poller: Poller,
        applications: tuple[int | None, ...],
        *,
        interval_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
    ):
        self.poller = poller
        self.applications = applications
        self.interval_seconds = interval_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=len(applications))},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone="UTC",
        )
        # The next run is planned when APScheduler reports the previous one done, when it no
        # longer counts as running (planning it from inside the job could see it skipped).
        self.scheduler.add_listener(self._plan_next, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
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
        try:
            app = self._apps_by_job.pop(event.job_id)
            if not self.poller.stopping.is_set():
                self._schedule(app, self._next_delay[app])
        finally:
            with self._settled:
                self._in_flight -= 1
                self._settled.notify_all()

    def _delay_after(self, streak: _Streak) -> float:
        if not streak.failures:
            return self.interval_seconds
        doublings = min(streak.failures - 1, MAX_DOUBLINGS)
        return min(max(self.interval_seconds, 1.0) * 2.0**doublings, self.max_backoff_seconds)

    def _run(self, app: int | None) -> None:
        with self._settled:
            self._in_flight += 1
        streak = self._streaks[app]
        try:
            result = self.poller.drain(app)
        except VodpollerError as error:
            self._failed(app, streak, error)
        except BaseException as error:
            # A bug, not a fault of VOD or the database: stop, exit 1, let systemd restart us.
            log.critical("unexpected error: stopping", sub_app_id=app, exc_info=error)
            self._crash = error
            self.stop()
        else:
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

    def _failed(self, app: int | None, streak: _Streak, error: VodpollerError) -> None:
        kind = _kind(error)
        if not streak.failures:
            streak.started = time.monotonic()
        streak.failures += 1
        if streak.failures == 1 or kind != streak.kind:
            log.error(
                "drain failed; retrying (logged once per streak)",
                sub_app_id=app,
                kind=kind,
                error=describe(error),
                failures=streak.failures,
            )
        else:
            log.debug("drain failed again", sub_app_id=app, kind=kind, failures=streak.failures)
        streak.kind = kind

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
        """Block until stopped; 0 after a graceful stop, 1 after an unexpected error."""
        for app in self.applications:
            self._schedule(app, 0)
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
        return 1 if self._crash is not None else 0
