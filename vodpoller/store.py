"""The `vod_events` table behind a small API: store answers (identity.py decides which rows),
settle confirms (confirmed, or let go of and folded), and small reads. SQLAlchemy Core only;
the tables are in `schema.py`, the schema in `migrations/`, connections in `database.py`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from vodpoller import identity
from vodpoller.daemons import dead_among
from vodpoller.database import (
    RaceLost,
    make_engine,
    safe_url,
    transaction,
    writer,
)
from vodpoller.errors import StorageError
from vodpoller.events import PAYLOAD_COLUMNS, Event
from vodpoller.identity import Absorb, NewRow, StoredRow
from vodpoller.schema import vod_events

_T = TypeVar("_T")

# Far below the bind-parameter limits (SQLite 32,766; PostgreSQL 65,535) in an IN list.
KEYS_PER_STATEMENT: Final = 500

_c = vod_events.c
# Built once: SQLAlchemy caches their compiled form, so a batch does not compile SQL anew.
_SAME_CONTENT = select(
    _c.id,
    _c.content_key,
    _c.dedup_key,
    _c.occurrence,
    _c.confirmed_at,
    _c.held_by,
    func.coalesce(_c.delivered_at, _c.received_at).label("delivered_at"),
).where(
    or_(
        _c.content_key.in_(bindparam("content_keys", expanding=True)),
        _c.dedup_key.in_(bindparam("legacy_keys", expanding=True)),
    )
)
_INSERT = insert(vod_events)
# A redelivery: only while the row is still as the decision saw it (not confirmed meanwhile,
# not taken by another daemon); otherwise the transaction decides again.
_ABSORB_UNHELD = (
    update(vod_events)
    .where(_c.id == bindparam("row_id"), _c.confirmed_at.is_(None), _c.held_by.is_(None))
    .values(
        deliveries=_c.deliveries + 1,
        held_by=bindparam("holder"),
        content_key=func.coalesce(_c.content_key, bindparam("key")),
        delivered_at=bindparam("at"),
    )
)
_ABSORB_FROM_DEAD = (
    update(vod_events)
    .where(
        _c.id == bindparam("row_id"),
        _c.confirmed_at.is_(None),
        _c.held_by == bindparam("seen_holder"),
    )
    .values(
        deliveries=_c.deliveries + 1,
        held_by=bindparam("holder"),
        content_key=func.coalesce(_c.content_key, bindparam("key")),
        delivered_at=bindparam("at"),
    )
)
_CONFIRM = (
    update(vod_events)
    .where(_c.id.in_(bindparam("row_ids", expanding=True)))
    .values(
        confirmed_at=func.coalesce(_c.confirmed_at, bindparam("at")),
        held_by=case((_c.held_by == bindparam("holder"), None), else_=_c.held_by),
    )
)


@dataclass(frozen=True)
class Answer:
    """The entries of one `PullEvents` answer (distinct events, by VOD's rule) and when it
    arrived; all of them get this `received_at`."""

    events: Sequence[Event]
    received_at: datetime


@dataclass(frozen=True)
class SaveResult:
    """`stored`: new rows; `duplicates`: deliveries of events already stored; `row_ids`: the
    row of each event, in order."""

    stored: int
    duplicates: int
    row_ids: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Release:
    """A row whose latest delivery's confirm did not take effect; `received_at` is when that
    delivery arrived (the `received_at` it was saved with)."""

    row_id: int
    received_at: datetime


@dataclass(frozen=True)
class SettleResult:
    confirmed: int  # rows that got their confirmed_at now
    released: int
    folded: int  # released rows that turned out to be a twin's earlier delivery


class EventStore:
    """Every database error becomes `StorageError`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    @classmethod
    def connect(cls, url: str, *, read_only: bool = False) -> EventStore:
        """Create the engine (connections are opened lazily, on first use); `read_only` opens a
        SQLite file read-only and creates nothing."""
        try:
            return cls(make_engine(url, read_only=read_only))
        except ImportError as exc:
            raise StorageError(
                f"no driver for {safe_url(url)}: install vodpoller[postgres] or vodpoller[mysql]"
            ) from exc
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StorageError(f"cannot set up the database {safe_url(url)}") from exc

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.dispose()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # -- storing -------------------------------------------------------------------------

    def save(
        self,
        events: Sequence[Event],
        received_at: datetime | None = None,
        *,
        holder: str | None = None,
    ) -> SaveResult:
        """Store one answer in one transaction (see `save_answers`)."""
        return self.save_answers([Answer(events, _utc(received_at))], holder=holder)[0]

    def save_answers(
        self, answers: Sequence[Answer], *, holder: str | None = None
    ) -> list[SaveResult]:
        """Store answers in one transaction: each event becomes a new row or, when it is a
        redelivery, adds to its row's `deliveries` (identity.py decides). The rows are held by
        `holder` until `settle` says how their confirm went."""
        if not any(answer.events for answer in answers):
            return [SaveResult(0, 0) for _ in answers]
        count = sum(len(answer.events) for answer in answers)
        return transaction(
            self._writer,
            f"storing a batch of {count} events",
            lambda connection: _save(connection, answers, holder),
        )

    def settle(
        self,
        confirmed: Collection[int] = (),
        released: Sequence[Release] = (),
        *,
        holder: str | None = None,
        at: datetime | None = None,
    ) -> SettleResult:
        """Record how confirms went, in one transaction: `confirmed` rows get `confirmed_at`;
        `released` rows are let go of (their event comes back) and folded into the twin that
        was delivered after them, if any (identity.fold_target)."""
        if not confirmed and not released:
            return SettleResult(0, 0, 0)
        when = _utc(at)
        count = len(set(confirmed)) + len(released)
        return transaction(
            self._writer,
            f"recording how {count} confirms went",
            lambda connection: _settle(connection, confirmed, released, holder, when),
        )

    def write(
        self,
        answers: Sequence[Answer],
        confirmed: Sequence[int],
        released: Sequence[Release],
        *,
        holder: str | None,
    ) -> tuple[list[SaveResult], SettleResult]:
        """`settle` and `save_answers` in one transaction, in that order (a row let go of
        can take its redelivery in the same transaction): the store worker's one write."""
        if not any(answer.events for answer in answers):
            settled = self.settle(confirmed, released, holder=holder)
            return [SaveResult(0, 0) for _ in answers], settled
        when = datetime.now(UTC)
        count = sum(len(answer.events) for answer in answers)

        def work(connection: Connection) -> tuple[list[SaveResult], SettleResult]:
            settled = _settle(connection, confirmed, released, holder, when)
            return _save(connection, answers, holder), settled

        return transaction(self._writer, f"storing a batch of {count} events", work)

    # -- small reads ---------------------------------------------------------------------

    def count(self) -> int:
        """How many rows the table holds."""
        statement = select(func.count()).select_from(vod_events)
        return self._read("counting events", lambda c: c.execute(statement).scalar_one())

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict, in insertion (`id`) order."""
        statement = select(vod_events).order_by(_c.id)
        return self._read(
            "reading events", lambda c: [dict(row) for row in c.execute(statement).mappings()]
        )

    def latest_received_at(self) -> datetime | None:
        """When the newest row arrived; None for an empty table."""
        statement = select(func.max(_c.received_at))
        return self._read("reading the newest event", lambda c: c.execute(statement).scalar())

    def _read(self, what: str, work: Callable[[Connection], _T]) -> _T:
        return transaction(self.engine, what, work)


# -- one save ------------------------------------------------------------------------------


def _save(
    connection: Connection, answers: Sequence[Answer], holder: str | None
) -> list[SaveResult]:
    events = [event for answer in answers for event in answer.events]
    candidates = _same_content(connection, events)
    others = {row.held_by for row in candidates if row.held_by not in (None, holder)}
    dead = dead_among(connection, {h for h in others if h is not None}) if others else set()
    decisions = identity.plan(
        [answer.events for answer in answers], candidates, holder=holder, dead=dead
    )
    absorbs: list[tuple[Absorb, Event, datetime]] = []
    new_rows: list[tuple[NewRow, Event, datetime]] = []
    for answer, decided in zip(answers, decisions, strict=True):
        for event, decision in zip(answer.events, decided, strict=True):
            if isinstance(decision, Absorb):
                absorbs.append((decision, event, answer.received_at))
            else:
                new_rows.append((decision, event, answer.received_at))
    _absorb(connection, absorbs, holder)
    ids = _insert(connection, new_rows, holder)
    results = []
    for decided in decisions:
        row_ids = tuple(d.row_id if isinstance(d, Absorb) else ids[d.dedup_key] for d in decided)
        stored = sum(isinstance(d, NewRow) for d in decided)
        results.append(SaveResult(stored, len(decided) - stored, row_ids))
    return results


def _same_content(connection: Connection, events: Sequence[Event]) -> list[StoredRow]:
    """The stored rows that say what these events say; a row a 0.1 daemon wrote has no
    content_key and is found by its dedup_key, the 0.1 key of the same bytes."""
    content_of_legacy = {event.legacy_key: event.content_key for event in events}
    content_keys = sorted({event.content_key for event in events})
    legacy_keys = sorted(content_of_legacy)
    found: dict[int, StoredRow] = {}
    for start in range(0, max(len(content_keys), len(legacy_keys)), KEYS_PER_STATEMENT):
        rows = connection.execute(
            _SAME_CONTENT,
            {
                "content_keys": content_keys[start : start + KEYS_PER_STATEMENT],
                "legacy_keys": legacy_keys[start : start + KEYS_PER_STATEMENT],
            },
        )
        for row in rows:
            key = row.content_key or content_of_legacy.get(row.dedup_key)
            if key is None:
                continue  # another event's 0.1 key matched by a page boundary: not ours
            found[row.id] = StoredRow(
                row_id=row.id,
                content_key=key,
                occurrence=row.occurrence,
                confirmed=row.confirmed_at is not None,
                held_by=row.held_by,
                delivered_at=row.delivered_at,
            )
    return list(found.values())


def _absorb(
    connection: Connection,
    absorbs: Sequence[tuple[Absorb, Event, datetime]],
    holder: str | None,
) -> None:
    # In id order, as every writer does: two daemons lock rows in the same order.
    ordered = sorted(absorbs, key=lambda item: item[0].row_id)
    unheld = [
        {"row_id": a.row_id, "holder": holder, "key": e.content_key, "at": at}
        for a, e, at in ordered
        if a.seen_holder is None
    ]
    from_dead = [
        {
            "row_id": a.row_id,
            "holder": holder,
            "key": e.content_key,
            "at": at,
            "seen_holder": a.seen_holder,
        }
        for a, e, at in ordered
        if a.seen_holder is not None
    ]
    for statement, parameters in ((_ABSORB_UNHELD, unheld), (_ABSORB_FROM_DEAD, from_dead)):
        if parameters and connection.execute(statement, parameters).rowcount != len(parameters):
            raise RaceLost("a row changed between reading and absorbing a redelivery")


def _insert(
    connection: Connection,
    new_rows: Sequence[tuple[NewRow, Event, datetime]],
    holder: str | None,
) -> dict[str, int]:
    """Insert the new rows; returns dedup_key -> id. A key another writer took meanwhile
    raises a unique violation, and the transaction decides again."""
    if not new_rows:
        return {}
    # In the order they arrived: ids tell the order of events ("the newest status of a cast"
    # is the row with the highest id), so no sorting for the sake of locks here.
    values = [
        _row(decision, event, received_at, holder) for decision, event, received_at in new_rows
    ]
    if connection.dialect.insert_executemany_returning:
        returned = connection.execute(_INSERT.returning(_c.id, _c.dedup_key), values)
        return {row.dedup_key: row.id for row in returned}
    connection.execute(_INSERT, values)  # MySQL: no RETURNING; read the ids back
    keys = [row["dedup_key"] for row in values]
    ids: dict[str, int] = {}
    for chunk in _chunks(keys):
        statement = select(_c.id, _c.dedup_key).where(_c.dedup_key.in_(chunk))
        ids.update({row.dedup_key: row.id for row in connection.execute(statement)})
    return ids


def _row(
    decision: NewRow, event: Event, received_at: datetime, holder: str | None
) -> dict[str, Any]:
    return {
        "dedup_key": decision.dedup_key,
        "content_key": event.content_key,
        "occurrence": decision.occurrence,
        "held_by": holder,
        "sub_app_id": event.sub_app_id,
        "event_type": event.event_type,
        "event_handle": event.event_handle,
        **{column: getattr(event, column) for column in PAYLOAD_COLUMNS},
        "payload": event.payload,
        "received_at": received_at,
        "delivered_at": received_at,
        "confirmed_at": None,
        "deliveries": 1,
    }


# -- letting go and folding ----------------------------------------------------------------


def _settle(
    connection: Connection,
    confirmed: Collection[int],
    released: Sequence[Release],
    holder: str | None,
    when: datetime,
) -> SettleResult:
    marked = 0
    for chunk in _chunks(sorted(set(confirmed))):
        marked += connection.execute(
            _CONFIRM, {"row_ids": list(chunk), "at": when, "holder": holder}
        ).rowcount
    folded = sum(_release(connection, item, holder) for item in released)
    return SettleResult(marked, len(released), folded)


def _release(connection: Connection, release: Release, holder: str | None) -> int:
    """Let go of a row; fold it into the twin delivered after it. 1 if folded."""
    connection.execute(
        update(vod_events).where(_c.id == release.row_id, _held_by_is(holder)).values(held_by=None)
    )
    row = connection.execute(
        select(
            _c.id,
            _c.content_key,
            _c.confirmed_at,
            _c.held_by,
            _c.deliveries,
            _c.received_at,
            _c.event_handle,
        ).where(_c.id == release.row_id)
    ).first()
    if row is None or row.confirmed_at is not None or row.held_by is not None:
        return 0  # folded into by someone, confirmed by another delivery, or taken again
    twins = [
        StoredRow(t.id, t.content_key, t.occurrence, t.confirmed_at is not None, t.held_by, t.at)
        for t in connection.execute(
            select(
                _c.id,
                _c.content_key,
                _c.occurrence,
                _c.confirmed_at,
                _c.held_by,
                _c.received_at,
                func.coalesce(_c.delivered_at, _c.received_at).label("at"),
            ).where(_c.content_key == row.content_key, _c.id != row.id)
        )
    ]
    released = StoredRow(row.id, row.content_key, 0, False, None, _utc(release.received_at))
    target = identity.fold_target(released, _utc(release.received_at), twins)
    if target is None:
        return 0
    received = connection.execute(select(_c.received_at).where(_c.id == target)).scalar_one()
    values: dict[str, Any] = {"deliveries": _c.deliveries + row.deliveries}
    if row.received_at < received:
        # The merged row is the event first received with the released row's delivery.
        values.update(received_at=row.received_at, event_handle=row.event_handle)
    connection.execute(update(vod_events).where(_c.id == target).values(values))
    connection.execute(delete(vod_events).where(_c.id == row.id))
    return 1


def _held_by_is(holder: str | None) -> Any:
    return _c.held_by.is_(None) if holder is None else _c.held_by == holder


# -- helpers -------------------------------------------------------------------------------


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), KEYS_PER_STATEMENT):
        yield items[start : start + KEYS_PER_STATEMENT]


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware one (UTC)")
    return value.astimezone(UTC)
