"""systemd's notify protocol without a dependency (READY, STATUS, RELOADING, STOPPING, WATCHDOG
datagrams to `$NOTIFY_SOCKET`), and a watchdog that pings only while every application makes
progress, so that a hung request, a stuck database call or a dead scheduler gets us restarted."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from vodpoller.logs import get_logger

log = get_logger(__name__)

Application = int | None


class Notifier:
    """Sends notify messages to the service manager; does nothing when not started by one.

    Best effort, as `sd_notify(3)`: a manager that went away must not take the daemon down
    with it, so a failed send is logged once and reported as `False`.
    """

    def __init__(self, address: str | None):
        # "@name" is an abstract socket: a leading NUL byte in the address, no file.
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """`$NOTIFY_SOCKET` (a path or an `@abstract` name); other forms are not ours to use."""
        address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
        if address and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET is neither a path nor an @abstract name: not notifying")
            address = ""
        return cls(address or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of `KEY=value` lines; `True` when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.sendto(message, self.address)
            except OSError as error:
                if not self._failed:
                    log.warning("cannot notify the service manager", error=str(error))
                self._failed = True
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is done: migrations ran, the database answered, the scheduler runs."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """A line for `systemctl status`."""
        return self.send(f"STATUS={text}")

    def reloading(self) -> bool:
        """A reload began; send `ready()` when it is done. The timestamp lets a newer systemd
        tell this reload from an earlier one."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """More time for start-up (or stop) than `TimeoutStartSec=`: a database that is down
        at start is waited for, not given up on."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def watchdog_seconds(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog interval systemd expects pings within (`WatchdogSec=`), or `None` when it
    watches no one, or watches another process (`$WATCHDOG_PID`: a child inherits the variables)."""
    env = os.environ if env is None else env
    text = env.get("WATCHDOG_USEC", "")
    if not text:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(text)
    except ValueError:
        log.warning("WATCHDOG_USEC is not a number: no watchdog pings", value=text)
        return None
    return usec / 1_000_000 if usec > 0 else None


class Progress:
    """When each application last showed that its loop is alive: pure, with an injected clock.

    Report a finished batch, an empty long poll, or the end of a drain (even a failed one: the
    error was handled and the next run is planned) with the pause until the next run. An
    application is lagging when it has not reported within `window` seconds beyond that pause.
    """

    def __init__(
        self,
        applications: Iterable[Application],
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        if window <= 0:
            raise ValueError(f"the window must be more than 0 seconds, not {window}")
        self.window = window
        self._clock = clock
        started = clock()
        # Until its first report an application is due one window after the start.
        self._due = dict.fromkeys(applications, started + window)
        self._lock = threading.Lock()

    def restart(self) -> None:
        """Every application due one window from now, as just after construction: for when
        watching begins later than that (start-up waited for the database)."""
        with self._lock:
            self._due = dict.fromkeys(self._due, self._clock() + self.window)

    def progressed(self, app: Application, *, pause: float = 0.0) -> None:
        """`app` just made progress; its next report is due `pause` + the window from now."""
        with self._lock:
            if app not in self._due:
                raise KeyError(f"unknown application {app!r}")
            self._due[app] = self._clock() + max(pause, 0.0) + self.window

    def lagging(self) -> list[Application]:
        """The applications overdue, in the order they were given."""
        now = self._clock()
        with self._lock:
            return [app for app, due in self._due.items() if now > due]

    def alive(self) -> bool:
        return not self.lagging()


class Watchdog:
    """A thread that sends `WATCHDOG=1` every quarter of the interval while `progress.alive()`.

    It never pings on behalf of a loop that stopped: when an application lags it stays silent
    (and says so once in the log), systemd kills the service after `WatchdogSec=` and restarts
    it. Progress is judged over half the interval, so a stall is caught within 1.5 of it.
    """

    def __init__(self, notifier: Notifier, progress: Progress, interval: float):
        self.notifier = notifier
        self.progress = progress
        self.period = interval / 4
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)
        self.pings = 0

    @classmethod
    def for_environment(
        cls,
        notifier: Notifier,
        applications: Iterable[Application],
        env: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> Watchdog | None:
        """A watchdog over `applications` when systemd asked for one (and can hear it)."""
        interval = watchdog_seconds(env)
        if interval is None or not notifier.enabled:
            return None
        return cls(notifier, Progress(applications, interval / 2, clock=clock), interval)

    def start(self) -> Watchdog:
        """Watch from now: the time spent starting up (a database that was down) is no stall."""
        self.progress.restart()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def beat(self) -> bool:
        """One check: ping when every application is alive. `True` when it pinged."""
        lagging = self.progress.lagging()
        if lagging:
            return False
        self.pings += self.notifier.watchdog()
        return True

    def _loop(self) -> None:
        silent = False
        while not self._stop.is_set():
            pinged = self.beat()
            if not pinged and not silent:
                log.error(
                    "no progress: watchdog pings stop, systemd will restart the service",
                    lagging=[_label(app) for app in self.progress.lagging()],
                    window_seconds=self.progress.window,
                )
            elif pinged and silent:
                log.info("progress again: watchdog pings resume")
            silent = not pinged
            self._stop.wait(self.period)


def status_text(events: int, last_poll_seconds_ago: float | None) -> str:
    """The `STATUS=` line: e.g. "drained 1234 events, last poll 2 s ago"."""
    poll = (
        "no poll yet"
        if last_poll_seconds_ago is None
        else f"last poll {max(0, round(last_poll_seconds_ago))} s ago"
    )
    return f"drained {events} event{'' if events == 1 else 's'}, {poll}"


def _label(app: Application) -> str | int:
    return "default" if app is None else app
