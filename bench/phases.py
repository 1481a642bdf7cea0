"""The measurements of the benchmark, each with a fresh emulator and a fresh database: a backlog
drained by vodpoller (one daemon or two) or by the hand-written loop, and the idle daemon."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError

from bench.databases import count_rows, database
from bench.figures import Rate, confirm_rate, per_second
from bench.processes import (
    Child,
    Emulator,
    start_daemon,
    start_emulator,
    start_hand_loop,
    write_daemon_config,
)
from bench.watch import watch

GENERATE_CHUNK: Final = 10_000  # events per admin call: each answers well within its timeout
LONG_POLL_SECONDS: Final = 5.0  # the emulator's default, the real API's


@dataclass(frozen=True)
class Lab:
    """Where and how the processes run. With `pin` on a machine of two cores or more, the
    emulator (and the benchmark itself) get CPU 0, the measured processes CPU 1, so neither
    steals the other's core."""

    workdir: Path
    pin: bool
    log_level: str
    postgres_url: str | None

    @property
    def emulator_cpus(self) -> set[int] | None:
        return {0} if self.pin else None

    @property
    def measured_cpus(self) -> set[int] | None:
        return {1} if self.pin else None

    @contextlib.contextmanager
    def emulator(self, latency_ms: float, backlog: int = 0) -> Iterator[Emulator]:
        emulator = start_emulator(self.workdir, latency_ms, cpus=self.emulator_cpus)
        with emulator.child:
            for start in range(0, backlog, GENERATE_CHUNK):
                emulator.admin.generate(min(GENERATE_CHUNK, backlog - start))
            yield emulator

    def daemon(self, emulator: Emulator, url: str, name: str = "daemon") -> Child:
        config = write_daemon_config(self.workdir / f"{name}.toml", emulator, url, self.log_level)
        return start_daemon(config, cpus=self.measured_cpus, name=name)


@dataclass(frozen=True)
class Drain:
    """A backlog drained (or, for the hand loop, a window of draining), seen from outside."""

    label: str
    database: str
    latency_ms: float
    backlog: int
    rate: Rate | None  # from the first confirm seen to the last one
    wall_seconds: float | None  # from the start of the first process to the last confirm
    completed: bool  # the whole backlog confirmed (the hand loop is stopped before)
    problem: str | None
    throttled: int
    requests: dict[str, int]
    redelivered: int
    cpu_seconds: float | None  # the measured processes, while the rate was measured
    cpu_total_seconds: float  # the measured processes over their whole life
    peak_rss_mb: float  # of each measured process tree, the largest
    emulator_cpu_seconds: float | None
    others_cpu_seconds: float | None  # processes outside the benchmark, meanwhile
    rows: int | None
    exit_codes: list[int]
    timeline: list[int] = field(default_factory=list)  # confirms in each second

    @property
    def batches(self) -> float | None:
        return None if self.rate is None else self.rate.events / 16

    @property
    def cpu_ms_per_batch(self) -> float | None:
        if self.cpu_seconds is None or not self.batches:
            return None
        return self.cpu_seconds * 1000 / self.batches

    @property
    def emulator_cpu_share(self) -> float | None:
        if self.emulator_cpu_seconds is None or self.rate is None:
            return None
        return self.emulator_cpu_seconds / self.rate.seconds

    @property
    def others_cores(self) -> float | None:
        """How many cores the machine's other processes kept busy meanwhile: the noise."""
        if self.others_cpu_seconds is None or self.rate is None:
            return None
        return self.others_cpu_seconds / self.rate.seconds

    @property
    def throttled_share(self) -> float:
        total = sum(self.requests.values())
        return self.throttled / total if total else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "database": self.database,
            "latency_ms": self.latency_ms,
            "backlog": self.backlog,
            "events_per_second": None if self.rate is None else self.rate.per_second,
            "rate_events": None if self.rate is None else self.rate.events,
            "rate_seconds": None if self.rate is None else self.rate.seconds,
            "wall_seconds": self.wall_seconds,
            "completed": self.completed,
            "problem": self.problem,
            "throttled": self.throttled,
            "throttled_share": self.throttled_share,
            "requests": self.requests,
            "redelivered": self.redelivered,
            "cpu_seconds": self.cpu_seconds,
            "cpu_ms_per_batch": self.cpu_ms_per_batch,
            "cpu_total_seconds": self.cpu_total_seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "emulator_cpu_seconds": self.emulator_cpu_seconds,
            "emulator_cpu_share": self.emulator_cpu_share,
            "others_cpu_seconds": self.others_cpu_seconds,
            "others_cores": self.others_cores,
            "rows": self.rows,
            "exit_codes": self.exit_codes,
            "timeline": self.timeline,
        }


