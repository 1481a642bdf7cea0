"""What `vodpoller status` and `check` read of the running daemons: each registered daemon with
whether it is alive and how many unconfirmed rows it holds, the unconfirmed rows in all; and,
pure, whether any daemon is polling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, case, func, select

from vodpoller.daemons import DaemonRecord, LocalHost, is_dead
from vodpoller.database import transaction
from vodpoller.schema import AWAITING_CONFIRM, PUSHED_ONLY, vod_daemons, vod_events

# `check` fails when no daemon polled (or, just started, could have) within this long: a
# daemon that works polls every few seconds, and an error streak retries at least every
# `poll.max_backoff_seconds` (60 s by default).
POLL_WINDOW_SECONDS: Final = 300.0


@dataclass(frozen=True)
class DaemonStatus:
    """A registered daemon as `status` shows it."""

    record: DaemonRecord
    alive: bool
    holding: int  # unconfirmed rows whose confirm it still has to send or hear back from

    @property
    def name(self) -> str:
        return f"{self.record.host}:{self.record.pid}"


@dataclass(frozen=True)
class StatusReport:
    daemons: list[DaemonStatus]
    unconfirmed: int  # pulled rows with confirmed_at NULL
    held: int  # of those, held by a daemon (alive or dead)
    checked_at: datetime
    pushed_only: int = 0  # rows that came only by normal callback: nothing to confirm

    @property
    def alive(self) -> list[DaemonStatus]:
        return [daemon for daemon in self.daemons if daemon.alive]


def read_status(
    engine: Engine, *, local: LocalHost | None = None, now: datetime | None = None
) -> StatusReport:
    """Every registered daemon and the unconfirmed rows, read in one transaction."""
    local = local or LocalHost.current()

    def read(connection: Connection) -> StatusReport:
        at = now or datetime.now(UTC)
        records = [
            DaemonRecord.from_row(row)
            for row in connection.execute(
                select(vod_daemons).order_by(vod_daemons.c.started_at, vod_daemons.c.id)
            ).mappings()
        ]
        holding: dict[str, int] = {
            str(holder): int(count)
            for holder, count in connection.execute(
                select(vod_events.c.held_by, func.count())
                .where(AWAITING_CONFIRM, vod_events.c.held_by.is_not(None))
                .group_by(vod_events.c.held_by)
            ).all()
        }
        # One pass over the rows not confirmed for both counts.
        total, pushed_only = connection.execute(
            select(
                func.count(case((AWAITING_CONFIRM, 1))), func.count(case((PUSHED_ONLY, 1)))
            ).where(vod_events.c.confirmed_at.is_(None))
        ).one()
        daemons = [
            DaemonStatus(
                record,
                alive=not is_dead(record, local=local, now=at),
                holding=holding.get(record.id, 0),
            )
            for record in records
        ]
        return StatusReport(daemons, int(total), sum(holding.values()), at, int(pushed_only))

    return transaction(engine, "reading the daemons and the unconfirmed rows", read)


def seconds_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def ago(seconds: float | None) -> str:
    """`12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`; `never` for None."""
    if seconds is None:
        return "never"
    whole = round(seconds)
    if whole < 120:
        return f"{whole} s ago"
    if whole < 7200:
        return f"{whole // 60} min ago"
    if whole < 172800:
        return f"{whole // 3600} h ago"
    return f"{whole // 86400} d ago"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str


def polling(
    daemons: Sequence[DaemonStatus], now: datetime, window: float = POLL_WINDOW_SECONDS
) -> Verdict:
    """Pure: whether the registered daemons poll. Fine with none registered (nothing is meant
    to run), or while a living daemon polled within `window` seconds, or started within it
    and has not polled yet. Otherwise not, with what to look at."""
    if not daemons:
        return Verdict(True, "none registered")
    alive = [daemon for daemon in daemons if daemon.alive]
    dead = len(daemons) - len(alive)
    also = f" ({dead} dead)" if dead else ""
    polls = [d.record.last_poll_at for d in alive if d.record.last_poll_at is not None]
    latest = seconds_since(max(polls), now) if polls else None
    if latest is not None and latest <= window:
        return Verdict(True, f"{len(alive)} running{also}, last poll {ago(latest)}")
    starting = [
        d
        for d in alive
        if d.record.last_poll_at is None
        and (seconds_since(d.record.started_at, now) or 0.0) <= window
    ]
    if starting:
        return Verdict(True, f"{len(alive)} running{also}, starting: no poll yet")
    if not alive:
        return Verdict(
            False,
            f"{len(daemons)} registered, none running ({_list(daemons, now)}): start it "
            "(systemctl start vodpoller) and see why it stopped (journalctl -u vodpoller)",
        )
    return Verdict(
        False,
        f"no daemon polled in the last {window:g} s ({_list(daemons, now)}): see "
        "`vodpoller status` and the daemons' logs (journalctl -u vodpoller)",
    )


def _list(daemons: Sequence[DaemonStatus], now: datetime) -> str:
    return "; ".join(_one(daemon, now) for daemon in daemons)


def _one(daemon: DaemonStatus, now: datetime) -> str:
    record = daemon.record
    if not daemon.alive:
        return f"{daemon.name} dead, heartbeat {ago(seconds_since(record.heartbeat_at, now))}"
    text = f"{daemon.name} last poll {ago(seconds_since(record.last_poll_at, now))}"
    if record.last_error:
        when = ago(seconds_since(record.last_error_at, now))
        text += f", last error {when}: {_shorten(record.last_error)}"
    return text


def _shorten(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def as_json(report: StatusReport, database: str) -> dict[str, Any]:
    """The whole report as one JSON-ready object (timestamps in ISO 8601, UTC)."""
    now = report.checked_at
    return {
        "database": database,
        "checked_at": _iso(now),
        "daemons": [
            {
                "id": d.record.id,
                "host": d.record.host,
                "pid": d.record.pid,
                "alive": d.alive,
                "version": d.record.version,
                "command": d.record.command,
                "applications": d.record.applications,
                "started_at": _iso(d.record.started_at),
                "heartbeat_at": _iso(d.record.heartbeat_at),
                "heartbeat_seconds_ago": _seconds(d.record.heartbeat_at, now),
                "last_poll_at": _iso(d.record.last_poll_at),
                "last_poll_seconds_ago": _seconds(d.record.last_poll_at, now),
                "last_error": d.record.last_error,
                "last_error_at": _iso(d.record.last_error_at),
                "pulled": d.record.pulled,
                "stored": d.record.stored,
                "duplicates": d.record.duplicates,
                "confirmed": d.record.confirmed,
                "holding": d.holding,
            }
            for d in report.daemons
        ],
        "unconfirmed": {"rows": report.unconfirmed, "held_by_daemons": report.held},
        "pushed_only": report.pushed_only,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _seconds(moment: datetime | None, now: datetime) -> float | None:
    seconds = seconds_since(moment, now)
    return None if seconds is None else round(seconds, 1)


def table_rows(report: StatusReport) -> list[dict[str, Any]]:
    """One row per daemon for the `table` format: ages instead of timestamps."""
    now = report.checked_at
    return [
        {
            "host": d.record.host,
            "pid": d.record.pid,
            "state": "alive" if d.alive else "dead",
            "command": d.record.command,
            "version": d.record.version,
            "applications": ",".join(d.record.applications),
            "started": ago(seconds_since(d.record.started_at, now)),
            "heartbeat": ago(seconds_since(d.record.heartbeat_at, now)),
            "last_poll": ago(seconds_since(d.record.last_poll_at, now)),
            "pulled": d.record.pulled,
            "stored": d.record.stored,
            "duplicates": d.record.duplicates,
            "confirmed": d.record.confirmed,
            "holding": d.holding,
        }
        for d in report.daemons
    ]


TABLE_COLUMNS: Final = (
    "host",
    "pid",
    "state",
    "command",
    "version",
    "applications",
    "started",
    "heartbeat",
    "last_poll",
    "pulled",
    "stored",
    "duplicates",
    "confirmed",
    "holding",
)


def error_lines(report: StatusReport) -> list[str]:
    """A line per daemon with a last error: errors are too long for a table cell."""
    now = report.checked_at
    return [
        f"last error of {d.name} ({ago(seconds_since(d.record.last_error_at, now))}): "
        f"{_shorten(d.record.last_error, 300)}"
        for d in report.daemons
        if d.record.last_error
    ]
