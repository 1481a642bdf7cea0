"""`identity.py`: which row a delivery is, and which twin a released row folds into."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from vodpoller.identity import (
    CHANNEL_WINDOW,
    Absorb,
    NewRow,
    StoredRow,
    dedup_key,
    fold_target,
    plan,
)

ME = "daemon-me"
OTHER = "daemon-other"
T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Delivery:
    content_key: str
    legacy_key: str


def delivery(content: str = "c", legacy: str | None = None) -> Delivery:
    return Delivery(content, legacy or f"legacy-of-{content}")


def row(
    row_id: int,
    *,
    content: str = "c",
    occurrence: int = 0,
    confirmed: bool = False,
    held_by: str | None = None,
    at: datetime = T0,
    pushed: int = 0,
    deliveries: int | None = None,
) -> StoredRow:
    # By default a pushed row came only by push (its deliveries are its pushes).
    total = deliveries if deliveries is not None else max(1, pushed)
    return StoredRow(row_id, content, occurrence, confirmed, held_by, at, pushed, total)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- dedup keys ------------------------------------------------------------------------------


def test_the_first_event_of_a_content_keeps_the_legacy_key() -> None:
    assert dedup_key("content", "legacy", 0) == "legacy"


@pytest.mark.parametrize("occurrence", [1, 2, 17])
def test_later_events_of_a_content_get_a_key_of_their_number(occurrence: int) -> None:
    assert dedup_key("content", "legacy", occurrence) == sha(f"content#{occurrence}")


# -- plan: new events ------------------------------------------------------------------------


def test_a_content_never_seen_is_a_new_row_with_the_legacy_key() -> None:
    assert plan([[delivery()]], [], holder=ME) == [[NewRow(0, "legacy-of-c")]]


def test_entries_of_one_answer_are_distinct_events_even_when_identical() -> None:
    assert plan([[delivery(), delivery(), delivery()]], [], holder=ME) == [
        [NewRow(0, "legacy-of-c"), NewRow(1, sha("c#1")), NewRow(2, sha("c#2"))]
    ]


def test_a_confirmed_row_is_never_redelivered_so_its_twin_is_a_new_event() -> None:
    rows = [row(1, confirmed=True), row(2, occurrence=1, confirmed=True)]
    assert plan([[delivery()]], rows, holder=ME) == [[NewRow(2, sha("c#2"))]]


def test_occurrence_numbers_continue_after_the_highest_whatever_the_row_order() -> None:
    rows = [row(9, occurrence=4, confirmed=True), row(3, occurrence=1, confirmed=True)]
    assert plan([[delivery()]], rows, holder=ME) == [[NewRow(5, sha("c#5"))]]


def test_a_row_held_by_a_living_daemon_is_not_taken() -> None:
    assert plan([[delivery()]], [row(1, held_by=OTHER)], holder=ME) == [[NewRow(1, sha("c#1"))]]


def test_a_row_this_daemon_holds_is_not_taken_even_if_listed_as_dead() -> None:
    rows = [row(1, held_by=ME)]
    assert plan([[delivery()]], rows, holder=ME, dead={ME}) == [[NewRow(1, sha("c#1"))]]


def test_other_contents_do_not_count() -> None:
    rows = [row(1, content="other", held_by=None)]
    assert plan([[delivery()]], rows, holder=ME) == [[NewRow(0, "legacy-of-c")]]


# -- plan: redeliveries ----------------------------------------------------------------------


def test_a_row_let_go_of_takes_the_redelivery() -> None:
    assert plan([[delivery()]], [row(1)], holder=ME) == [[Absorb(1, None)]]


def test_a_row_held_by_a_dead_daemon_takes_the_redelivery() -> None:
    assert plan([[delivery()]], [row(1, held_by=OTHER)], holder=ME, dead={OTHER}) == [
        [Absorb(1, OTHER)]
    ]


def test_the_lowest_occurrence_waiting_takes_it_first() -> None:
    rows = [row(7, occurrence=2), row(5, occurrence=0, confirmed=True), row(6, occurrence=1)]
    assert plan([[delivery()]], rows, holder=ME) == [[Absorb(6, None)]]


def test_each_row_takes_at_most_one_delivery_of_one_answer() -> None:
    rows = [row(1), row(2, occurrence=1)]
    assert plan([[delivery(), delivery(), delivery()]], rows, holder=ME) == [
        [Absorb(1, None), Absorb(2, None), NewRow(2, sha("c#2"))]
    ]


def test_a_row_taken_by_one_answer_is_not_taken_by_the_next_in_the_same_plan() -> None:
    assert plan([[delivery()], [delivery()]], [row(1)], holder=ME) == [
        [Absorb(1, None)],
        [NewRow(1, sha("c#1"))],
    ]


def test_without_a_holder_a_taken_row_still_takes_no_second_delivery() -> None:
    assert plan([[delivery()], [delivery()]], [row(1)], holder=None) == [
        [Absorb(1, None)],
        [NewRow(1, sha("c#1"))],
    ]


def test_a_new_row_of_an_earlier_answer_is_held_by_this_daemon() -> None:
    assert plan([[delivery()], [delivery()]], [], holder=ME) == [
        [NewRow(0, "legacy-of-c")],
        [NewRow(1, sha("c#1"))],
    ]


def test_contents_are_decided_independently_within_one_answer() -> None:
    rows = [row(1, content="a"), row(2, content="b", confirmed=True)]
    decisions = plan([[delivery("a"), delivery("b"), delivery("a")]], rows, holder=ME)
    assert decisions == [[Absorb(1, None), NewRow(1, sha("b#1")), NewRow(1, sha("a#1"))]]


# -- folding ---------------------------------------------------------------------------------


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_released_row_folds_into_the_twin_delivered_after_its_answer() -> None:
    released = row(1)
    twins = [row(2, occurrence=1, at=later(31)), row(3, content="other", at=later(40))]
    assert fold_target(released, T0, T0, twins) == 2


def test_a_twin_of_the_same_answer_is_another_event_and_never_a_target() -> None:
    assert fold_target(row(1), T0, T0, [row(2, occurrence=1, at=T0)]) is None


def test_a_twin_delivered_before_is_not_a_target() -> None:
    assert fold_target(row(1), T0, T0, [row(2, occurrence=1, at=later(-5))]) is None


def test_the_row_itself_is_not_its_own_twin() -> None:
    assert fold_target(row(1), T0, T0, [row(1, at=later(5))]) is None


def test_a_twin_of_another_content_is_not_a_target() -> None:
    assert fold_target(row(1), T0, T0, [row(2, content="x", at=later(5))]) is None


def test_of_several_later_twins_the_first_delivered_wins_then_the_lowest_id() -> None:
    twins = [row(4, at=later(9)), row(3, at=later(5)), row(2, at=later(5))]
    assert fold_target(row(1), T0, T0, twins) == 2


def test_a_twin_confirmed_or_held_by_anyone_is_a_target_all_the_same() -> None:
    twins = [row(2, confirmed=True, held_by=OTHER, at=later(1))]
    assert fold_target(row(1), T0, T0, twins) == 2


def test_the_highest_occurrence_given_counts_without_its_rows() -> None:
    # Confirmed rows need not be read: only how far their numbering went.
    assert plan([[delivery(), delivery()]], [], holder=ME, highest={"c": 41}) == [
        [NewRow(42, sha("c#42")), NewRow(43, sha("c#43"))]
    ]


def test_the_highest_of_rows_and_given_wins() -> None:
    rows = [row(1, occurrence=7)]
    assert plan([[delivery()]], rows, holder=ME, dead=(), highest={"c": 3}) == [[Absorb(1, None)]]
    assert plan([[delivery(), delivery()]], rows, holder=ME, highest={"c": 3}) == [
        [Absorb(1, None), NewRow(8, sha("c#8"))]
    ]


def test_a_twin_delivered_while_a_slow_answer_was_on_its_way_is_the_same_event() -> None:
    """The pull went out at T0, its answer trickled in at T0+40 s: the lease ran out on the
    way and VOD gave the event to another daemon at T0+31 s. That copy is the target."""
    twins = [row(2, occurrence=1, at=later(31))]
    assert fold_target(row(1), T0, later(40), twins) == 2


def test_a_twin_delivered_before_the_pull_went_out_is_another_event() -> None:
    twins = [row(2, occurrence=1, at=later(-1))]
    assert fold_target(row(1), T0, later(40), twins) is None


def test_a_twin_delivered_the_instant_the_pull_went_out_is_another_event() -> None:
    """The lease began when the pull went out: VOD cannot have given the event out again at
    that same instant, so a copy delivered then is not the released row's event."""
    twins = [row(2, occurrence=1, at=T0)]
    assert fold_target(row(1), T0, later(40), twins) is None


