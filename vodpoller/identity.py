"""Pure: event identity. Which stored row a delivered entry is (a redelivery, absorbed) or
whether it is a new event (a new row), decided from the rows that say the same thing.

VOD entries carry no event id, and identical content is not proof of a redelivery: a cast
goes Working, Stopped, Working and sends the same Working twice. What VOD does promise:

- an event comes again only when its confirm did not take effect (lost, refused because the
  30 s had passed, never sent because the consumer died between commit and confirm);
- the entries of one answer are distinct events.

So a delivery is a redelivery of a stored row of the same content only when that row's
confirm is known not to have taken effect: the row is not confirmed and no living daemon
holds it (a daemon holds the rows whose confirm it still has to send or hear back from;
it lets go when the confirm fails, and a daemon that died lets go of everything). Anything
else is a new event with the next occurrence number of that content.

A delivery that arrives while the row it repeats is still held (the holder's lease ran out
before it confirmed, so VOD delivered the event again) becomes a new row at first. The
holder's confirm then fails, because the handle expired, and releasing the row folds it into
the twin delivered after its pull went out (`fold_target`): one row again. If the two were in fact
distinct events, the released one is delivered again later (its confirm did not take
effect) and becomes a row of its own then, so folding never loses an event.
Storing such a twin locks the held row, and letting go of it locks it too: whichever of
the two transactions comes second sees what the first wrote (the twin to fold into, or the
row let go of, which then takes the redelivery), so the two cannot both miss each other.

The one case that cannot be told apart: a daemon dies after VOD took its confirm and before
the database recorded it; a later event identical to that one is then taken for its
redelivery. The window is one confirm round trip; the alternative (a new row whenever the
holder died) would turn every crash between commit and confirm, a far wider window, into a
duplicate row.

A pushed delivery (normal callback: VOD POSTs the event to the receiver) has no handle, so
nothing is confirmed and nothing is held; it is an event of its own channel. VOD sends each
event by push once (again only while it gets no HTTP 200) and by pull once (again only while
the confirm does not take effect), so a push is the same event as a stored row of the same
content that no push reached yet (`pushed_deliveries = 0`): confirmed or not, whoever holds
it, the lowest occurrence first. Otherwise it is a new event. A pull then finds a pushed-only
row through the first rule (not confirmed, nobody holds it): pushed then pulled is one row,
and so is pulled then pushed.

The case that cannot be told apart here: VOD repeats a push whose 200 we sent but it never
received. The repeat finds no row without a push and becomes a second row: a flagged
duplicate (both rows say `pushed_deliveries = 1`), never a lost event. Two identical pushes
are otherwise two events (a cast that goes Working, Stopped, Working).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

# How far apart a pushed and a pulled copy of one event may arrive to be taken for one event.
# VOD serves an application in one mode at a time (ModifyEventConfig Mode=PUSH or PULL); both
# copies of an event come only around a switch, and a push is retried for a short while.
# Farther apart, two identical contents are two events (a cast Working before the switch and
# Working again after it): a possible duplicate, never an event swallowed by an old row.
CHANNEL_WINDOW: Final = timedelta(minutes=5)


class Keyed(Protocol):
    """What identity needs of a parsed event."""

    @property
    def content_key(self) -> str: ...

    @property
    def legacy_key(self) -> str: ...


@dataclass
class StoredRow:
    """A row of the same content as some delivery, as the database holds it now."""

    row_id: int
    content_key: str
    occurrence: int
    confirmed: bool
    held_by: str | None
    delivered_at: datetime  # when its latest delivery arrived
    pushed_deliveries: int = 0  # of its deliveries, those that came by push
    deliveries: int = 1

    @property
    def pushed_only(self) -> bool:
        """Every delivery came by push: nobody pulled it, nothing will confirm it."""
        return self.pushed_deliveries >= self.deliveries


@dataclass(frozen=True)
class Absorb:
    """The delivery is a redelivery of `row_id`. `seen_holder` is the holder the decision
    saw (None, or a dead daemon): the write must find it unchanged, or decide again.
    `pushed`: the pushed copy of the row's event; the write must find the row still without
    a push (its holder does not matter), or decide again."""

    row_id: int
    seen_holder: str | None
    pushed: bool = False


@dataclass(frozen=True)
class NewRow:
    """The delivery is a new event: a row with this occurrence number and dedup key."""

    occurrence: int
    dedup_key: str


Decision = Absorb | NewRow


def dedup_key(content_key: str, legacy_key: str, occurrence: int) -> str:
    """The first event of some content keeps the key of version 0.1 (its first delivery as
    received, null keys included), so daemons of both versions share rows during an upgrade;
    the n-th later one gets SHA-256 hex of `<content_key>#<n>`."""
    if occurrence == 0:
        return legacy_key
    return hashlib.sha256(f"{content_key}#{occurrence}".encode()).hexdigest()


def plan(
    answers: Sequence[Sequence[Keyed]],
    rows: Iterable[StoredRow],
    *,
    holder: str | None,
    dead: Collection[str] = (),
    highest: Mapping[str, int] | None = None,
    pushed: Sequence[bool] = (),
    arrived: Sequence[datetime] = (),
) -> list[list[Decision]]:
    """One decision per delivery, answer by answer, in order. `rows`: the stored rows of the
    same contents that may take a redelivery (confirmed ones never take a pulled one, so they
    need not be read for pulled answers; for pushed ones, every row of the content without a
    push); `highest`: the highest occurrence stored of each content, confirmed rows included
    (from `rows` when not given); `dead`: the holders known to have died; `holder`: the
    daemon storing them (None: nobody will confirm them); `pushed`: per answer, whether it
    came by push (missing: pulled); `arrived`: per answer, when it arrived (missing: the two
    channels meet whenever). Within the plan no row takes two deliveries, whichever answers
    they are in: each is in our hands until we confirm it."""
    by_content: dict[str, list[StoredRow]] = {}
    top: dict[str, int] = dict(highest or {})
    for stored in rows:
        by_content.setdefault(stored.content_key, []).append(stored)
        top[stored.content_key] = max(top.get(stored.content_key, -1), stored.occurrence)
    for same in by_content.values():
        same.sort(key=lambda row: row.occurrence)
    taken: set[int] = set()  # rows that took a delivery of this plan: now in our hands
    decisions: list[list[Decision]] = []
    for index, answer in enumerate(answers):
        by_push = index < len(pushed) and pushed[index]
        at = arrived[index] if index < len(arrived) else None
        decided: list[Decision] = []
        for event in answer:
            same = by_content.get(event.content_key, [])
            redelivered = next(
                (
                    r
                    for r in same
                    if r.row_id not in taken
                    and (
                        _other_channel_of(r, at, pushed=True)
                        if by_push
                        else _redeliverable(r, holder, dead) and _other_channel_of(r, at)
                    )
                ),
                None,
            )
            if redelivered is not None:
                decided.append(Absorb(redelivered.row_id, redelivered.held_by, pushed=by_push))
                taken.add(redelivered.row_id)
                continue
            occurrence = top.get(event.content_key, -1) + 1
            top[event.content_key] = occurrence  # the next one of this plan comes after it
            decided.append(
                NewRow(occurrence, dedup_key(event.content_key, event.legacy_key, occurrence))
            )
        decisions.append(decided)
    return decisions


def _other_channel_of(row: StoredRow, at: datetime | None, *, pushed: bool = False) -> bool:
    """Whether a delivery arriving `at` may be the other channel's copy of `row`'s event. A
    push: only of a row no push reached yet, delivered within CHANNEL_WINDOW before it. A
    pull: any row that was pulled before (the usual redelivery rule decides), but a row that
    came only by push only within the window: a pushed event that nothing will ever confirm
    must not swallow a later event of the same content."""
    if pushed:
        return row.pushed_deliveries == 0 and _within_window(row, at)
    return not row.pushed_only or _within_window(row, at)


def _within_window(row: StoredRow, at: datetime | None) -> bool:
    return at is None or at - row.delivered_at <= CHANNEL_WINDOW


def _redeliverable(row: StoredRow, holder: str | None, dead: Collection[str]) -> bool:
    """The row's confirm is known not to have taken effect: not confirmed, and let go of."""
    if row.confirmed:
        return False
    return row.held_by is None or (row.held_by != holder and row.held_by in dead)


def fold_target(
    released: StoredRow, pulled_at: datetime, answered_at: datetime, twins: Iterable[StoredRow]
) -> int | None:
    """The row a released one is the same event as: of the twins (same content) delivered
    after the released delivery's pull went out (its lease began then; VOD gives the event
    out again only once the lease ran out, so a copy delivered before belongs to another
    event), the first. None when there is none. A twin of the same answer (same time as the
    released delivery's answer) is a distinct event by VOD's rule, so it never counts."""
    later = [
        twin
        for twin in twins
        if twin.row_id != released.row_id
        and twin.content_key == released.content_key
        and twin.delivered_at > pulled_at
        and twin.delivered_at != answered_at
    ]
    if not later:
        return None
    return min(later, key=lambda twin: (twin.delivered_at, twin.row_id)).row_id
