"""The forwarder's progress, kept in `vod_events` itself: which rows wait to be sent, a claim
on a few of them while one daemon sends them, and what came of each send (forwarder.py sends).

Columns (revision 0004): `forwarded_at` NULL until the handler answered 2xx; `forward_attempts`
the failed tries; `forward_claim` the token of the claim sending it now; `forward_after` no try
before this moment (after a failure), which is also when a claim runs out.

Why claims are shaped this way:

- A claim is one UPDATE guarded by the same "due" condition the candidates were read with,
  then a read of the rows carrying the claim's fresh random token. The UPDATE takes row locks
  (a write lock on SQLite) and PostgreSQL and InnoDB evaluate its WHERE on the newest committed
  version, so of two daemons claiming the same row the second finds it not due any more: no
  check-then-act race, and nothing dialect-specific (no SKIP LOCKED, no UPDATE ... LIMIT).
- A claim sets `forward_after` to its end instead of keeping a separate lease column: a daemon
  that dies while sending leaves a row that becomes due again when its claim runs out, and is
  sent again (at least once). Clocks of daemons on different hosts must agree to within the
  claim's margin, as for the heartbeat in daemons.py.
- A row is forwarded once it is settled: not held (`held_by` NULL), so confirmed, or let go of.
  A held row whose confirm fails may be folded into its twin and deleted (identity.py); sent
  before that, the handler would see one event under two keys, one of them gone from the table.
- What a round costs: the unforwarded rows are found through the `forwarded_at` index. Rows
  that `since` leaves out are skipped by an id bound (`SINCE_MARGIN`). Rows of types that
  `event_types` leaves out stay unforwarded and each round steps over them (measured with
  200,000 of them beside 200,000 forwarded ones: 155 ms a round on SQLite, 31 on PostgreSQL,
  295 on MariaDB; 3 ms on SQLite with an index on (forwarded_at, event_type) instead, which is
  a schema change for a revision to make).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, Engine, and_, bindparam, func, or_, select, update

from vodpoller.database import transaction, writer
from vodpoller.schema import UtcDateTime, vod_events

_c = vod_events.c
TOKEN_BYTES: Final = 16  # 32 hex characters, within forward_claim's 64


@dataclass(frozen=True)
class Selection:
    """Which rows are forwarded at all: `[forward] event_types` (empty: every type) and
    `since` (None: every row)."""

    event_types: tuple[str, ...] = ()
    since: datetime | None = None
    # Rows up to this id were all received before `since` (`ForwardQueue.first_after_since`).
    before_since_id: int | None = None

    def waiting(self) -> ColumnElement[bool]:
        """Rows not forwarded yet, settled, and selected (due or not)."""
        conditions: list[ColumnElement[bool]] = [
            _c.forwarded_at.is_(None),
            _c.held_by.is_(None),
        ]
        if self.event_types:
            conditions.append(_c.event_type.in_(self.event_types))
        if self.since is not None:
            conditions.append(_c.received_at >= self.since)
        if self.before_since_id is not None:
            conditions.append(_c.id > self.before_since_id)
        return and_(*conditions)


# `since` skips a database's history, which stays unforwarded: without a bound on the id each
# round would step over all of it (the forwarded_at index holds every unforwarded row). A row
# received a day before `since` bounds it: rows of lower ids were inserted before it, so
# received before `since` (received_at is set when the pull answers, just before the insert,
# and a fold only makes it earlier).
SINCE_MARGIN: Final = timedelta(days=1)


def due(now: datetime) -> ColumnElement[bool]:
    """Neither waiting out a failure's pause nor claimed by a daemon whose claim still runs."""
    return or_(_c.forward_after.is_(None), _c.forward_after <= now)


@dataclass(frozen=True)
class Claimed:
    """A row this daemon may send now, under the claim `token`."""

    row_id: int
    dedup_key: str
    payload: Any
    attempts: int  # failed tries before this one
    token: str


@dataclass(frozen=True)
class Waiting:
    """Rows waiting to be forwarded (due or not) and when the oldest of them was received."""

    rows: int
    oldest_received_at: datetime | None


