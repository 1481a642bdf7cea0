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
from collections.abc import Sequence
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


def _serve(
    pipe: Connection, url: str, level: str, fmt: str, secrets: list[str]
) -> None:  # pragma: no cover (runs in the child; tested through StoreProcess)
    """The child: write what comes down the pipe until it closes."""
    # Stop signals are the parent's to handle: it finishes, then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(level, fmt)
    logs.add_secrets(secrets)
    try:
        store = EventStore.connect(url)
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
        self, url: str, *, level: str = "info", fmt: str = "json", secrets: Sequence[str] = ()
    ):
        self._arguments = (url, level, fmt, list(secrets))
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
            target=_serve, args=(child, *self._arguments), name="vodpoller-store", daemon=True
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
