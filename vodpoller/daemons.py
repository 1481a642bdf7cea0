"""The table of running daemons (`vod_daemons`): one row per `run` or `once` process, kept
fresh by a heartbeat and removed on a clean stop; and which of them are alive, which event
identity needs: the rows a dead daemon held are let go of (identity.py)."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, delete, insert, select, update

from vodpoller import __version__
from vodpoller.database import transaction, writer
from vodpoller.errors import StorageError, describe
from vodpoller.logs import get_logger
from vodpoller.schema import vod_daemons, vod_events

_log = get_logger(__name__)

HEARTBEAT_SECONDS: Final = 5.0
# A daemon on another host is taken for dead when its heartbeat is this old. Six missed beats:
# a database stall of a few seconds must not make a live daemon look dead.
STALE_AFTER_SECONDS: Final = 30.0
_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")
_LAST_ERROR_CHARACTERS: Final = 1000


@dataclass(frozen=True)
class LocalHost:
    """This machine: its name, and its boot (a restarted host reuses pids)."""

    name: str
    boot_id: str | None

    @classmethod
    def current(cls) -> LocalHost:
        try:
            boot_id: str | None = _BOOT_ID.read_text(encoding="ascii").strip() or None
        except OSError:
            boot_id = None
        return cls(socket.gethostname(), boot_id)


def pid_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


@dataclass(frozen=True)
class DaemonRecord:
    id: str
    host: str
    pid: int
    boot_id: str | None
    version: str
    command: str
    applications: list[str]
    started_at: datetime
    heartbeat_at: datetime
    last_poll_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    pulled: int
    stored: int
    duplicates: int
    confirmed: int

    @classmethod
    def from_row(cls, row: Any) -> DaemonRecord:
        values = dict(row)
        values["applications"] = json.loads(values["applications"] or "[]")
        return cls(**values)


def is_dead(
    record: DaemonRecord | None,
    *,
    local: LocalHost,
    now: datetime,
    stale_after: float = STALE_AFTER_SECONDS,
    running: Callable[[int], bool] = pid_running,
) -> bool:
    """Dead: not registered (it stopped, or never was), a process of this host that is gone
    or belonged to an earlier boot, or a heartbeat older than `stale_after` seconds."""
    if record is None:
        return True
    if record.host == local.name and record.boot_id == local.boot_id:
        if not running(record.pid):
            return True
    elif record.host == local.name and record.boot_id and local.boot_id:
        return True  # registered before this host last booted
    return (now - record.heartbeat_at).total_seconds() > stale_after


def dead_among(
    connection: Connection,
    daemon_ids: Collection[str],
    *,
    local: LocalHost | None = None,
    now: datetime | None = None,
) -> set[str]:
    """Which of these daemons are dead, read in the caller's transaction."""
    if not daemon_ids:
        return set()
    local = local or LocalHost.current()
    now = now or datetime.now(UTC)
    found = {
        row["id"]: DaemonRecord.from_row(row)
        for row in connection.execute(
            select(vod_daemons).where(vod_daemons.c.id.in_(sorted(daemon_ids)))
        ).mappings()
    }
    return {
        daemon_id for daemon_id in daemon_ids if is_dead(found.get(daemon_id), local=local, now=now)
    }


def new_daemon_id(local: LocalHost) -> str:
    """Unique among all daemons ever: host, pid and a random part, within 64 characters."""
    return f"{local.name[:30]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"[:64]


