"""`vodpoller run`: the daemon's whole life. Stop signals count from the first instant (a stop
during start-up ends it cleanly), a database that is down at start is waited for, systemd is
told what happens (READY once the scheduler runs, STATUS, WATCHDOG while every application
makes progress, RELOADING on SIGHUP, STOPPING), metrics are served, and the schedule runs
until a stop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from vodpoller import app, metrics, receiver, retention, signals
from vodpoller.config import Settings
from vodpoller.daemons import Progress
from vodpoller.errors import ConfigError, describe
from vodpoller.logs import get_logger
from vodpoller.notify import Notifier, Watchdog, status_text
from vodpoller.reload import Reloader
from vodpoller.service import Figures, Hooks, Service

log = get_logger(__name__)

STATUS_SECONDS: Final = 5.0  # STATUS= at most this often
# While the database is down at start, ask systemd for this much more start-up time each try.
START_EXTENSION_SECONDS: Final = 90.0


class Tallied(metrics.Metrics):
    """The metrics as configured, and the same counts kept as they happen for STATUS, the
    heartbeat and `vodpoller status` (which must not wait for a drain of minutes to end)."""

    def __init__(self, inner: metrics.Metrics, figures: Figures):
        self.inner = inner
        self.figures = figures
        # Rows may be ready to forward: told after each batch stored and each confirm.
        self.new_rows: Callable[[], None] | None = None

    def _new_rows(self) -> None:
        if self.new_rows is not None:
            self.new_rows()

    def pulled(self, app: int | None, events: int, seconds: float) -> None:
        self.inner.pulled(app, events, seconds)
        self.figures.counted(pulled=events)

    def stored(self, app: int | None, stored: int, duplicates: int) -> None:
        self.inner.stored(app, stored, duplicates)
        self.figures.counted(stored=stored, duplicates=duplicates)
        self._new_rows()

    def quarantined(self, app: int | None, entries: int) -> None:
        self.inner.quarantined(app, entries)

    def confirmed(self, app: int | None, events: int, batch_seconds: float) -> None:
        self.inner.confirmed(app, events, batch_seconds)
        self.figures.counted(confirmed=events)
        self._new_rows()

    def confirm_expired(self, app: int | None, events: int) -> None:
        self.inner.confirm_expired(app, events)

    def api_error(self, action: str, code: str | None) -> None:
        self.inner.api_error(action, code)

    def storage_error(self) -> None:
        self.inner.storage_error()

    def backlog(self, app: int | None, events: int) -> None:
        self.inner.backlog(app, events)

    def callback(self, outcome: str) -> None:
        self.inner.callback(outcome)

    def forwarded(self) -> None:
        self.inner.forwarded()

    def forward_failed(self, reason: str) -> None:
        self.inner.forward_failed(reason)

    def forward_waiting(self, rows: int, lag_seconds: float) -> None:
        self.inner.forward_waiting(rows, lag_seconds)

    def health(self) -> metrics.Health:
        return self.inner.health()


class _Daemon:
    """The parts a signal may reach before, during and after start-up."""

    def __init__(self, settings: Settings, config_path: Path, notifier: Notifier):
        self.settings = settings
        self.config_path = config_path
        self.notifier = notifier
        self.stop = threading.Event()
        self.service: Service | None = None
        self.reloader: Reloader | None = None
        self._status_at = 0.0

    # -- signals -----------------------------------------------------------------------------

    def stop_requested(self) -> None:
        self.notifier.stopping()
        self.stop.set()
        if self.service is not None:
            self.service.stop()

    def reload(self) -> None:
        if self.reloader is None or self.service is None:
            log.warning("SIGHUP while starting up: ignored; send it again once started")
            return
        self.notifier.reloading()
        try:
            found = self.reloader.reload()
        except ConfigError as error:
            log.error("reload failed; the running configuration stays", error=describe(error))
        else:
            if found.live:
                log.info("reloaded", applied=found.live)
            if found.needs_restart:
                log.warning(
                    "changes that need a restart were not applied", keys=found.needs_restart
                )
            if not (found.live or found.needs_restart):
                log.info("reloaded: nothing changed")
        finally:
            self.notifier.ready()

    def _apply(self, settings: Settings) -> None:
        """[poll] and [logging] into the running daemon; nothing in flight is dropped."""
        app.configure_logging(settings)
        service = self.service
        if service is None:
            return
        poll = settings.poll
        service.interval_seconds = poll.interval_seconds
        service.max_backoff_seconds = poll.max_backoff_seconds
        poller = service.poller
        poller.concurrency = poll.concurrency
        poller.confirm_budget_seconds = poll.confirm_budget_seconds
        poller.rates.pull.set_max_rate(poll.rate_limit_per_second)
        poller.rates.confirm.set_max_rate(poll.rate_limit_per_second)

    # -- systemd -------------------------------------------------------------------------------

    def _waiting_for_database(self, error: str) -> None:
        self.notifier.status(f"waiting for the database: {error}"[:200])
        self.notifier.extend_timeout(START_EXTENSION_SECONDS)

    def _started(self) -> None:
        self.notifier.ready(status_text(0, None))

    def _changed(self) -> None:
        now = time.monotonic()
        if self.service is None or now - self._status_at < STATUS_SECONDS:
            return
        self._status_at = now
        figures = self.service.figures.progress()
        ago = (
            None if figures.last_poll_at is None else time.time() - figures.last_poll_at.timestamp()
        )
        self.notifier.status(status_text(figures.stored + figures.duplicates, ago))

    def _progress(self) -> Progress:
        return self.service.figures.progress() if self.service is not None else Progress()

    # -- the run -------------------------------------------------------------------------------

    def serve(self, run_migrations: bool) -> int:
        settings = self.settings
        applications = settings.vod.applications
        source = app.interruptible(
            lambda: app.make_source(settings), self.stop, "finding credentials"
        )
        watchdog = Watchdog.for_environment(self.notifier, applications)
        figures = Figures(live=True)

        def pulled(app: int | None) -> None:
            # Each answered pull: the heartbeat's last poll, and progress for the watchdog.
            figures.polled()
            if watchdog is not None:
                watchdog.progress.progressed(app)

        with (
            metrics.serving(
                settings.metrics,
                applications,
                backlog=source.backlog,
                receiving=settings.receiver.address is not None,
                forwarding=bool(settings.forward.url),
            ) as served,
            app.components(
                settings,
                run_migrations=run_migrations,
                command="run",
                stop=self.stop,
                source=source,
                metrics=(tallied := Tallied(served, figures)),
                progressed=pulled,
                progress=self._progress,
                waiting=self._waiting_for_database,
                # Storing in a child process lets a backlog use two cores, not one.
                store_process=settings.poll.store_in_child and (os.cpu_count() or 1) > 1,
            ) as built,
            # After the store is ready; closed before it is.
            receiver.serving(settings.receiver, built.store, built.poller.metrics),
        ):
            days = settings.retention.days
            service = Service(
                built.poller,
                applications,
                interval_seconds=settings.poll.interval_seconds,
                max_backoff_seconds=settings.poll.max_backoff_seconds,
                hooks=Hooks(
                    started=self._started,
                    progressed=(
                        None
                        if watchdog is None
                        else lambda app_, pause: watchdog.progress.progressed(app_, pause=pause)
                    ),
                    changed=self._changed,
                ),
                retention=(
                    None
                    if days <= 0
                    else lambda stop: retention.purge_older_than(
                        built.store.engine, days, stop=stop
                    )
                ),
                figures=figures,
            )
            self.service = service
            self.reloader = Reloader(self.config_path, settings, self._apply)
            forwarder = app.make_forwarder(
                settings, built.store.engine, metrics=tallied, stop=self.stop
            )
            if forwarder is not None:
                tallied.new_rows = forwarder.wake
                forwarder.start()
            if watchdog is not None:
                watchdog.start()
            try:
                return service.run(install_signal_handlers=False)
            finally:
                if watchdog is not None:
                    watchdog.stop()
                if forwarder is not None:
                    forwarder.stop()


def run(settings: Settings, config_path: Path, *, run_migrations: bool = True) -> int:
    """The daemon until a stop signal: 0 after a graceful stop (start-up included), 1 after a
    fatal or unexpected error."""
    with Notifier.from_environment() as notifier:
        daemon = _Daemon(settings, config_path, notifier)
        with signals.on_stop(daemon.stop_requested), signals.on_reload(daemon.reload):
            try:
                return daemon.serve(run_migrations)
            except app.Interrupted as stopped:
                log.info("stopped during start-up", step=str(stopped))
                return 0
