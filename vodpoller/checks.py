"""`vodpoller check`: named probes, each ok or not, with a line saying why and what to do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from vodpoller import migrate
from vodpoller.config import Settings
from vodpoller.database import safe_url
from vodpoller.errors import VodpollerError, describe
from vodpoller.source import VodEventSource, resolve_credential
from vodpoller.status import polling, read_status
from vodpoller.store import EventStore


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str


def _probe(name: str, work: Callable[[], str]) -> Probe:
    try:
        return Probe(name, True, work())
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


def _schema(store: EventStore) -> str:
    current = migrate.current_revision(store.engine)
    head = migrate.head_revision()
    if current == head:
        return f"at the newest revision ({head})"
    if current is None:
        raise VodpollerError("no schema yet: run `vodpoller migrate` (run and once do it too)")
    raise VodpollerError(f"at revision {current}, the newest is {head}: run `vodpoller migrate`")


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


def _missing_sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def _database(store: EventStore, url: str) -> str:
    with store.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return f"reachable: {safe_url(url)}"


def run_checks(settings: Settings, source_path: str) -> Iterator[Probe]:
    """Yield probes in order; a probe whose prerequisite failed is left out."""
    yield Probe("configuration", True, source_path)

    found: list[Any] = []

    def credentials() -> str:
        found.append(resolve_credential(settings.vod))
        return "found"

    yield _probe("credentials", credentials)

    missing = _missing_sqlite_file(settings.database.url)
    if missing is not None:
        # Connecting would create an empty file (and its directory): say so instead.
        yield Probe("database", False, f"{missing} does not exist yet: run `vodpoller migrate`")
    else:
        store = EventStore.connect(settings.database.url)
        try:
            reachable = _probe("database", lambda: _database(store, settings.database.url))
            yield reachable
            schema = _probe("schema", lambda: _schema(store)) if reachable.ok else None
            if schema is not None:
                yield schema
            if schema is not None and schema.ok:
                yield _probe("last event", lambda: _last_event(store))
                yield _probe("daemons", lambda: _daemons(store))
        finally:
            store.dispose()

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
