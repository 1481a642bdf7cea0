"""Wiring: settings -> store, source, poller. `once`, the demo and `run` (daemon.py) build
through here; every step that can wait (the credential chain, a database that is down, the
migration lock) can be cut short by a stop request."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from vodpoller import logs, migrate
from vodpoller.config import Settings
from vodpoller.daemons import DaemonRegistry, Heartbeat, Progress
from vodpoller.errors import SchemaError, StorageError, VodpollerError, describe
from vodpoller.forwarder import Forwarder, claim_seconds
from vodpoller.forwardqueue import ForwardQueue, Selection
from vodpoller.forwardsend import HandlerClient
from vodpoller.logs import get_logger
from vodpoller.metrics import Metrics
from vodpoller.poller import DrainResult, Poller, Rates
from vodpoller.source import EventSource, VodEventSource, resolve_credential
from vodpoller.store import EventStore
from vodpoller.storeprocess import OnDemand, StoreProcess
from vodpoller.storer import Writer

log = get_logger(__name__)

_T = TypeVar("_T")
DATABASE_WAIT_SECONDS: Final = (1.0, 30.0)  # first and longest pause between attempts
DATABASE_REPORT_SECONDS: Final = 300.0  # a long wait is logged again this often


class Interrupted(VodpollerError):  # noqa: N818 (a stop request, not a failure)
    """A stop request came while starting up."""


def secrets_of(settings: Settings) -> list[str]:
    """Values no log line may show."""
    vod = settings.vod
    secrets = [s.get_secret_value() for s in (vod.secret_key, vod.token) if s is not None]
    with contextlib.suppress(ArgumentError):
        password = make_url(settings.database.url).password
        if password:
            secrets.append(str(password))
    if settings.receiver.listen:
        secrets.append(settings.receiver.path.rstrip("/").rsplit("/", 1)[-1])
    forward_password = urlsplit(settings.forward.url).password
    if forward_password:
        secrets.append(forward_password)
    return secrets


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.logging.level, settings.logging.format)
    logs.add_secrets(secrets_of(settings))


def interruptible(work: Callable[[], _T], stop: threading.Event | None, what: str) -> _T:
    """Run `work` in a thread of its own and wait for it, or for `stop` (`Interrupted`).
    What cannot be cut short (a DNS lookup, a lock wait in the database) is left to finish
    or die with the process."""
    if stop is None:
        return work()
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # noqa: BLE001 (raised in the caller's thread)
            failure.append(error)

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    while thread.is_alive():
        if stop.wait(0.05):
            raise Interrupted(f"stopped while {what}")
    if failure:
        raise failure[0]
    return outcome[0]


def open_store(settings: Settings, *, run_migrations: bool) -> EventStore:
    if not run_migrations:
        # Before anything is pulled: a schema the code does not expect would fail every batch.
        # A database that does not answer is a StorageError, waited for at start; this is not.
        try:
            store = migrate.open_at_head(settings.database.url)
        except SchemaError as error:
            raise SchemaError("cannot start with --no-migrate") from error
        store.notify_channel = settings.database.notify_channel
        return store
    store = EventStore.connect(
        settings.database.url, notify_channel=settings.database.notify_channel
    )
    try:
        migrate.upgrade(store.engine)
    except BaseException:
        store.dispose()
        raise
    return store


def open_store_waiting(
    settings: Settings,
    *,
    run_migrations: bool,
    stop: threading.Event,
    waiting: Callable[[str], None] | None = None,
) -> EventStore:
    """`open_store`, again and again with growing pauses while the database is down (a log
    line when the wait begins and every few minutes; `waiting` told each time), until it
    answers or a stop request comes (`Interrupted`)."""
    first, longest = DATABASE_WAIT_SECONDS
    attempt = 0
    began = reported = time.monotonic()
    while True:
        try:
            store = interruptible(
                lambda: open_store(settings, run_migrations=run_migrations),
                stop,
                "opening the database",
            )
        except StorageError as error:
            attempt += 1
            now = time.monotonic()
            if attempt == 1 or now - reported >= DATABASE_REPORT_SECONDS:
                reported = now
                log.warning(
                    "database unavailable at start; waiting for it",
                    error=describe(error),
                    attempts=attempt,
                    seconds=round(now - began),
                )
            if waiting is not None:
                waiting(describe(error))
            if stop.wait(min(longest, first * 2 ** (attempt - 1))):
                raise Interrupted("stopped while waiting for the database") from error
            continue
        if attempt:
            log.info(
                "database available", attempts=attempt, seconds=round(time.monotonic() - began)
            )
        return store


def make_source(settings: Settings) -> VodEventSource:
    """The SDK-backed source. A stop does not cut its requests short: a pull in flight may
    be leasing events, and cutting it would leave them leased until VOD gives them out again
    (30 s); its deadline (`request_timeout_seconds`) bounds the wait instead."""
    return VodEventSource(
        settings.vod, resolve_credential(settings.vod), settings.poll.rate_limit_per_second
    )


def make_forwarder(
    settings: Settings,
    engine: Engine,
    *,
    metrics: Metrics | None = None,
    stop: threading.Event | None = None,
) -> Forwarder | None:
    """The forwarder of `[forward]`, not started; None when `url` is empty."""
    forward = settings.forward
    if not forward.url:
        return None
    queue = ForwardQueue(
        engine,
        Selection(tuple(forward.event_types), forward.since_moment),
        claim_seconds=claim_seconds(forward.timeout_seconds),
    )
    return Forwarder(
        queue,
        HandlerClient(forward.url, forward.timeout_seconds),
        max_in_flight=forward.max_in_flight,
        retry_seconds=forward.retry_seconds,
        max_retry_seconds=forward.max_retry_seconds,
        metrics=metrics,
        stop=stop,
    )


def make_poller(
    settings: Settings,
    source: EventSource,
    store: Writer,
    *,
    holder: str | None = None,
    stop: threading.Event | None = None,
    metrics: Metrics | None = None,
    progressed: Callable[[int | None], None] | None = None,
) -> Poller:
    return Poller(
        source,
        store,
        concurrency=settings.poll.concurrency,
        confirm_budget_seconds=settings.poll.confirm_budget_seconds,
        holder=holder,
        rates=Rates.per_second(settings.poll.rate_limit_per_second),
        stop=stop,
        metrics=metrics,
        progressed=progressed,
    )


@dataclass
class Components:
    settings: Settings
    store: EventStore
    source: EventSource
    poller: Poller
    registry: DaemonRegistry
    heartbeat: Heartbeat
    store_process: OnDemand | None = None

    def drain(self) -> DrainResult:
        """Every configured application once, until a pull comes back empty."""
        return drain_all(self.poller, self.settings.vod.applications)

    def close(self) -> None:
        self.heartbeat.stop()
        try:
            self.poller.close()
            if self.store_process is not None:
                self.store_process.close()
            # Every row it held is settled by now; one it could not record stays held by a
            # daemon no longer registered, which counts as dead: its events come back.
            self.registry.unregister()
        finally:
            self.store.dispose()
            if isinstance(self.source, VodEventSource):
                self.source.close()  # its kept-alive connections


@contextlib.contextmanager
def components(
    settings: Settings,
    *,
    run_migrations: bool = True,
    command: str = "once",
    stop: threading.Event | None = None,
    source: EventSource | None = None,
    metrics: Metrics | None = None,
    progressed: Callable[[int | None], None] | None = None,
    progress: Callable[[], Progress] | None = None,
    waiting: Callable[[str], None] | None = None,
    store_process: bool = False,
) -> Iterator[Components]:
    """Everything a drain needs, closed on the way out. With `stop`, a database that is down
    is waited for and a stop request cuts the start-up short (`Interrupted`). With
    `store_process`, a backlog is written by a child process (storeprocess.OnDemand)."""
    # One stop for all: it ends the drains (and cuts the start-up short).
    stop = stop or threading.Event()
    if source is None:
        # Credentials first: no point in touching the database without them.
        source = interruptible(lambda: make_source(settings), stop, "finding credentials")
    if waiting is not None:
        store = open_store_waiting(
            settings, run_migrations=run_migrations, stop=stop, waiting=waiting
        )
    else:
        store = interruptible(
            lambda: open_store(settings, run_migrations=run_migrations),
            stop,
            "opening the database",
        )
    try:
        registry = DaemonRegistry(
            store.engine, command=command, applications=settings.vod.applications
        )
        registry.register()
        # A predecessor that was killed left its row and the rows it held: let go of them
        # before the first pull, so its events land in their rows when they come back.
        registry.reap()
    except BaseException:
        store.dispose()
        raise
    child = (
        OnDemand(
            store,
            lambda: StoreProcess(
                settings.database.url,
                level=settings.logging.level,
                fmt=settings.logging.format,
                secrets=secrets_of(settings),
                notify_channel=settings.database.notify_channel,
            ),
        )
        if store_process
        else None
    )
    poller = make_poller(
        settings,
        source,
        child or store,
        holder=registry.daemon_id,
        stop=stop,
        metrics=metrics,
        progressed=progressed,
    )
    built = Components(
        settings, store, source, poller, registry, Heartbeat(registry, progress).start(), child
    )
    try:
        yield built
    finally:
        built.close()


def drain_all(poller: Poller, applications: tuple[int | None, ...]) -> DrainResult:
    """Drain every application once, in parallel; the first failure is raised after all end."""
    total = DrainResult()
    with ThreadPoolExecutor(max_workers=len(applications), thread_name_prefix="once") as pool:
        futures = [pool.submit(poller.drain, app) for app in applications]
        errors = []
        for future in futures:
            try:
                total.add(future.result())
            except BaseException as error:  # noqa: BLE001 (raised below once every drain ended)
                errors.append(error)
    if errors:
        raise errors[0]
    return total


def run_once(
    settings: Settings, *, run_migrations: bool = True, stop: threading.Event | None = None
) -> DrainResult:
    with components(settings, run_migrations=run_migrations, stop=stop) as built:
        return built.drain()
