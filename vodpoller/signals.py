"""Signals as context managers that restore the previous handlers: `on_stop` for the daemon
(the first SIGTERM/SIGINT asks for a graceful stop, a second one exits at once), `on_hangup`
(SIGHUP, whose default action would kill it) and `until_stopped` for commands that simply run
until told to stop."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from vodpoller.logs import get_logger

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_AT_ONCE = 1


@contextlib.contextmanager
def on_stop(callback: Callable[[], None], *, install: bool = True) -> Iterator[None]:
    """Call `callback` on the first stop signal; on the second, `os._exit` without cleanup.
    `install=False` (or any thread but the main one) leaves the handlers alone, for tests."""
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 1:
            log.warning("second stop signal: exiting at once", signal=name)
            os._exit(EXIT_AT_ONCE)
        log.info("stop signal: finishing the batches in flight", signal=name)
        callback()

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def on_hangup(*, install: bool = True) -> Iterator[None]:
    """SIGHUP (`systemctl reload`, `kill -HUP`) is logged and ignored until the configuration
    can be reloaded. `install=False` (or any thread but the main one) leaves it alone."""
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(_signum: int, _frame: FrameType | None) -> None:
        log.warning("SIGHUP: reload is not supported yet; ignored")

    previous = signal.signal(signal.SIGHUP, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


@contextlib.contextmanager
def until_stopped() -> Iterator[threading.Event]:
    """An event that SIGTERM or SIGINT sets (a repeat changes nothing): for commands that
    simply run until told to stop. The previous handlers come back on exit."""
    stopped = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda _signum, _frame: stopped.set())
        for signum in STOP_SIGNALS
    }
    try:
        yield stopped
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
