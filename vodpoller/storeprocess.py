"""The store in a process of its own: `vodpoller run` writes the database from a child
process, so that storing and pulling use two cores instead of sharing one interpreter lock.
`StoreProcess.write` is `EventStore.write` across a pipe: one transaction at a time, the
answers and confirm outcomes in, what became of them out. The child does nothing on its own:
it dies with its pipe, so a killed daemon never leaves a writer behind."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from vodpoller import logs
from vodpoller.errors import StorageError, describe
from vodpoller.logs import get_logger
from vodpoller.store import Answer, EventStore, Release, SaveResult, SettleResult

log = get_logger(__name__)

# `spawn`: forking a process that runs threads copies their locks in whatever state they are.
_CONTEXT: Final = multiprocessing.get_context("spawn")
START_SECONDS: Final = 60.0  # the child imports vodpoller and opens the engine


@dataclass(frozen=True)
class _ChildSettings:
    """What the child needs to open the store as the parent would (pickled to it)."""

    url: str
    level: str
    fmt: str
    secrets: tuple[str, ...]
    notify_channel: str


def _serve(
    pipe: Connection, settings: _ChildSettings
) -> None:  # pragma: no cover (runs in the child; tested through StoreProcess)
    """The child: write what comes down the pipe until it closes."""
    # Stop signals are the parent's to handle: it finishes, then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(settings.level, settings.fmt)
    logs.add_secrets(settings.secrets)
    try:
        store = EventStore.connect(settings.url, notify_channel=settings.notify_channel)
    except StorageError as error:
        with contextlib.suppress(OSError):
            pipe.send(("error", describe(error)))
        return
    try:
        pipe.send(("ready", None))
    except OSError:
        store.dispose()
        return  # the parent is gone already
    try:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if message[0] == "close":
                return
            _, answers, confirmed, released, holder = message
            try:
                outcome: tuple[str, Any] = (
                    "ok",
                    store.write(answers, confirmed, released, holder=holder),
                )
            except StorageError as error:
                outcome = ("error", describe(error))
            except Exception as error:  # a bug: reported to the parent, logged here
                log.critical("the store process failed unexpectedly", exc_info=error)
                outcome = ("bug", describe(error))
            try:
                pipe.send(outcome)
            except (EOFError, OSError):
                return
    finally:
        store.dispose()


class StoreProcess:
    """An `EventStore.write` served by a child process; started on first use, started again
    after it died (the batch in hand then fails: it is not confirmed and comes back)."""

    def __init__(
        self,
        url: str,
        *,
        level: str = "info",
        fmt: str = "json",
        secrets: Sequence[str] = (),
        notify_channel: str = "",
    ):
        self._settings = _ChildSettings(url, level, fmt, tuple(secrets), notify_channel)
        self._pipe: Connection | None = None
        self._process: Any = None
        self._lock = threading.Lock()

    def start(self) -> StoreProcess:
        """Start the child now rather than at the first write (it takes a second or two)."""
        with self._lock:
            if self._pipe is None:
                self._start()
        return self

    def _start(self) -> Connection:
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=_serve, args=(child, self._settings), name="vodpoller-store", daemon=True
        )
        process.start()
        child.close()
        if not parent.poll(START_SECONDS):
            process.kill()
            raise StorageError("the store process did not start")
        kind, detail = parent.recv()
        if kind != "ready":
            process.join()
            raise StorageError(f"the store process could not open the database: {detail}")
        self._pipe, self._process = parent, process
        return parent

    def write(
        self,
        answers: Sequence[Answer],
        confirmed: Sequence[int],
        released: Sequence[Release],
        *,
        holder: str | None,
    ) -> tuple[list[SaveResult], SettleResult]:
        with self._lock:
            pipe = self._pipe or self._start()
            try:
                pipe.send(("write", list(answers), list(confirmed), list(released), holder))
                kind, detail = pipe.recv()
            except (EOFError, OSError) as error:
                self._forget()
                raise StorageError("the store process died; the batch is not stored") from error
        if kind == "ok":
            results: tuple[list[SaveResult], SettleResult] = detail
            return results
        if kind == "bug":
            raise RuntimeError(f"the store process failed: {detail}")
        raise StorageError(detail)

    def _forget(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
        if self._process is not None:
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._pipe = self._process = None

    def close(self) -> None:
        """Let the child finish and go (after the last write)."""
        with self._lock:
            if self._pipe is not None:
                with contextlib.suppress(OSError):
                    self._pipe.send(("close",))
            self._forget()


class OnDemand:
    """Writes in this process while the load is light, and from a `StoreProcess` while a
    backlog keeps answers queueing for the store (`busy_answers` or more in one write). The
    child takes a second or two to start (writes stay here meanwhile) and goes again once
    `idle_seconds` pass without a busy write, so an idle daemon holds one process's memory,
    not two."""

    def __init__(
        self,
        local: EventStore,
        make_child: Callable[[], StoreProcess],
        *,
        busy_answers: int = 2,
        idle_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.local = local
        self._make_child = make_child
        self.busy_answers = busy_answers
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._child: StoreProcess | None = None
        self._starting: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._last_busy = 0.0
        self._lock = threading.Lock()
        self._closing = threading.Event()

    @property
    def child_running(self) -> bool:
        with self._lock:
            return self._child is not None

    def write(
        self,
        answers: Sequence[Answer],
        confirmed: Sequence[int],
        released: Sequence[Release],
        *,
        holder: str | None,
    ) -> tuple[list[SaveResult], SettleResult]:
        with self._lock:
            busy = len(answers) >= self.busy_answers
            if busy:
                self._last_busy = self._clock()
            child = self._child
            if child is None and busy:
                self._start_soon()
            if child is not None:
                # Under the lock: the watcher cannot close the child in the middle.
                return child.write(answers, confirmed, released, holder=holder)
        return self.local.write(answers, confirmed, released, holder=holder)

    def _start_soon(self) -> None:
        """Start the child in the background (called under the lock)."""
        if self._starting is not None or self._closing.is_set():
            return

        def start() -> None:
            child: StoreProcess | None
            try:
                child = self._make_child().start()
            except StorageError as error:
                log.warning("store process not started; storing here", error=describe(error))
                child = None
            with self._lock:
                self._starting = None
                if child is None:
                    return
                if self._closing.is_set():
                    child.close()
                    return
                self._child = child
                self._last_busy = self._clock()  # its idle spell starts now, not at the backlog
                self._watcher = threading.Thread(
                    target=self._watch, args=(child,), name="store-process-idle", daemon=True
                )
                self._watcher.start()

        self._starting = threading.Thread(target=start, name="store-process-start", daemon=True)
        self._starting.start()

    def _watch(self, child: StoreProcess) -> None:
        """Stop `child` after `idle_seconds` without a busy write (close() stops it sooner)."""
        while True:
            with self._lock:
                left = self._last_busy + self.idle_seconds - self._clock()
                if left <= 0:
                    self._child = None
                    break
            if self._closing.wait(left):
                return  # close() takes it from here
        log.info("store process stopped: the load is light", idle_seconds=self.idle_seconds)
        child.close()  # no write can be using it: they take it under the lock

    def close(self) -> None:
        """Stop the child, if any, after the write in flight."""
        self._closing.set()
        with self._lock:
            starting, watcher = self._starting, self._watcher
        if starting is not None:
            starting.join()
        if watcher is not None:
            watcher.join()
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.close()
