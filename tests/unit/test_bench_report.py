"""The benchmark's results beside issue 10's targets, and its small pure helpers: the steady
phase's pacing and stamped events, timestamps read back from the databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bench.databases import as_utc
from bench.figures import Figure, Rate
from bench.phases import Drain, Idle
from bench.report import Results, figures
from bench.steady import Steady, due, stamped_entry


def drain(**fields: Any) -> Drain:
    values: dict[str, Any] = {
        "label": "vodpoller",
        "database": "sqlite",
        "latency_ms": 30.0,
        "backlog": 20_000,
        "rate": Rate(19_840, 12.4),  # 1,600 events/s
        "wall_seconds": 14.0,
        "completed": True,
        "problem": None,
        "throttled": 0,
        "requests": {"PullEvents": 1300, "ConfirmEvents": 1250},
        "redelivered": 0,
        "cpu_seconds": 6.2,
        "cpu_total_seconds": 8.0,
        "peak_rss_mb": 70.0,
        "emulator_cpu_seconds": 4.96,
        "others_cpu_seconds": 6.2,
        "rows": 20_000,
        "exit_codes": [0],
    }
    values.update(fields)
    return Drain(**values)


def by_name(rows: list[Figure], phase_start: str) -> dict[str, Figure]:
    return {row.name: row for row in rows if row.phase.startswith(phase_start)}


def test_a_drain_reports_rate_share_cpu_per_batch_and_emulator_share() -> None:
    rows = by_name(figures(Results(drains=[drain()])), "vodpoller sqlite, 30 ms")

    assert rows["events/s"].value == pytest.approx(1600)
    assert rows["events/s"].verdict == "pass"
    assert rows["share of 1,600/s"].value == pytest.approx(100)
    assert rows["throttled"].verdict == "pass"
    # 19,840 events are 1,240 batches of 16: 6.2 s of CPU is 5 ms each.
    assert rows["CPU per batch"].value == pytest.approx(5.0)
    assert rows["CPU per batch"].verdict == "pass"
    assert rows["emulator CPU"].value == pytest.approx(40)
    assert rows["other processes' CPU"].value == pytest.approx(0.5)
    assert rows["wall"].value == 14.0
    # No hand loop in this run: the ratio is not measured, so its target is missed.
    assert rows["vs hand loop"].value is None
    assert rows["vs hand loop"].verdict == "miss"
    assert "rows stored (not the backlog!)" not in rows


def test_throttling_and_a_slow_drain_miss_their_targets() -> None:
    rows = by_name(
        figures(Results(drains=[drain(rate=Rate(14_990, 10.0), throttled=1)])), "vodpoller"
    )

    assert rows["events/s"].value == pytest.approx(1499)
    assert rows["events/s"].verdict == "miss"
    assert rows["throttled"].verdict == "miss"


def test_the_ratio_to_the_hand_loop_has_the_target_of_its_latency() -> None:
    results = Results(
        drains=[drain(), drain(latency_ms=150.0, rate=Rate(1500, 1.0)), drain(latency_ms=5.0)],
        hand_loops=[
            drain(label="hand loop", rate=Rate(200, 1.0)),
            drain(label="hand loop", latency_ms=150.0, rate=Rate(51, 1.0)),
            drain(label="hand loop", latency_ms=5.0, rate=Rate(400, 1.0)),
        ],
    )
    rows = figures(results)

    at_30 = by_name(rows, "vodpoller sqlite, 30 ms")["vs hand loop"]
    at_150 = by_name(rows, "vodpoller sqlite, 150 ms")["vs hand loop"]
    at_5 = by_name(rows, "vodpoller sqlite, 5 ms")["vs hand loop"]
    assert at_30.value == pytest.approx(8)
    assert (str(at_30.target), at_30.verdict) == ("≥ 8", "pass")
    assert at_150.value == pytest.approx(1500 / 51)
    assert (str(at_150.target), at_150.verdict) == ("≥ 30", "miss")
    assert at_5.value == pytest.approx(4)
    assert at_5.target is None
    # The hand loop is the baseline: figures, no targets.
    hand = by_name(rows, "hand loop sqlite, 30 ms")
    assert hand["events/s"].value == 200
    assert all(row.target is None for row in hand.values())


def test_two_daemons_are_judged_on_their_sum_and_throttled_share() -> None:
    two = drain(label="2 daemons", throttled=26, rate=Rate(1400, 1.0))
    rows = by_name(figures(Results(two_daemons=two)), "2 daemons")

    assert rows["events/s"].verdict == "pass"
    assert rows["throttled"].target is None
    # 26 of 2,550 requests.
    assert rows["throttled share"].value == pytest.approx(26 / 2550 * 100)
    assert rows["throttled share"].verdict == "miss"


def test_the_large_backlog_target_holds_for_100000_events_only() -> None:
    full = by_name(figures(Results(large=drain(backlog=100_000, wall_seconds=71.0))), "vod")
    small = by_name(figures(Results(large=drain(backlog=5_000, wall_seconds=9.0))), "vod")

    assert (full["wall"].value, full["wall"].verdict) == (71.0, "miss")
    assert (small["wall"].value, small["wall"].target) == (9.0, None)
    unfinished = drain(backlog=100_000, wall_seconds=None, completed=False, problem="stalled")
    rows = by_name(figures(Results(large=unfinished)), "vod")
    assert (rows["wall"].value, rows["wall"].verdict) == (None, "miss")


def test_an_unfinished_drain_shows_its_problem_and_its_missing_rows() -> None:
    stuck = drain(
        completed=False, wall_seconds=None, problem="daemon0 exited with 1", rows=19_000, rate=None
    )
    rows = by_name(figures(Results(drains=[stuck])), "vodpoller")

    assert rows["events/s"].value is None
    assert rows["events/s"].verdict == "miss"
    assert rows["CPU per batch"].value is None
    assert "wall" not in rows  # not reached, and without a target of its own
    assert rows["rows stored (not the backlog!)"].value == 19_000
    assert "PROBLEM: daemon0 exited with 1" in rows


def test_idle_counts_pulls_per_long_poll_window_and_cpu_share() -> None:
    idle = Idle(seconds=60, pulls=10, cpu_seconds=0.12, rss_mb=85.0, peak_rss_mb=90.0, exit_code=0)
    rows = by_name(figures(Results(idle=idle)), "idle")

    assert rows["PullEvents per 5 s window"].value == pytest.approx(10 / 12)
    assert rows["PullEvents per 5 s window"].verdict == "pass"
    assert rows["CPU share"].value == pytest.approx(0.2)
    assert rows["CPU share"].verdict == "pass"
    assert (rows["RSS"].value, rows["RSS"].verdict) == (85.0, "miss")


def test_steady_judges_the_p99_to_committed() -> None:
    visible = [float(value) for value in range(1, 101)]  # 1 .. 100 ms
    steady = Steady(
        rate=200,
        seconds=30,
        enqueued=100,
        seen=100,
        to_visible_ms=visible,
        to_received_ms=[value - 1 for value in visible],
        exit_code=0,
    )
    rows = by_name(figures(Results(steady=steady)), "steady")

    assert rows["enqueue -> committed p50"].value == 50
    assert (rows["enqueue -> committed p99"].value, rows["enqueue -> committed p99"].verdict) == (
        99,
        "pass",
    )
    assert rows["enqueue -> received_at p99"].value == 98
    assert steady.as_json()["to_visible_ms"] == {"p50": 50, "p99": 99, "max": 100}


def test_results_json_holds_each_phase() -> None:
    document = Results(drains=[drain()], problems=["idle: the daemon exited at start"]).as_json()

    assert document["drains"][0]["events_per_second"] == pytest.approx(1600)
    assert document["drains"][0]["cpu_ms_per_batch"] == pytest.approx(5.0)
    assert document["two_daemons"] is None
    assert document["problems"] == ["idle: the daemon exited at start"]


@pytest.mark.parametrize(
    ("elapsed", "sent", "expected"),
    [(0.0, 0, 0), (0.02, 0, 4), (1.0, 196, 4), (1.0, 200, 0), (1.0, 210, 0), (2.5, 100, 400)],
)
def test_the_steady_pace_catches_up_to_the_rate(elapsed: float, sent: int, expected: int) -> None:
    assert due(elapsed, 200, sent) == expected


def test_stamped_events_are_distinct_and_carry_their_enqueue_time() -> None:
    first = stamped_entry("run1", 0, 1_700_000_000_123.5)
    second = stamped_entry("run1", 1, 1_700_000_000_123.5)

    payload = first["ProcedureStateChangeEvent"]
    assert first["EventType"] == "ProcedureStateChanged"
    assert float(payload["SessionContext"]) == 1_700_000_000_123.5
    assert payload["TaskId"] != second["ProcedureStateChangeEvent"]["TaskId"]
    assert stamped_entry("run2", 0, 0)["ProcedureStateChangeEvent"]["TaskId"] != payload["TaskId"]


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-01 16:31:02.250000",  # SQLite's text, naive UTC
        datetime(2026, 12, 1, 16, 31, 2, 250000),  # naive UTC from a driver
        datetime(2026, 12, 1, 17, 31, 2, 250000, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_timestamps_read_back_are_aware_utc(value: object) -> None:
    assert as_utc(value) == datetime(2026, 12, 1, 16, 31, 2, 250000, tzinfo=UTC)
    assert as_utc(value).tzinfo is UTC


def test_a_timestamp_that_is_no_timestamp_is_an_error() -> None:
    with pytest.raises(TypeError, match="not a timestamp"):
        as_utc(12)