@dataclass(frozen=True)
class Progress:
    """What a daemon reports with each heartbeat."""

    pulled: int = 0
    stored: int = 0
    duplicates: int = 0
    confirmed: int = 0
    last_poll_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class DaemonRegistry:
    """This process's row in `vod_daemons`, and the others'."""

    def __init__(
        self,
        engine: Engine,
        *,
        command: str,
        applications: Collection[int | None] = (),
        local: LocalHost | None = None,
    ):
        self.engine = engine
        self.local = local or LocalHost.current()
        self.daemon_id = new_daemon_id(self.local)
        self.command = command
        self.applications = ["default" if app is None else str(app) for app in applications]

    def register(self) -> None:
        now = datetime.now(UTC)
        row = {
            "id": self.daemon_id,
            "host": self.local.name,
            "pid": os.getpid(),
            "boot_id": self.local.boot_id,
            "version": __version__,
            "command": self.command,
            "applications": json.dumps(self.applications),
            "started_at": now,
            "heartbeat_at": now,
        }
        transaction(
            writer(self.engine),
            "registering this daemon",
            lambda connection: connection.execute(insert(vod_daemons), row),
        )

    def beat(self, progress: Progress | None = None) -> None:
        """Say this daemon is alive, with its latest figures."""
        values: dict[str, Any] = {"heartbeat_at": datetime.now(UTC)}
        if progress is not None:
            values.update(
                pulled=progress.pulled,
                stored=progress.stored,
                duplicates=progress.duplicates,
                confirmed=progress.confirmed,
                last_poll_at=progress.last_poll_at,
                last_error=(progress.last_error or "")[:_LAST_ERROR_CHARACTERS] or None,
                last_error_at=progress.last_error_at,
            )
        statement = update(vod_daemons).where(vod_daemons.c.id == self.daemon_id).values(values)

        def work(connection: Connection) -> None:
            if connection.execute(statement).rowcount == 0:
                # Reaped while it could not beat (a long database outage): register again,
                # or other daemons would take the rows it holds for let go of.
                self._insert_again(connection, values)

        transaction(writer(self.engine), "writing the heartbeat", work)

    def _insert_again(self, connection: Connection, values: Mapping[str, Any]) -> None:
        connection.execute(
            insert(vod_daemons),
            {
                "id": self.daemon_id,
                "host": self.local.name,
                "pid": os.getpid(),
                "boot_id": self.local.boot_id,
                "version": __version__,
                "command": self.command,
                "applications": json.dumps(self.applications),
                "started_at": values["heartbeat_at"],
                **values,
            },
        )

    def unregister(self) -> None:
        """A clean stop: every row it held is confirmed or let go of by now."""
        statement = delete(vod_daemons).where(vod_daemons.c.id == self.daemon_id)
        transaction(
            writer(self.engine),
            "unregistering this daemon",
            lambda connection: connection.execute(statement),
        )

    def records(self) -> list[DaemonRecord]:
        statement = select(vod_daemons).order_by(vod_daemons.c.started_at)
        return transaction(
            self.engine,
            "reading the daemons",
            lambda connection: [
                DaemonRecord.from_row(row) for row in connection.execute(statement).mappings()
            ],
        )

    def reap(self) -> list[str]:
        """Remove the dead daemons' rows and let go of the events they held (the events come
        back from VOD, or already did). Returns the ids of the dead."""

        def work(connection: Connection) -> list[str]:
            ids = connection.execute(
                select(vod_daemons.c.id).where(vod_daemons.c.id != self.daemon_id)
            ).scalars()
            dead = sorted(dead_among(connection, list(ids), local=self.local))
            if dead:
                connection.execute(
                    update(vod_events).where(vod_events.c.held_by.in_(dead)).values(held_by=None)
                )
                connection.execute(delete(vod_daemons).where(vod_daemons.c.id.in_(dead)))
            return dead

        return transaction(writer(self.engine), "removing dead daemons", work)


class Heartbeat:
    """A thread that keeps this daemon's row fresh every `interval` seconds, with the figures
    `progress()` gives, and removes dead daemons' rows. Database errors are logged and
    retried on the next beat: a heartbeat never stops the daemon."""

    def __init__(
        self,
        registry: DaemonRegistry,
        progress: Callable[[], Progress] | None = None,
        *,
        interval: float = HEARTBEAT_SECONDS,
    ):
        self.registry = registry
        self.progress = progress
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._failing = False

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.registry.beat(self.progress() if self.progress else None)
                dead = self.registry.reap()
            except StorageError as error:
                if not self._failing:
                    _log.warning("heartbeat failed; retrying", error=describe(error))
                self._failing = True
                continue
            if self._failing:
                _log.info("heartbeat recovered")
            self._failing = False
            if dead:
                _log.info("dead daemons removed; the events they held come back", daemons=dead)
