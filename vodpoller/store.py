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
    and_,
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

from vodpoller import identity, pgnotify, rawjson
from vodpoller.classify import one_line
from vodpoller.daemons import dead_among
from vodpoller.database import (
    RaceLost,
    RawJSON,
    driver_message,
    is_unique_violation,
    is_value_error,
    make_engine,
    safe_url,
    transaction,
    writer,
)
from vodpoller.errors import StorageError, describe
from vodpoller.events import PAYLOAD_COLUMNS, Event, storable
from vodpoller.identity import Absorb, NewRow, StoredRow
from vodpoller.logs import get_logger
from vodpoller.schema import vod_events, vod_rejects

_T = TypeVar("_T")
_log = get_logger(__name__)

# Far below the bind-parameter limits (SQLite 32,766; PostgreSQL 65,535) in an IN list.
KEYS_PER_STATEMENT: Final = 500

_c = vod_events.c
# Built once: SQLAlchemy caches their compiled form, so a batch does not compile SQL anew.
# The rows that may take a redelivery (not confirmed), and every row a 0.1 daemon may have
# written for these entries (found by its 0.1 key; one at most per key).
_CANDIDATE_COLUMNS = (
    _c.id,
    _c.content_key,
    _c.dedup_key,
    _c.occurrence,
    _c.confirmed_at,
    _c.held_by,
    func.coalesce(_c.delivered_at, _c.received_at).label("delivered_at"),
    _c.pushed_deliveries,
    _c.deliveries,
)
_OPEN_OF_CONTENT = select(*_CANDIDATE_COLUMNS).where(
    or_(
        and_(
            _c.content_key.in_(bindparam("content_keys", expanding=True)),
            _c.confirmed_at.is_(None),
        ),
        _c.dedup_key.in_(bindparam("legacy_keys", expanding=True)),
    )
)
# Read only for pushed deliveries: the rows no push reached yet, confirmed ones included (a
# pushed copy of a pulled and confirmed event is still that event), delivered lately enough
# to be its other channel's copy (identity.CHANNEL_WINDOW).
_UNPUSHED_OF_CONTENT = select(*_CANDIDATE_COLUMNS).where(
    or_(
        _c.content_key.in_(bindparam("content_keys", expanding=True)),
        _c.dedup_key.in_(bindparam("legacy_keys", expanding=True)),
    ),
    _c.pushed_deliveries == 0,
    func.coalesce(_c.delivered_at, _c.received_at) >= bindparam("since"),
)
# The highest occurrence of each content: confirmed rows count for the numbering, and a
# content that occurred thousands of times is one index lookup, not thousands of rows.
_HIGHEST_OF_CONTENT = (
    select(_c.content_key, func.max(_c.occurrence))
    .where(_c.content_key.in_(bindparam("content_keys", expanding=True)))
    .group_by(_c.content_key)
)
_INSERT = insert(vod_events)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
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
# A pushed copy: only while no other push reached the row; its holder and confirm stay as
# they are (a push has nothing to confirm).
_ABSORB_PUSHED = (
    update(vod_events)
    .where(_c.id == bindparam("row_id"), _c.pushed_deliveries == 0)
    .values(
        deliveries=_c.deliveries + 1,
        pushed_deliveries=_c.pushed_deliveries + 1,
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
class Reject:
    """An entry kept in `vod_rejects` instead of `vod_events`: its text as received and why."""

    text: str
    handle: str | None
    reason: str


@dataclass(frozen=True)
class Answer:
    """The entries of one `PullEvents` answer (distinct events, by VOD's rule) and when it
    arrived; all of them get this `received_at`. `rejects`: the entries that cannot be
    events (unparseable), kept in `vod_rejects` in the same transaction. `pushed`: they came
    by normal callback (the receiver), not by a pull: no handle, nothing to hold or confirm."""

    events: Sequence[Event]
    received_at: datetime
    sub_app_id: int | None = None
    rejects: Sequence[Reject] = ()
    pushed: bool = False


@dataclass(frozen=True)
class SaveResult:
    """`stored`: new rows; `duplicates`: deliveries of events already stored; `row_ids`: the
    row of each event, in order, None for an event the database refused (kept in
    `vod_rejects` instead: `refused` counts them)."""

    stored: int
    duplicates: int
    row_ids: tuple[int | None, ...] = field(default=(), compare=False)
    refused: int = field(default=0, compare=False)
    new_ids: frozenset[int] = field(default=frozenset(), compare=False)  # rows created now

    @property
    def ids(self) -> tuple[int, ...]:
        """The rows, when the database took every event (it refused none)."""
        if self.refused or any(row_id is None for row_id in self.row_ids):
            raise ValueError(f"the database refused {self.refused} of these events")
        return tuple(row_id for row_id in self.row_ids if row_id is not None)


@dataclass(frozen=True)
class Release:
    """A row whose latest delivery's confirm did not take effect; `received_at` is when that
    delivery arrived (the `received_at` it was saved with), `pulled_at` when its pull went
    out (the lease began then; None: take `received_at`)."""

    row_id: int
    received_at: datetime
    pulled_at: datetime | None = None


@dataclass(frozen=True)
class SettleResult:
    confirmed: int  # rows that got their confirmed_at now
    released: int
    folded: int  # released rows that turned out to be a twin's earlier delivery


class EventStore:
    """Every database error becomes `StorageError`. `notify_channel` (PostgreSQL): each
    transaction that creates rows NOTIFYs it with their ids and types (pgnotify.py)."""

    def __init__(self, engine: Engine, *, notify_channel: str = "") -> None:
        self.engine = engine
        self._writer = writer(engine)
        self.notify_channel = notify_channel

    @classmethod
    def connect(cls, url: str, *, read_only: bool = False, notify_channel: str = "") -> EventStore:
        """Create the engine (connections are opened lazily, on first use); `read_only` opens a
        SQLite file read-only and creates nothing."""
        try:
            return cls(make_engine(url, read_only=read_only), notify_channel=notify_channel)
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
        if not any(answer.events or answer.rejects for answer in answers):
            return [SaveResult(0, 0) for _ in answers]
        count = sum(len(answer.events) for answer in answers)

        def work(connection: Connection, careful: bool) -> list[SaveResult]:
            results = _save(connection, answers, holder, careful=careful)
            self._notify(connection, answers, results)
            return results

        return self._carefully(f"storing a batch of {count} events", work)

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
        if not any(answer.events or answer.rejects for answer in answers):
            settled = self.settle(confirmed, released, holder=holder)
            return [SaveResult(0, 0) for _ in answers], settled
        when = datetime.now(UTC)
        what = f"storing a batch of {sum(len(answer.events) for answer in answers)} events"

        def work(connection: Connection, careful: bool) -> tuple[list[SaveResult], SettleResult]:
            settled = _settle(connection, confirmed, released, holder, when)
            results = _save(connection, answers, holder, careful=careful)
            self._notify(connection, answers, results)
            return results, settled

        return self._carefully(what, work)

    def _carefully(self, what: str, work: Callable[[Connection, bool], _T]) -> _T:
        """`work(connection, careful=False)` in a transaction; again with `careful=True` when
        the database refused a value."""
        try:
            return transaction(self._writer, what, lambda connection: work(connection, False))
        except StorageError as error:
            if not is_value_error(error.__cause__):
                raise
            # One entry holds a value this database refuses (a number beyond its JSON, say):
            # again, one new row at a time, so that only that entry goes to vod_rejects.
            cause = error.__cause__
            _log.warning(
                "the database refused a value; storing the batch entry by entry",
                error=_reason(cause) if cause is not None else describe(error),
            )
            return transaction(self._writer, what, lambda connection: work(connection, True))

    def _notify(
        self, connection: Connection, answers: Sequence[Answer], results: Sequence[SaveResult]
    ) -> None:
        """Inside the transaction: PostgreSQL delivers a NOTIFY only when it commits."""
        if not self.notify_channel:
            return
        created = [
            (row_id, event.event_type)
            for answer, result in zip(answers, results, strict=True)
            for event, row_id in zip(answer.events, result.row_ids, strict=True)
            if row_id is not None and row_id in result.new_ids
        ]
        pgnotify.send(connection, self.notify_channel, created)

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
    connection: Connection, answers: Sequence[Answer], holder: str | None, *, careful: bool = False
) -> list[SaveResult]:
    events = [event for answer in answers for event in answer.events]
    pushed = [event for answer in answers if answer.pushed for event in answer.events]
    pushed_since = min((answer.received_at for answer in answers if answer.pushed), default=None)
    candidates, highest = _same_content(
        connection,
        events,
        pushed,
        None if pushed_since is None else pushed_since - identity.CHANNEL_WINDOW,
    )
    others = {row.held_by for row in candidates if row.held_by not in (None, holder)}
    dead = dead_among(connection, {h for h in others if h is not None}) if others else set()
    decisions = identity.plan(
        [answer.events for answer in answers],
        candidates,
        holder=holder,
        dead=dead,
        highest=highest,
        pushed=[answer.pushed for answer in answers],
        arrived=[answer.received_at for answer in answers],
    )
    absorbs: list[tuple[Absorb, Event, datetime]] = []
    new_rows: list[tuple[NewRow, Event, datetime, bool]] = []
    for answer, decided in zip(answers, decisions, strict=True):
        for event, decision in zip(answer.events, decided, strict=True):
            if isinstance(decision, Absorb):
                absorbs.append((decision, event, answer.received_at))
            else:
                new_rows.append((decision, event, answer.received_at, answer.pushed))
    _hold_still(connection, candidates, {e.content_key for _, e, _, _ in new_rows}, holder, dead)
    _absorb(connection, absorbs, holder)
    if careful:
        ids, refused = _insert_one_by_one(connection, new_rows, holder)
    else:
        ids, refused = _insert(connection, new_rows, holder), {}
    results = []
    for answer, decided in zip(answers, decisions, strict=True):
        row_ids = tuple(
            d.row_id if isinstance(d, Absorb) else ids.get(d.dedup_key) for d in decided
        )
        turned_away = [
            (event, refused[d.dedup_key])
            for event, d in zip(answer.events, decided, strict=True)
            if isinstance(d, NewRow) and d.dedup_key in refused
        ]
        stored = sum(isinstance(d, NewRow) for d in decided) - len(turned_away)
        kept = [
            *answer.rejects,
            *(
                Reject(
                    event.payload_text or rawjson.dumps(event.payload),
                    event.event_handle or None,
                    reason,
                )
                for event, reason in turned_away
            ),
        ]
        _keep_rejects(connection, answer, kept)
        duplicates = len(decided) - stored - len(turned_away)
        created = frozenset(
            ids[d.dedup_key] for d in decided if isinstance(d, NewRow) and d.dedup_key in ids
        )
        results.append(SaveResult(stored, duplicates, row_ids, len(turned_away), created))
    return results


def _hold_still(
    connection: Connection,
    candidates: Sequence[StoredRow],
    new_contents: Collection[str],
    holder: str | None,
    dead: Collection[str],
) -> None:
    """Lock the rows another living daemon held when the plan gave their content a new row,
    and find them as the plan saw them. The holder may be letting go of one (its confirm
    failed: our delivery is its redelivery): its release either came first, and the plan is
    made again (RaceLost), or waits for this transaction and then folds its row into ours.
    Without the lock, each would miss the other's write and both rows would stay."""
    seen = {
        row.row_id: row.held_by
        for row in candidates
        if row.content_key in new_contents
        and not row.confirmed
        and row.held_by not in (None, holder)
        and row.held_by not in dead
    }
    if not seen:
        return
    now = {
        row.id: row.held_by
        for row in connection.execute(
            select(_c.id, _c.held_by)
            .where(_c.id.in_(sorted(seen)), _c.confirmed_at.is_(None))
            .order_by(_c.id)
            .with_for_update()
        )
    }
    if now != seen:
        raise RaceLost("a held row was let go of while a twin of it was being stored")


def _same_content(
    connection: Connection,
    events: Sequence[Event],
    pushed: Sequence[Event] = (),
    pushed_since: datetime | None = None,
) -> tuple[list[StoredRow], dict[str, int]]:
    """The stored rows that say what these events say and may take a redelivery (for the
    `pushed` ones among them, also the confirmed rows no push reached yet, delivered since
    `pushed_since`), and the highest
    occurrence of each content. A row a 0.1 daemon wrote has no content_key and is found by
    its dedup_key, the 0.1 key of the same bytes."""
    content_of_legacy = {event.legacy_key: event.content_key for event in events}
    found: dict[int, StoredRow] = {}
    # The highest occurrences first: each statement sees what committed before it began (READ
    # COMMITTED), so a row committed between the two reads is then among the candidates (and
    # absorbs its twin) rather than only among the numbers (which would make its twin a new
    # event). A row committed after both reads makes the insert collide; the retry sees it.
    all_keys = sorted({event.content_key for event in events})
    highest: dict[str, int] = {}
    for start in range(0, len(all_keys), KEYS_PER_STATEMENT):
        keys = all_keys[start : start + KEYS_PER_STATEMENT]
        highest.update(
            (key, top)
            for key, top in connection.execute(_HIGHEST_OF_CONTENT, {"content_keys": keys})
        )
    for statement, which in ((_OPEN_OF_CONTENT, events), (_UNPUSHED_OF_CONTENT, pushed)):
        content_keys = sorted({event.content_key for event in which})
        legacy_keys = sorted({event.legacy_key for event in which})
        for start in range(0, max(len(content_keys), len(legacy_keys)), KEYS_PER_STATEMENT):
            keys = content_keys[start : start + KEYS_PER_STATEMENT]
            rows = connection.execute(
                statement,
                {
                    "content_keys": keys,
                    "legacy_keys": legacy_keys[start : start + KEYS_PER_STATEMENT],
                    "since": pushed_since or _EPOCH,
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
                    pushed_deliveries=row.pushed_deliveries,
                    deliveries=row.deliveries,
                )
    return list(found.values()), highest


def _absorb(
    connection: Connection,
    absorbs: Sequence[tuple[Absorb, Event, datetime]],
    holder: str | None,
) -> None:
    # In id order, as every writer does: two daemons lock rows in the same order.
    ordered = sorted(absorbs, key=lambda item: item[0].row_id)
    pushed = [
        {"row_id": a.row_id, "key": e.content_key, "at": at} for a, e, at in ordered if a.pushed
    ]
    ordered = [item for item in ordered if not item[0].pushed]
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
    for statement, parameters in (
        (_ABSORB_UNHELD, unheld),
        (_ABSORB_FROM_DEAD, from_dead),
        (_ABSORB_PUSHED, pushed),
    ):
        if parameters and connection.execute(statement, parameters).rowcount != len(parameters):
            raise RaceLost("a row changed between reading and absorbing a redelivery")


def _insert(
    connection: Connection,
    new_rows: Sequence[tuple[NewRow, Event, datetime, bool]],
    holder: str | None,
) -> dict[str, int]:
    """Insert the new rows; returns dedup_key -> id. A key another writer took meanwhile
    raises a unique violation, and the transaction decides again."""
    if not new_rows:
        return {}
    # In the order they arrived: ids tell the order of events ("the newest status of a cast"
    # is the row with the highest id), so no sorting for the sake of locks here.
    values = [
        _row(decision, event, received_at, holder, by_push)
        for decision, event, received_at, by_push in new_rows
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


def _insert_one_by_one(
    connection: Connection,
    new_rows: Sequence[tuple[NewRow, Event, datetime, bool]],
    holder: str | None,
) -> tuple[dict[str, int], dict[str, str]]:
    """Each new row in a savepoint of its own: those the database refuses are left out, with
    the reason (dedup_key -> reason). Only after a batch was refused as a whole."""
    ids: dict[str, int] = {}
    refused: dict[str, str] = {}
    for decision, event, received_at, by_push in new_rows:
        row = _row(decision, event, received_at, holder, by_push)
        try:
            with connection.begin_nested():
                # Read inside the savepoint: SQLite cannot release one with a result open.
                row_id = connection.execute(_INSERT.returning(_c.id), row).scalar_one()
        except (SQLAlchemyError, ValueError, OverflowError, UnicodeError) as error:
            if isinstance(error, SQLAlchemyError) and is_unique_violation(error):
                raise RaceLost("a key was taken while storing entry by entry") from error
            if not is_value_error(error):
                raise
            refused[decision.dedup_key] = one_line(f"the database refused it: {_reason(error)}")
            continue
        ids[decision.dedup_key] = int(row_id)
    return ids, refused


def _keep_rejects(connection: Connection, answer: Answer, rejects: Sequence[Reject]) -> None:
    if not rejects:
        return
    connection.execute(
        insert(vod_rejects),
        [
            {
                "sub_app_id": answer.sub_app_id,
                "event_handle": None if reject.handle is None else storable(reject.handle),
                "raw": storable(reject.text),
                "reason": one_line(reject.reason, 1000),
                "received_at": answer.received_at,
            }
            for reject in rejects
        ],
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, SQLAlchemyError):
        return driver_message(error)
    return f"{type(error).__name__}: {error}"


def _row(
    decision: NewRow, event: Event, received_at: datetime, holder: str | None, pushed: bool
) -> dict[str, Any]:
    return {
        "dedup_key": decision.dedup_key,
        "content_key": event.content_key,
        "occurrence": decision.occurrence,
        # A pushed delivery has no handle to confirm (one it carries anyway means nothing).
        "held_by": None if pushed else holder,
        "sub_app_id": event.sub_app_id,
        "event_type": event.event_type,
        "event_handle": "" if pushed else event.event_handle,
        **{column: getattr(event, column) for column in PAYLOAD_COLUMNS},
        "payload": event.payload if event.payload_text is None else RawJSON(event.payload_text),
        "received_at": received_at,
        "delivered_at": received_at,
        "confirmed_at": None,
        "deliveries": 1,
        "pushed_deliveries": 1 if pushed else 0,
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
            _c.pushed_deliveries,
            _c.received_at,
            _c.event_handle,
            _c.forwarded_at,
        )
        .where(_c.id == release.row_id)
        .with_for_update(read=True)
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
            )
            .where(_c.content_key == row.content_key, _c.id != row.id)
            # A locking read sees what is committed now, also under InnoDB's REPEATABLE
            # READ: a twin committed while this transaction waited for a row lock counts.
            .with_for_update(read=True)
        )
    ]
    released = StoredRow(row.id, row.content_key, 0, False, None, _utc(release.received_at))
    answered_at = _utc(release.received_at)
    pulled_at = answered_at if release.pulled_at is None else _utc(release.pulled_at)
    target = identity.fold_target(released, pulled_at, answered_at, twins)
    if target is None:
        return 0
    received = connection.execute(select(_c.received_at).where(_c.id == target)).scalar_one()
    values: dict[str, Any] = {
        "deliveries": _c.deliveries + row.deliveries,
        "pushed_deliveries": _c.pushed_deliveries + row.pushed_deliveries,
    }
    if row.received_at < received:
        # The merged row is the event first received with the released row's delivery.
        values.update(received_at=row.received_at, event_handle=row.event_handle)
    if row.forwarded_at is not None:
        # The handler has the event (under the released row's key): not again under the twin's.
        values["forwarded_at"] = func.coalesce(_c.forwarded_at, row.forwarded_at)
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
