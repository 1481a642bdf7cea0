"""`events tail` prints rows whose ids commit out of order, and each row once."""

from __future__ import annotations

import pytest

from vodpoller import events_cli
from vodpoller.events_cli import _Follower


def rows(*ids: int) -> list[dict[str, object]]:
    return [{"id": i} for i in ids]


def test_a_row_that_commits_after_a_higher_id_is_still_printed_once() -> None:
    follower = _Follower(newest=40)

    first = follower.new(rows(42))
    late = follower.new(rows(41, 42))  # 41 was inserted first but committed after 42
    again = follower.new(rows(41, 42, 43))

    assert [r["id"] for r in first] == [42]
    assert [r["id"] for r in late] == [41]
    assert [r["id"] for r in again] == [43]
    assert follower.low == 40  # still looking back


def test_the_lookback_window_moves_on_and_forgets_old_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("vodpoller.events_cli.time.monotonic", lambda: now[0])
    follower = _Follower(newest=10)
    follower.new(rows(11, 12))

    now[0] += events_cli.TAIL_LOOKBACK_SECONDS + 1
    follower.new(rows(13))
    now[0] += events_cli.TAIL_LOOKBACK_SECONDS + 1
    follower.new([])

    assert follower.low == 13
    assert follower.printed == set()