class ForwardQueue:
    """The rows to forward, on one engine. Every method is one short transaction."""

    def __init__(self, engine: Engine, selection: Selection, *, claim_seconds: float):
        self.engine = engine
        self.selection = selection
        self.claim_seconds = claim_seconds
        self._bounded = selection.since is None

    def _bound(self) -> None:
        """With `since`: find the id below which every row was received before it, once."""
        if self._bounded or self.selection.since is None:
            return
        last_long_before = (
            select(_c.id)
            .where(_c.received_at < self.selection.since - SINCE_MARGIN)
            .order_by(_c.received_at.desc())
            .limit(1)
        )
        found = transaction(
            self.engine, "finding where forwarding begins", lambda c: c.scalar(last_long_before)
        )
        self.selection = replace(self.selection, before_since_id=found)
        self._bounded = True

    def claim(self, limit: int, now: datetime | None = None) -> list[Claimed]:
        """Claim up to `limit` due rows, oldest first; [] when none is due."""
        now = now or datetime.now(UTC)
        self._bound()
        candidates = (
            select(_c.id)
            .where(self.selection.waiting(), due(now))
            .order_by(_c.id)
            .limit(max(limit, 0))
        )
        ids = transaction(
            self.engine, "finding events to forward", lambda c: list(c.scalars(candidates))
        )
        if not ids:
            return []
        token = secrets.token_hex(TOKEN_BYTES)
        claim = (
            update(vod_events)
            .where(_c.id.in_(ids), _c.forwarded_at.is_(None), _c.held_by.is_(None), due(now))
            .values(forward_claim=token, forward_after=now + timedelta(seconds=self.claim_seconds))
        )
        claimed = (
            select(_c.id, _c.dedup_key, _c.payload, _c.forward_attempts)
            # By primary key: forward_claim has no index, and the table may hold millions.
            .where(_c.id.in_(ids), _c.forward_claim == token)
            .order_by(_c.id)
        )

        def work(connection: Connection) -> list[Claimed]:
            connection.execute(claim)
            return [
                Claimed(row.id, row.dedup_key, row.payload, row.forward_attempts, token)
                for row in connection.execute(claimed)
            ]

        return transaction(writer(self.engine), "claiming events to forward", work)

    def record(
        self,
        delivered: Iterable[Claimed],
        failed: Iterable[tuple[Claimed, datetime]],
        now: datetime | None = None,
    ) -> None:
        """What came of the sends: `delivered` rows are forwarded (whoever claims them now: the
        handler has them); each failed one is tried again at its moment, unless its claim was
        taken over meanwhile (then the new claimant decides)."""
        now = now or datetime.now(UTC)
        delivered_ids = sorted({item.row_id for item in delivered})
        retries = [
            {"row_id": item.row_id, "token": item.token, "retry_at": at} for item, at in failed
        ]
        if not delivered_ids and not retries:
            return

        def work(connection: Connection) -> None:
            if delivered_ids:
                connection.execute(
                    update(vod_events)
                    .where(_c.id.in_(delivered_ids), _c.forwarded_at.is_(None))
                    .values(forwarded_at=now, forward_claim=None)
                )
            if retries:
                connection.execute(_RETRY, retries)

        transaction(writer(self.engine), "recording forwarded events", work)

    def release(self, claimed: Sequence[Claimed]) -> None:
        """Give back claims that were never sent: due at once, for this daemon after a restart
        or for another one."""
        if not claimed:
            return
        statements = [
            update(vod_events)
            .where(
                _c.id.in_(sorted(item.row_id for item in claimed if item.token == token)),
                _c.forward_claim == token,
            )
            .values(forward_claim=None, forward_after=None)
            for token in sorted({item.token for item in claimed})
        ]

        def work(connection: Connection) -> None:
            for statement in statements:
                connection.execute(statement)

        transaction(writer(self.engine), "releasing claims on events to forward", work)

    def waiting(self) -> Waiting:
        """How many rows wait to be forwarded, and the oldest one's `received_at` (for the lag)."""
        self._bound()
        statement = select(func.count(), func.min(_c.received_at)).where(self.selection.waiting())

        def work(connection: Connection) -> Waiting:
            # min() keeps the column's type: an aware UTC datetime on every dialect.
            rows, oldest = connection.execute(statement).one()
            return Waiting(int(rows or 0), oldest)

        return transaction(self.engine, "counting events to forward", work)


# A failed try: counted, its claim given up, not tried again before `retry_at`. Only while the
# claim is still ours: one that ran out and was taken over belongs to the new claimant.
_RETRY: Final = (
    update(vod_events)
    .where(_c.id == bindparam("row_id"), _c.forward_claim == bindparam("token"))
    .values(
        forward_attempts=_c.forward_attempts + 1,
        forward_claim=None,
        forward_after=bindparam("retry_at", type_=UtcDateTime()),
    )
)
