"""`events tail` prints rows whose ids commit out of order, and each row once."""

from __future__ import annotations

import pytest

from vodpoller import events_cli
from vodpoller.events_cli import _Follower


def test_a_row_that_commits_after_a_higher_id_is_still_printed_once() -> None:
    follower = _Follower([38, 39, 40], low=37)

    first = follower.unseen([38, 39, 40, 42])
    late = follower.unseen([38, 39, 40, 41, 42])  # 41 was inserted first, committed after 42
    again = follower.unseen([38, 39, 40, 41, 42, 43])

    assert (first, late, again) == ([42], [41], [43])
    assert follower.low == 37  # still looking back


def test_a_row_below_the_backlog_that_commits_after_the_start_is_printed() -> None:
    # Ids 1..3 given; 2 and 3 were committed (and shown) when tail began, 1 commits just after.
    follower = _Follower([2, 3], low=0)

    assert follower.unseen([1, 2, 3]) == [1]


def test_the_lookback_window_moves_on_and_forgets_old_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("vodpoller.events_cli.time.monotonic", lambda: now[0])
    follower = _Follower([], low=10)
    follower.unseen([11, 12])

    now[0] += events_cli.TAIL_LOOKBACK_SECONDS + 1
    follower.unseen([11, 12, 13])
    now[0] += events_cli.TAIL_LOOKBACK_SECONDS + 1
    follower.unseen([13])

    assert follower.low == 13
    assert follower.printed == set()