def test_a_twin_of_the_same_slow_answer_is_another_event() -> None:
    twins = [row(2, occurrence=1, at=later(40))]
    assert fold_target(row(1), T0, later(40), twins) is None


# -- plan: pushed deliveries (normal callback) -------------------------------------------


def test_a_push_of_a_content_never_seen_is_a_new_row() -> None:
    assert plan([[delivery()]], [], holder=None, pushed=[True]) == [[NewRow(0, "legacy-of-c")]]


@pytest.mark.parametrize(
    "stored",
    [
        row(1),
        row(1, confirmed=True),
        row(1, held_by=OTHER),
        row(1, confirmed=True, held_by=OTHER),
    ],
    ids=["open", "confirmed", "held", "confirmed-and-held"],
)
def test_a_push_is_the_event_of_a_row_no_push_reached_whatever_its_confirm_or_holder(
    stored: StoredRow,
) -> None:
    assert plan([[delivery()]], [stored], holder=None, pushed=[True]) == [
        [Absorb(1, stored.held_by, pushed=True)]
    ]


def test_a_push_takes_the_lowest_occurrence_that_no_push_reached() -> None:
    rows = [
        row(7, occurrence=2),
        row(5, occurrence=0, pushed=1),
        row(6, occurrence=1, confirmed=True),
    ]
    assert plan([[delivery()]], rows, holder=None, pushed=[True]) == [
        [Absorb(6, None, pushed=True)]
    ]


