"""Wiring: settings -> store, source, poller, service. The CLI and the demo build through here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from vodpoller import logs, migrate
from vodpoller.config import Settings
from vodpoller.daemons import DaemonRegistry, Heartbeat
from vodpoller.errors import StorageError
from vodpoller.poller import DrainResult, Poller
from vodpoller.service import Service
from vodpoller.signals import on_hangup
from vodpoller.source import EventSource, VodEventSource, resolve_credential
from vodpoller.store import EventStore


def secrets_of(settings: Settings) -> list[str]:
    """Values no log line may show."""
    vod = settings.vod
    secrets = [s.get_secret_value() for s in (vod.secret_key, vod.token) if s is not None]
    with contextlib.suppress(ArgumentError):
        password = make_url(settings.database.url).password
        if password:
            secrets.append(str(password))
    return secrets


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.logging.level, settings.logging.format)
    logs.add_secrets(secrets_of(settings))


def open_store(settings: Settings, *, run_migrations: bool) -> EventStore:
    if not run_migrations:
        # Before anything is pulled: a schema the code does not expect would fail every batch.
        try:
            return migrate.open_at_head(settings.database.url)
        except StorageError as error:
            raise StorageError("cannot start with --no-migrate") from error
    store = EventStore.connect(settings.database.url)
    try:
        migrate.upgrade(store.engine)
    except BaseException:
        store.dispose()
        raise
    return store


def make_source(settings: Settings) -> VodEventSource:
    return VodEventSource(
        settings.vod, resolve_credential(settings.vod), settings.poll.rate_limit_per_second
    )


def make_poller(
    settings: Settings, source: EventSource, store: EventStore, holder: str | None = None
) -> Poller:
    return Poller(
        source,
        store,
        concurrency=settings.poll.concurrency,
        confirm_budget_seconds=settings.poll.confirm_budget_seconds,
        holder=holder,
    )


@dataclass
class Components:
    settings: Settings
    store: EventStore
    source: EventSource
    poller: Poller
    registry: DaemonRegistry
    heartbeat: Heartbeat

    def drain(self) -> DrainResult:
        """Every configured application once, until a pull comes back empty."""
        return drain_all(self.poller, self.settings.vod.applications)

    def close(self) -> None:
        self.heartbeat.stop()
        try:
            self.poller.close()
            # Every row it held is settled by now; one it could not record stays held by a
            # daemon no longer registered, which counts as dead: its events come back.
            self.registry.unregister()
        finally:
            self.store.dispose()


@contextlib.contextmanager
def components(
    settings: Settings, *, run_migrations: bool = True, command: str = "once"
) -> Iterator[Components]:
    source = make_source(settings)  # credentials first: no point touching the database without
    store = open_store(settings, run_migrations=run_migrations)
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
    poller = make_poller(settings, source, store, holder=registry.daemon_id)
    built = Components(settings, store, source, poller, registry, Heartbeat(registry).start())
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


def run_once(settings: Settings, *, run_migrations: bool = True) -> DrainResult:
    with components(settings, run_migrations=run_migrations) as built:
        return built.drain()


def run_service(settings: Settings, *, run_migrations: bool = True) -> int:
    # From the start, migrations included: a SIGHUP's default action would end the daemon.
    with on_hangup(), components(settings, run_migrations=run_migrations, command="run") as built:
        service = Service(
            built.poller,
            settings.vod.applications,
            interval_seconds=settings.poll.interval_seconds,
            max_backoff_seconds=settings.poll.max_backoff_seconds,
        )
        return service.run()
