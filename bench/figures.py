"""The arithmetic of the benchmark, without I/O: rates from the emulator's confirm counts,
percentiles, figures with their targets, and the printed table."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# The API's ceiling: 100 PullEvents a second per account, 16 events each.
LIMIT_EVENTS_PER_SECOND = 1600


@dataclass(frozen=True)
class Tick:
    """One look at the emulator: when (monotonic seconds) and how many events were confirmed."""

    at: float
    confirmed: int


@dataclass(frozen=True)
class Rate:
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def confirm_rate(ticks: Sequence[Tick]) -> Rate | None:
    """Events confirmed per second from the first look that saw a confirm to the last look.

    Counting only the events confirmed after that first look keeps the polling interval out of
    the figure; None when confirms were seen at fewer than two distinct moments.
    """
    started = next((tick for tick in ticks if tick.confirmed > 0), None)
    if started is None or not ticks:
        return None
    last = ticks[-1]
    seconds = last.at - started.at
    if seconds <= 0:
        return None
    return Rate(last.confirmed - started.confirmed, seconds)


def per_second(ticks: Sequence[Tick]) -> list[int]:
    """Events confirmed in each whole second after the first look that saw a confirm (the last,
    partial second included): how a drain ramps up and holds."""
    started = next((index for index, tick in enumerate(ticks) if tick.confirmed > 0), None)
    if started is None:
        return []
    seen = ticks[started:]
    times = [tick.at for tick in seen]

    def confirmed_at(moment: float) -> int:
        return seen[bisect.bisect_right(times, moment) - 1].confirmed

    start = times[0]
    seconds = math.ceil(times[-1] - start)
    return [
        confirmed_at(start + second + 1) - confirmed_at(start + second) for second in range(seconds)
    ]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `share` of them at or
    below it (`share` in (0, 1])."""
    if not values:
        raise ValueError("no values")
    if not 0 < share <= 1:
        raise ValueError(f"share {share} is not in (0, 1]")
    ordered = sorted(values)
    return ordered[math.ceil(share * len(ordered)) - 1]


@dataclass(frozen=True)
class Target:
    """A bound from issue 10, e.g. `Target(">=", 1500)`."""

    op: Literal[">=", "<="]
    bound: float

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {number(self.bound)}"


@dataclass(frozen=True)
class Figure:
    """One measured number; `value` is None when the phase could not measure it."""

    phase: str
    name: str
    value: float | None
    unit: str = ""
    target: Target | None = None

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.value is None:
            return "miss"
        return "pass" if self.target.met(self.value) else "miss"

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": None if self.target is None else f"{self.target.op} {self.target.bound:g}",
            "verdict": self.verdict or None,
        }


def number(value: float) -> str:
    """Three significant digits at most, thousands separated: 1,587 / 43.2 / 0.512; a count
    as a whole number."""
    if isinstance(value, int) or value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(figures: Sequence[Figure]) -> str:
    """Figures as an aligned text table; a phase's name only on its first row."""
    rows = [("phase", "figure", "value", "unit", "target", "")]
    previous = None
    for figure in figures:
        rows.append(
            (
                "" if figure.phase == previous else figure.phase,
                figure.name,
                "n/a" if figure.value is None else number(figure.value),
                figure.unit,
                "" if figure.target is None else str(figure.target),
                figure.verdict,
            )
        )
        previous = figure.phase
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(width) if column == 2 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