def test_a_push_after_a_push_of_the_same_content_is_a_new_event() -> None:
    # Working, Stopped, Working pushed: the second Working finds only a pushed row.
    assert plan([[delivery()]], [row(1, pushed=1)], holder=None, pushed=[True]) == [
        [NewRow(1, sha("c#1"))]
    ]


def test_pushes_in_one_plan_never_take_one_row_twice() -> None:
    assert plan([[delivery()], [delivery()]], [row(1)], holder=None, pushed=[True, True]) == [
        [Absorb(1, None, pushed=True)],
        [NewRow(1, sha("c#1"))],
    ]


def test_a_pull_takes_a_row_that_came_only_by_push() -> None:
    assert plan([[delivery()]], [row(1, pushed=1)], holder=ME) == [[Absorb(1, None)]]


def test_a_pull_never_takes_a_confirmed_row_even_when_read_for_a_push() -> None:
    rows = [row(1, confirmed=True)]
    assert plan([[delivery()], [delivery()]], rows, holder=ME, pushed=[False, True]) == [
        [NewRow(1, sha("c#1"))],
        [Absorb(1, None, pushed=True)],
    ]


# -- plan: the two channels meet only within CHANNEL_WINDOW -----------------------------------


def test_the_channel_window_is_five_minutes() -> None:
    assert timedelta(minutes=5) == CHANNEL_WINDOW


@pytest.mark.parametrize(
    ("after", "absorbed"),
    [
        (timedelta(0), True),
        (CHANNEL_WINDOW, True),
        (CHANNEL_WINDOW + timedelta(microseconds=1), False),
    ],
)
def test_a_pull_takes_a_row_that_came_only_by_push_only_within_the_window(
    after: timedelta, absorbed: bool
) -> None:
    decided = plan([[delivery()]], [row(1, pushed=1)], holder=ME, arrived=[T0 + after])

    assert decided == ([[Absorb(1, None)]] if absorbed else [[NewRow(1, sha("c#1"))]])


def test_a_pull_long_after_a_push_only_row_is_a_new_event_but_a_pulled_row_still_redelivers() -> (
    None
):
    # Working pushed before a switch to reliable callback, Working again pulled an hour later.
    later = T0 + timedelta(hours=1)
    assert plan([[delivery()]], [row(1, pushed=1)], holder=ME, arrived=[later]) == [
        [NewRow(1, sha("c#1"))]
    ]
    # A row that was pulled (its confirm did not take effect) takes its redelivery whenever.
    pulled_then_pushed = row(1, pushed=1, deliveries=2)
    assert plan([[delivery()]], [pulled_then_pushed], holder=ME, arrived=[later]) == [
        [Absorb(1, None)]
    ]


@pytest.mark.parametrize(
    ("after", "absorbed"),
    [(CHANNEL_WINDOW, True), (CHANNEL_WINDOW + timedelta(microseconds=1), False)],
)
def test_a_push_takes_an_unpushed_row_only_when_it_was_delivered_within_the_window(
    after: timedelta, absorbed: bool
) -> None:
    confirmed = row(1, confirmed=True)

    decided = plan([[delivery()]], [confirmed], holder=None, pushed=[True], arrived=[T0 + after])

    assert decided == ([[Absorb(1, None, pushed=True)]] if absorbed else [[NewRow(1, sha("c#1"))]])
