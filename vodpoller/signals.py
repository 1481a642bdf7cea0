"""SIGTERM/SIGINT as context managers that restore the previous handlers: `on_stop` for the
daemon (the first signal asks for a graceful stop, a second one exits at once) and
`until_stopped` for commands that simply run until told to stop."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from vodpoller import entry
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
    # A signal that came while the program was still starting (entry.py) counts as the first.
    if entry.early:
        handle(entry.early.pop(0), None)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


@contextlib.contextmanager
def on_reload(callback: Callable[[], None], *, install: bool = True) -> Iterator[None]:
    """SIGHUP (`systemctl reload`) calls `callback` in a thread of its own: reading and
    applying a file is no work for a signal handler. A reload asked for while one runs waits
    for it. The previous handler comes back on exit; `install=False` (or any thread but the
    main one) leaves the handlers alone."""
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return
    one_at_a_time = threading.Lock()

    def reload() -> None:
        with one_at_a_time:
            callback()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=reload, name="reload", daemon=True).start()

    previous = signal.signal(signal.SIGHUP, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
