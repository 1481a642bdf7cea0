"""The benchmark's arithmetic: rates from confirm counts, per-second timelines, percentiles,
targets and the table."""

from __future__ import annotations

import pytest

from bench.figures import (
    Figure,
    Target,
    Tick,
    confirm_rate,
    format_table,
    number,
    per_second,
    percentile,
)


def test_rate_counts_only_the_confirms_after_the_first_look_that_saw_one() -> None:
    ticks = [Tick(10.0, 0), Tick(10.5, 0), Tick(11.0, 40), Tick(13.0, 840), Tick(15.0, 1640)]

    rate = confirm_rate(ticks)

    assert rate is not None
    assert rate.events == 1600
    assert rate.seconds == pytest.approx(4.0)
    assert rate.per_second == pytest.approx(400.0)


def test_rate_runs_to_the_last_look_even_when_the_count_stood_still() -> None:
    # A hand loop stopped after its window: the last seconds count, confirms or not.
    ticks = [Tick(0.0, 16), Tick(1.0, 48), Tick(2.0, 48)]

    rate = confirm_rate(ticks)

    assert rate is not None
    assert (rate.events, rate.seconds) == (32, 2.0)


@pytest.mark.parametrize(
    "ticks",
    [
        [],
        [Tick(1.0, 0), Tick(2.0, 0)],
        [Tick(1.0, 0), Tick(2.0, 16)],  # confirms seen once: no interval to divide by
        [Tick(1.0, 16), Tick(1.0, 32)],
    ],
)
def test_no_rate_without_confirms_at_two_moments(ticks: list[Tick]) -> None:
    assert confirm_rate(ticks) is None


def test_per_second_gives_the_confirms_of_each_second_after_the_first_seen() -> None:
    ticks = [
        Tick(99.0, 0),
        Tick(100.0, 10),
        Tick(100.6, 60),
        Tick(101.0, 110),
        Tick(101.4, 200),
        Tick(102.5, 400),
    ]

    # Second 1: 10 -> 110; second 2: 110 -> 200 (the count at 102.0 is the one seen at 101.4);
    # the last, partial second: 200 -> 400.
    assert per_second(ticks) == [100, 90, 200]


def test_per_second_is_empty_before_any_confirm() -> None:
    assert per_second([Tick(0.0, 0), Tick(5.0, 0)]) == []


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(value) for value in range(100, 0, -1)]  # 100 .. 1, unordered on purpose

    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.01) == 7
    assert percentile([1.0, 2.0, 3.0], 0.34) == 2


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_percentile_refuses_a_share_outside_0_to_1(share: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], share)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


@pytest.mark.parametrize(
    ("target", "value", "met"),
    [
        (Target(">=", 1500), 1500, True),
        (Target(">=", 1500), 1499.9, False),
        (Target("<=", 0), 0, True),
        (Target("<=", 0), 1, False),
        (Target("<=", 100), 99.9, True),
    ],
)
def test_a_target_includes_its_bound(target: Target, value: float, met: bool) -> None:
    assert target.met(value) is met


def test_a_figure_without_a_value_misses_its_target_and_one_without_target_has_no_verdict() -> None:
    assert Figure("p", "events/s", None, target=Target(">=", 1)).verdict == "miss"
    assert Figure("p", "events/s", 2, target=Target(">=", 1)).verdict == "pass"
    assert Figure("p", "events/s", 0, target=Target(">=", 1)).verdict == "miss"
    assert Figure("p", "CPU", 3.0, "s").verdict == ""


def test_figure_json_spells_the_target_and_verdict() -> None:
    figure = Figure("drain", "events/s", 1587.0, "", Target(">=", 1500))

    assert figure.as_json() == {
        "phase": "drain",
        "name": "events/s",
        "value": 1587.0,
        "unit": "",
        "target": ">= 1500",
        "verdict": "pass",
    }
    assert Figure("idle", "CPU", 0.2, "s").as_json()["verdict"] is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1587.4, "1,587"),
        (100, "100"),
        (43.21, "43.2"),
        (4.126, "4.13"),
        (0.5123, "0.512"),
        (7, "7"),  # a count
        (7.0, "7.00"),
    ],
)
def test_numbers_keep_three_significant_digits(value: float, text: str) -> None:
    assert number(value) == text


def test_table_names_each_phase_once_and_puts_each_target_beside_its_figure() -> None:
    table = format_table(
        [
            Figure("vodpoller sqlite, 30 ms", "events/s", 1587.0, "", Target(">=", 1500)),
            Figure("vodpoller sqlite, 30 ms", "peak RSS", 61.0, "MB"),
            Figure("idle, 60 s", "CPU share", None, "% core", Target("<=", 0.5)),
        ]
    )

    lines = table.splitlines()
    assert lines[0].split() == ["phase", "figure", "value", "unit", "target"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split() == [
        *["vodpoller", "sqlite,", "30", "ms", "events/s", "1,587"],
        *["≥", "1,500", "pass"],
    ]
    assert lines[3].split() == ["peak", "RSS", "61.0", "MB"]  # no phase again, no target
    assert lines[4].split() == [
        *["idle,", "60", "s", "CPU", "share", "n/a", "%", "core"],
        *["≤", "0.500", "miss"],
    ]
    # Values are right-aligned in one column.
    assert lines[2].index("1,587") + len("1,587") == lines[3].index("61.0") + len("61.0")