def _drained(
    emulator: Emulator,
    children: list[Child],
    *,
    label: str,
    kind: str,
    latency_ms: float,
    backlog: int,
    window_seconds: float | None = None,
    url: str | None = None,
) -> Drain:
    """Watch `children` drain `emulator`, stop them, and put together what was seen."""
    try:
        seen = watch(
            emulator,
            children,
            until_confirmed=None if window_seconds else backlog,
            window_seconds=window_seconds,
        )
    finally:
        # Peak RSS from /proc before the stop, summed over each tree (a daemon of several
        # processes); wait4's figure is only the largest single process.
        peaks = [child.usage().peak_rss_mb for child in children]
        exits = [child.stop() for child in children]
    confirmed = int(seen.stats.get("Confirmed", 0))
    completed = window_seconds is None and confirmed >= backlog
    last = seen.ticks[-1].at if seen.ticks else None
    started = min(child.started for child in children)
    return Drain(
        label=label,
        database=kind,
        latency_ms=latency_ms,
        backlog=backlog,
        rate=confirm_rate(seen.ticks),
        wall_seconds=last - started if completed and last is not None else None,
        completed=completed,
        problem=seen.problem,
        throttled=int(seen.stats.get("Throttled", 0)),
        requests={k: int(v) for k, v in seen.stats.get("Requests", {}).items()},
        redelivered=int(seen.stats.get("Redelivered", 0)),
        cpu_seconds=seen.measured_cpu,
        cpu_total_seconds=sum(exit.cpu_seconds for exit in exits),
        peak_rss_mb=max(
            max(peak, exit.max_rss_mb) for peak, exit in zip(peaks, exits, strict=True)
        ),
        emulator_cpu_seconds=seen.emulator_cpu,
        others_cpu_seconds=seen.others_cpu,
        rows=None if url is None else _rows(url),
        exit_codes=[exit.code for exit in exits],
        timeline=per_second(seen.ticks),
    )


def _rows(url: str) -> int | None:
    """Rows stored; None when there is no table to count (a daemon that died at start)."""
    try:
        return count_rows(url)
    except SQLAlchemyError:
        return None


def drain(lab: Lab, kind: str, latency_ms: float, backlog: int, daemons: int = 1) -> Drain:
    """`daemons` copies of `vodpoller run` with default settings on one emulator and one
    database, draining `backlog` events."""
    label = "vodpoller" if daemons == 1 else f"{daemons} daemons"
    progress(f"{label}, {kind}, {latency_ms:g} ms: {backlog:,} events")
    with (
        lab.emulator(latency_ms, backlog) as emulator,
        database(kind, lab.workdir, lab.postgres_url) as url,
        contextlib.ExitStack() as stack,
    ):
        children = [
            stack.enter_context(lab.daemon(emulator, url, f"daemon{number}"))
            for number in range(daemons)
        ]
        result = _drained(
            emulator,
            children,
            label=label,
            kind=kind,
            latency_ms=latency_ms,
            backlog=backlog,
            url=url,
        )
    progress(_summary(result))
    return result


def hand_loop(lab: Lab, latency_ms: float, backlog: int, window_seconds: float) -> Drain:
    """bench/handloop.py on the same emulator settings, stopped `window_seconds` after its
    first confirm (it would take minutes to drain the backlog)."""
    progress(f"hand loop, sqlite, {latency_ms:g} ms: {window_seconds:g} s of draining")
    with lab.emulator(latency_ms, backlog) as emulator:
        loop = start_hand_loop(
            lab.workdir,
            emulator,
            lab.workdir / f"handloop-{latency_ms:g}.db",
            cpus=lab.measured_cpus,
        )
        with loop:
            result = _drained(
                emulator,
                [loop],
                label="hand loop",
                kind="sqlite",
                latency_ms=latency_ms,
                backlog=backlog,
                window_seconds=window_seconds,
            )
    progress(_summary(result))
    return result


@dataclass(frozen=True)
class Idle:
    seconds: float
    pulls: int
    cpu_seconds: float
    rss_mb: float
    peak_rss_mb: float
    exit_code: int

    @property
    def pulls_per_window(self) -> float:
        """PullEvents per long-poll window (5 s): the daemon's one application."""
        return self.pulls / (self.seconds / LONG_POLL_SECONDS)

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "pulls": self.pulls,
            "pulls_per_long_poll_window": self.pulls_per_window,
            "cpu_seconds": self.cpu_seconds,
            "cpu_share": self.cpu_share,
            "rss_mb": self.rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "exit_code": self.exit_code,
        }


def idle(lab: Lab, latency_ms: float, seconds: float) -> Idle:
    """The daemon with nothing to pull: counted from its first PullEvents for `seconds`."""
    progress(f"idle, sqlite, {latency_ms:g} ms: {seconds:g} s")
    with (
        lab.emulator(latency_ms) as emulator,
        database("sqlite", lab.workdir, None) as url,
        lab.daemon(emulator, url) as daemon,
    ):
        first = wait_for_first_pull(emulator, daemon)
        usage_before = daemon.usage()
        time.sleep(seconds)
        pulls = pull_count(emulator) - first
        usage_after = daemon.usage()
        exit = daemon.stop()
    result = Idle(
        seconds=seconds,
        pulls=pulls,
        cpu_seconds=usage_after.cpu_seconds - usage_before.cpu_seconds,
        rss_mb=usage_after.rss_mb,
        peak_rss_mb=usage_after.peak_rss_mb,
        exit_code=exit.code,
    )
    progress(
        f"  {result.pulls} PullEvents, {result.cpu_seconds:.2f} CPU s, RSS {result.rss_mb:.0f} MB"
    )
    return result


def pull_count(emulator: Emulator) -> int:
    return int(emulator.admin.stats()["Requests"].get("PullEvents", 0))


def wait_for_first_pull(emulator: Emulator, daemon: Child, seconds: float = 60) -> int:
    """Wait until the daemon is up (its first PullEvents reached the emulator); the count then."""
    deadline = time.monotonic() + seconds
    while (count := pull_count(emulator)) == 0:
        if not daemon.running():
            raise RuntimeError(f"the daemon exited at start, see {daemon.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon made no PullEvents in {seconds:g} s, see {daemon.log}")
        time.sleep(0.05)
    return count


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _summary(result: Drain) -> str:
    rate = "n/a" if result.rate is None else f"{result.rate.per_second:,.0f} events/s"
    problem = f" PROBLEM: {result.problem}" if result.problem else ""
    return f"  {rate}, {result.throttled} throttled, CPU {result.cpu_seconds or 0:.1f} s{problem}"
