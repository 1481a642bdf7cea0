"""Watching a drain from outside: the emulator's stats polled every 20 ms until the backlog is
confirmed (or a window has passed), with the CPU of the measured processes, of the emulator and
of the machine's other processes taken when the first confirm is seen and at the end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bench import procfs
from bench.figures import Tick
from bench.processes import Child, Emulator
from bench.procfs import Usage

INTERVAL: Final = 0.02
# No confirm for this long: the measured process is stuck (a lease is 30 s, so even events
# that come back after a lost confirm would have moved the count by then).
STALL_SECONDS: Final = 60.0


@dataclass
class Watched:
    """What the emulator and /proc showed while a drain ran."""

    ticks: list[Tick] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # the last look
    measured_at_first: Usage | None = None
    measured_at_end: Usage = field(default_factory=Usage)
    emulator_at_first: Usage | None = None
    emulator_at_end: Usage = field(default_factory=Usage)
    others_at_first: float | None = None  # procfs.others_busy_seconds()
    others_at_end: float = 0.0
    problem: str | None = None

    @property
    def measured_cpu(self) -> float | None:
        """CPU seconds of the measured processes from the first confirm seen to the end."""
        if self.measured_at_first is None:
            return None
        return self.measured_at_end.cpu_seconds - self.measured_at_first.cpu_seconds

    @property
    def emulator_cpu(self) -> float | None:
        if self.emulator_at_first is None:
            return None
        return self.emulator_at_end.cpu_seconds - self.emulator_at_first.cpu_seconds

    @property
    def others_cpu(self) -> float | None:
        """CPU seconds of the processes outside the benchmark (the machine's neighbours)."""
        if self.others_at_first is None:
            return None
        return max(0.0, self.others_at_end - self.others_at_first)


def _usage(children: Sequence[Child]) -> Usage:
    total = Usage()
    for child in children:
        total += child.usage()
    return total


def watch(
    emulator: Emulator,
    measured: Sequence[Child],
    *,
    until_confirmed: int | None = None,
    window_seconds: float | None = None,
) -> Watched:
    """Poll until `until_confirmed` events are confirmed, or `window_seconds` after the first
    confirm, or a measured process ends, or nothing moves for STALL_SECONDS."""
    admin = emulator.admin
    seen = Watched()
    progress_at = time.monotonic()
    first_at: float | None = None
    while True:
        seen.stats = admin.stats()
        now = time.monotonic()
        confirmed = int(seen.stats["Confirmed"])
        if not seen.ticks or confirmed > seen.ticks[-1].confirmed:
            progress_at = now
        seen.ticks.append(Tick(now, confirmed))
        if first_at is None and confirmed > 0:
            seen.measured_at_first = _usage(measured)
            seen.emulator_at_first = emulator.child.usage()
            seen.others_at_first = procfs.others_busy_seconds()
            first_at = now
        if until_confirmed is not None and confirmed >= until_confirmed:
            break
        if window_seconds is not None and first_at is not None and now - first_at >= window_seconds:
            break
        ended = [child for child in measured if not child.running()]
        if ended:
            exits = ", ".join(f"{child.name} exited with {child.stop().code}" for child in ended)
            seen.problem = f"{exits} (log: {ended[0].log})"
            break
        if now - progress_at > STALL_SECONDS:
            seen.problem = f"no confirm for {STALL_SECONDS:g} s at {confirmed} confirmed"
            break
        time.sleep(INTERVAL)
    seen.measured_at_end = _usage(measured)
    seen.emulator_at_end = emulator.child.usage()
    seen.others_at_end = procfs.others_busy_seconds()
    return seen
