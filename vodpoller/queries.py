"""Reading what is stored, for `vodpoller events`: filters, pages by id, per-type statistics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select, true
from sqlalchemy.exc import SQLAlchemyError

from vodpoller.errors import ConfigError, StorageError
from vodpoller.schema import AWAITING_CONFIRM, vod_events, vod_rejects
from vodpoller.store import EventStore

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
AGE_EXAMPLES = "90s, 30m, 2h, 1d, 1w"  # one per unit: the help and the README show these
PAGE = 500


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age such as `90s`,
    `30m`, `2h`, `1d`, `1w` meaning that long before now."""
    now = now or datetime.now(UTC)
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither an ISO 8601 time (2026-11-25T08:00:00Z, 2026-11-25) "
            f"nor an age ({AGE_EXAMPLES})"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class EventFilter:
    event_type: str | None = None
    sub_app_id: int | None = None
    task_id: str | None = None
    file_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clause(self) -> ColumnElement[bool]:
        c = vod_events.c
        parts: list[ColumnElement[bool]] = []
        if self.event_type is not None:
            parts.append(c.event_type == self.event_type)
        if self.sub_app_id is not None:
            parts.append(c.sub_app_id == self.sub_app_id)
        if self.task_id is not None:
            parts.append(c.task_id == self.task_id)
        if self.file_id is not None:
            parts.append(c.file_id == self.file_id)
        if self.since is not None:
            parts.append(c.received_at >= self.since)
        if self.until is not None:
            parts.append(c.received_at < self.until)
        return and_(true(), *parts)


class EventQueries:
    def __init__(self, store: EventStore):
        self.engine = store.engine

    def _all(self, statement: Select[Any]) -> list[dict[str, Any]]:
        try:
            with self.engine.connect() as connection:
                return [dict(row) for row in connection.execute(statement).mappings()]
        except SQLAlchemyError as error:
            raise StorageError("reading events failed") from error

    def latest(self, where: EventFilter, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` events, newest first."""
        statement = (
            select(vod_events).where(where.clause()).order_by(vod_events.c.id.desc()).limit(limit)
        )
        return self._all(statement)

    def after(self, where: EventFilter, after_id: int, limit: int = PAGE) -> list[dict[str, Any]]:
        """Events with an id above `after_id`, oldest first: pages for export and tail."""
        statement = (
            select(vod_events)
            .where(where.clause(), vod_events.c.id > after_id)
            .order_by(vod_events.c.id)
            .limit(limit)
        )
        return self._all(statement)

    def every(self, where: EventFilter, after_id: int = 0) -> Iterator[dict[str, Any]]:
        """All matching events above `after_id`, oldest first, read a page at a time."""
        last = after_id
        while page := self.after(where, last):
            yield from page
            last = page[-1]["id"]

    def ids_after(self, where: EventFilter, after_id: int) -> list[int]:
        """The ids of matching events above `after_id`, ascending (ids only: cheap to repeat)."""
        c = vod_events.c
        statement = select(c.id).where(where.clause(), c.id > after_id).order_by(c.id)
        return [int(row["id"]) for row in self._all(statement)]

    def by_ids(self, ids: list[int]) -> list[dict[str, Any]]:
        """The events with these ids, ascending."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            statement = select(vod_events).where(vod_events.c.id.in_(chunk))
            rows.extend(self._all(statement.order_by(vod_events.c.id)))
        return rows

    def newest_id(self) -> int:
        """The highest id stored (0 for an empty table)."""
        rows = self._all(select(func.coalesce(func.max(vod_events.c.id), 0).label("id")))
        return int(rows[0]["id"])

    def one(self, key: str) -> dict[str, Any] | None:
        """By id, or by dedup key (or a unique prefix of one, at least 8 characters)."""
        c = vod_events.c
        if key.isdigit():
            rows = self._all(select(vod_events).where(c.id == int(key)))
        elif len(key) >= 8:
            rows = self._all(select(vod_events).where(c.dedup_key.startswith(key)).limit(2))
            if len(rows) > 1:
                raise ConfigError(f"{key!r} is the start of more than one dedup key")
        else:
            raise ConfigError("give an id or at least 8 characters of a dedup key")
        return rows[0] if rows else None

    def stats(self, where: EventFilter) -> list[dict[str, Any]]:
        """Per event type: events, deliveries, not yet confirmed, first and last received."""
        c = vod_events.c
        statement = (
            select(
                c.event_type,
                func.count().label("events"),
                func.sum(c.deliveries).label("deliveries"),
                # Pulled and not confirmed: a row that came only by push has nothing to confirm.
                func.count(case((AWAITING_CONFIRM, 1))).label("unconfirmed"),
                func.min(c.received_at).label("first_received_at"),
                func.max(c.received_at).label("last_received_at"),
            )
            .where(where.clause())
            .group_by(c.event_type)
            .order_by(func.count().desc(), c.event_type)
        )
        rows = self._all(statement)
        for row in rows:
            row["deliveries"] = int(row["deliveries"] or 0)
        return rows

    def rejects(
        self,
        limit: int,
        *,
        sub_app_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The newest `limit` quarantined entries (`vod_rejects`), newest first."""
        c = vod_rejects.c
        parts: list[ColumnElement[bool]] = []
        if sub_app_id is not None:
            parts.append(c.sub_app_id == sub_app_id)
        if since is not None:
            parts.append(c.received_at >= since)
        if until is not None:
            parts.append(c.received_at < until)
        statement = select(vod_rejects).where(and_(true(), *parts))
        return self._all(statement.order_by(c.id.desc()).limit(limit))
