"""The daemon: one APScheduler job per application, each run a drain; the next run
`poll.interval_seconds` after a drain ends (longer while errors repeat); graceful stop."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from vodpoller.errors import VodpollerError, describe
from vodpoller.logs import get_logger
from vodpoller.poller import Poller
from vodpoller.signals import on_stop

log = get_logger(__name__)


class _Streak:
    """Consecutive failures of one application, so that a streak is logged once."""

    def __init__(self) -> None:
        self.failures = 0
        self.started = 0.0
        self.last_error = ""


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
        self._streaks = {app: _Streak() for app in applications}
        self._crash: BaseException | None = None
        self._stopper: threading.Thread | None = None
        self._lock = threading.Lock()

    @staticmethod
    def job_id(app: int | None) -> str:
        return f"drain-{'default' if app is None else app}"

    def _schedule(self, app: int | None, delay: float) -> None:
        self.scheduler.add_job(
            self._run,
            "date",
            run_date=datetime.now(self.scheduler.timezone) + timedelta(seconds=delay),
            args=[app],
            id=self.job_id(app),
            replace_existing=True,
        )

    def _delay_after(self, streak: _Streak) -> float:
        if not streak.failures:
            return self.interval_seconds
        backoff = max(self.interval_seconds, 1.0) * 2.0 ** (streak.failures - 1)
        return min(backoff, self.max_backoff_seconds)

    def _run(self, app: int | None) -> None:
        streak = self._streaks[app]
        try:
            self.poller.drain(app)
        except VodpollerError as error:
            self._failed(app, streak, error)
        except BaseException as error:
            # A bug, not a fault of VOD or the database: stop, exit 1, let systemd restart us.
            log.critical("unexpected error: stopping", sub_app_id=app, exc_info=error)
            self._crash = error
            self.stop()
            return
        else:
            if streak.failures:
                log.info(
                    "recovered",
                    sub_app_id=app,
                    failures=streak.failures,
                    seconds=round(time.monotonic() - streak.started, 1),
                )
                streak.failures = 0
                streak.last_error = ""
        if not self.poller.stopping.is_set():
            self._schedule(app, self._delay_after(streak))

    def _failed(self, app: int | None, streak: _Streak, error: VodpollerError) -> None:
        text = describe(error)
        kind = type(error).__name__
        if not streak.failures:
            streak.started = time.monotonic()
        streak.failures += 1
        if streak.failures == 1 or text.split(" (RequestId")[0] != streak.last_error:
            log.error(
                "drain failed; retrying (logged once per streak)",
                sub_app_id=app,
                kind=kind,
                error=text,
                failures=streak.failures,
            )
        else:
            log.debug("drain failed again", sub_app_id=app, kind=kind, failures=streak.failures)
        streak.last_error = text.split(" (RequestId")[0]

    def stop(self) -> None:
        """Stop pulling; the batches in flight are stored and confirmed; `run` then returns."""
        with self._lock:
            if self._stopper is not None:
                return
            self.poller.stopping.set()
            # shutdown(wait=True) blocks until running drains end: not in a signal handler.
            self._stopper = threading.Thread(
                target=self.scheduler.shutdown, kwargs={"wait": True}, name="stopper"
            )
            self._stopper.start()

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
            self.scheduler.start()
            if self._stopper is not None:
                self._stopper.join()
        self.poller.close()
        log.info("stopped")
        return 1 if self._crash is not None else 0
