"""`vodpoller check`: named probes, each ok or not, with a line saying why and what to do.
It writes nothing: a SQLite file is opened read-only, and one that does not exist is not made."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from vodpoller import credentials, migrate
from vodpoller.config import Settings, read_toml
from vodpoller.database import safe_url, sqlite_path
from vodpoller.errors import ConfigError, VodpollerError, describe
from vodpoller.source import VodEventSource, resolve_credential
from vodpoller.status import polling, read_status
from vodpoller.store import EventStore


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str
    misconfigured: bool = False  # the failure is in the configuration (exit status 2)


def _probe(name: str, work: Callable[[], str]) -> Probe:
    try:
        return Probe(name, True, work())
    except ConfigError as error:
        return Probe(name, False, describe(error), misconfigured=True)
    except Exception as error:  # noqa: BLE001 (a probe reports any failure of what it probes)
        return Probe(name, False, describe(error))


def _app_name(app: int | None) -> str:
    return "default application" if app is None else f"SubAppId {app}"


def _ago(moment: datetime) -> str:
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _schema(store: EventStore, where: str, *, no_migrate: bool) -> tuple[str, bool]:
    """What `run` finds (or makes of) the schema, and whether it is at the newest revision."""
    head = migrate.head_revision()
    problem = migrate.schema_problem(store.engine, where)
    if problem is None:
        return f"at the newest revision ({head})", True
    if no_migrate:
        raise VodpollerError(f"{problem} (--no-migrate: run will not do it)")
    current = migrate.current_revision(store.engine)
    if current is None:
        return "none yet: will be created on first run (run migrates)", False
    if current in migrate.known_revisions():
        return f"at revision {current}: run brings it to {head} (run migrates)", False
    raise VodpollerError(problem)  # newer than this vodpoller: migrating cannot help


def _last_event(store: EventStore) -> str:
    latest = store.latest_received_at()
    if latest is None:
        return "none stored yet"
    return f"received {_ago(latest)} ({latest.isoformat(timespec='seconds')})"


def _daemons(store: EventStore) -> str:
    report = read_status(store.engine)
    verdict = polling(report.daemons, report.checked_at)
    if not verdict.ok:
        raise VodpollerError(verdict.detail)
    return verdict.detail


def _database(store: EventStore, url: str) -> str:
    with store.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return f"reachable: {safe_url(url)}"


def _creation_blocker(path: Path) -> str | None:
    """Why `run` could not create the SQLite file `path` (and its directories); None if it can."""
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by {getpass.getuser()} (run check as the daemon's user)"
    return None


def _new_sqlite_file(path: Path, *, no_migrate: bool) -> Iterator[Probe]:
    blocker = _creation_blocker(path)
    if blocker is not None:
        yield Probe("database", False, f"cannot create {path}: {blocker}")
    elif no_migrate:
        yield Probe(
            "database",
            False,
            f"no vodpoller database at {path} (--no-migrate: run `vodpoller migrate` first)",
        )
    else:
        yield Probe("database", True, f"{path} does not exist yet: run creates it")
        yield Probe("schema", True, "will be created on first run (run migrates)")


def _database_probes(url: str, *, no_migrate: bool) -> Iterator[Probe]:
    path = sqlite_path(url)
    if path is not None and not path.exists():
        yield from _new_sqlite_file(path, no_migrate=no_migrate)
        return
    try:
        store = EventStore.connect(url, read_only=True)
    except VodpollerError as error:
        yield Probe("database", False, describe(error))
        return
    try:
        reachable = _probe("database", lambda: _database(store, url))
        yield reachable
        if not reachable.ok:
            return
        at_head: list[bool] = []

        def schema() -> str:
            detail, ready = _schema(store, migrate.database_name(url), no_migrate=no_migrate)
            at_head.append(ready)
            return detail

        yield _probe("schema", schema)
        if any(at_head):  # the tables are there to read
            yield _probe("last event", lambda: _last_event(store))
            yield _probe("daemons", lambda: _daemons(store))
    finally:
        store.dispose()


def _config_has_key(source_path: str) -> bool:
    try:
        vod = read_toml(Path(source_path)).get("vod", {})
    except ConfigError:
        return False
    return isinstance(vod, dict) and "secret_id" in vod


def run_checks(
    settings: Settings,
    source_path: str,
    *,
    no_migrate: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[Probe]:
    """Yield probes in order; a probe whose prerequisite failed is left out. `no_migrate`: the
    daemon will run with --no-migrate, so the schema must be there already."""
    env = os.environ if env is None else env
    yield Probe("configuration", True, source_path)

    found: list[Any] = []

    def credential() -> str:
        found.append(resolve_credential(settings.vod))
        return credentials.origin(
            found[0], env=env, config_has_key=_config_has_key(source_path), config_file=source_path
        )

    yield _probe("credentials", credential)
    yield from _database_probes(settings.database.url, no_migrate=no_migrate)

    if found:
        source = VodEventSource(settings.vod, found[0], settings.poll.rate_limit_per_second)
        where = f"{settings.vod.scheme}://{settings.vod.endpoint}"
        try:
            for app in settings.vod.applications:

                def backlog(app: int | None = app) -> str:
                    return f"{where} answered; about {source.backlog(app)} event(s) waiting"

                yield _probe(f"VOD API ({_app_name(app)})", backlog)
        finally:
            source.close()
