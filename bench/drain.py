"""The drain benchmark of issue 10: vodpoller measured from outside, as a user runs it
(`vodpoller run --config FILE`, default settings), against the emulator in its own process with
latency added to every answer, beside the loop a user writes by hand with the SDK.

    python -m bench.drain [--quick] [--postgres-url URL] [--only PHASE ...] [--output PATH]

It prints a table (each figure beside its target) and writes the figures as JSON, by default
to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import phases, steady
from bench.databases import sqlite_commit_ms
from bench.figures import format_table
from bench.phases import Lab, progress
from bench.report import LARGE_BACKLOG, LEGEND, Results, figures

PHASES: Final = ("drain", "hand", "two", "large", "steady", "idle")
RESULTS: Final = Path(__file__).with_name("results")
REPOSITORY: Final = Path(__file__).parents[1]
# The SQLite files live in memory by default: this machine's shared virtual disk takes 2 to 13
# ms per fsync depending on its neighbours, which would swamp the hand loop (a commit per
# event) and make every figure depend on them.
TMPFS: Final = Path("/dev/shm")  # noqa: S108 (a private mkdtemp directory inside it)


@dataclass(frozen=True)
class Plan:
    """How long and how big each phase is: the full run, or a smoke run with --quick."""

    backlog: int  # events waiting at the start of each drain
    hand_seconds: float  # the hand loop is stopped this long after its first confirm
    large_backlog: int
    idle_seconds: float
    steady_seconds: float
    steady_rate: float = 200
    steady_latency_ms: float = 30
    two_daemons_latency_ms: float = 30
    large_latency_ms: float = 30
    idle_latency_ms: float = 30


FULL: Final = Plan(20_000, 20, LARGE_BACKLOG, 60, 30)
QUICK: Final = Plan(2_000, 3, 5_000, 12, 5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drain",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="every phase short: a smoke run of about a minute"
    )
    parser.add_argument(
        "--postgres-url",
        help="also drain into PostgreSQL (a fresh database per run on this server, dropped "
        "after), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test; the two daemons "
        "then share a PostgreSQL database instead of a SQLite file",
    )
    parser.add_argument(
        "--latencies",
        default="30,150",
        help="comma-separated emulator latencies in ms for the drains (default %(default)s)",
    )
    parser.add_argument("--events", type=int, help="backlog per drain (default 20,000)")
    parser.add_argument(
        "--only",
        action="append",
        choices=PHASES,
        help="run only these phases (repeat the option); default: all",
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/<ts>.json)")
    parser.add_argument(
        "--pin",
        dest="pin",
        action="store_true",
        help="emulator on CPU 0, the measured processes on CPU 1 (default: the scheduler "
        "places them; `vodpoller run` stores from a second process to use a second core)",
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument(
        "--log-level", default="info", help="the daemon's logging.level (default %(default)s)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=TMPFS if os.access(TMPFS, os.W_OK) else None,
        help="where the SQLite files and logs go, in a new directory (default: %(default)s); "
        "on tmpfs the disk's fsync is not in the figures, give a directory on a disk to see it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser


def run(args: argparse.Namespace, lab: Lab) -> Results:
    plan = QUICK if args.quick else FULL
    backlog = args.events or plan.backlog
    wanted = set(args.only or PHASES)
    kinds = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    results = Results()

    def attempt(name: str, measure: Any, *measure_args: Any) -> Any:
        # Our own checks raise RuntimeError (a process that did not start); the other phases
        # still run and the problem is reported.
        try:
            return measure(lab, *measure_args)
        except RuntimeError as error:
            results.problems.append(f"{name}: {error}")
            progress(f"  PROBLEM: {error}")
            return None

    for latency in [float(value) for value in args.latencies.split(",")]:
        if "drain" in wanted:
            for kind in kinds:
                if drained := attempt("drain", phases.drain, kind, latency, backlog):
                    results.drains.append(drained)
        if "hand" in wanted and (
            hand := attempt("hand", phases.hand_loop, latency, backlog, plan.hand_seconds)
        ):
            results.hand_loops.append(hand)
    if "two" in wanted:
        kind = kinds[-1]
        results.two_daemons = attempt(
            "two", phases.drain, kind, plan.two_daemons_latency_ms, backlog, 2
        )
    if "large" in wanted:
        results.large = attempt(
            "large", phases.drain, "sqlite", plan.large_latency_ms, plan.large_backlog
        )
    if "steady" in wanted:
        results.steady = attempt(
            "steady",
            steady.steady,
            plan.steady_latency_ms,
            plan.steady_rate,
            plan.steady_seconds,
        )
    if "idle" in wanted:
        results.idle = attempt("idle", phases.idle, plan.idle_latency_ms, plan.idle_seconds)
    return results


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "describe", "--always", "--dirty"],  # noqa: S607 (git from PATH, optional)
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip()


def _header(args: argparse.Namespace, lab: Lab, started: datetime) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    return {
        "started_at": started.isoformat(),
        "command": ["python", "-m", "bench.drain", *sys.argv[1:]],
        "commit": _git_commit(),
        "python": platform.python_version(),
        "cores": cores,
        "pinned": lab.pin,
        "quick": args.quick,
        "log_level": lab.log_level,
        "load_average_at_start": os.getloadavg()[0],
        "workdir": str(lab.workdir),
        "sqlite_commit_ms": {
            "rollback_journal": sqlite_commit_ms(lab.workdir, wal=False),
            "wal": sqlite_commit_ms(lab.workdir, wal=True),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="vodpoller-bench-", dir=args.workdir))
    pin = args.pin and (os.cpu_count() or 1) >= 2
    lab = Lab(workdir, pin, args.log_level, args.postgres_url)
    if pin:
        os.sched_setaffinity(0, {0})  # the benchmark itself shares the emulator's core
    header = _header(args, lab, started)
    progress(f"work directory {workdir}; {header['cores']} cores, pinned: {pin}")
    results = run(args, lab)
    header["load_average_at_end"] = os.getloadavg()[0]
    rows = figures(results)
    output = args.output or RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    document = {**header, "figures": [row.as_json() for row in rows], **results.as_json()}
    output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    print(
        f"vodpoller drain benchmark, {header['commit']}, {started:%Y-%m-%d %H:%M} UTC; "
        f"{header['cores']} cores, "
        + ("emulator on CPU 0, measured process on CPU 1" if pin else "not pinned")
        + f"; load average {header['load_average_at_start']:.1f} at start, "
        f"{header['load_average_at_end']:.1f} at end"
    )
    commit_ms = header["sqlite_commit_ms"]
    print(
        f"SQLite commit in {workdir.parent}: {commit_ms['rollback_journal']:.1f} ms "
        f"(rollback journal, as the hand loop), {commit_ms['wal']:.1f} ms (WAL)"
    )
    print()
    print(format_table(rows))
    print()
    for line in LEGEND:
        print(line)
    for problem in results.problems:
        print(f"PROBLEM {problem}")
    print(f"figures written to {output}")
    troubled = bool(results.problems) or any(row.name.startswith("PROBLEM") for row in rows)
    if args.keep or troubled:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if troubled else 0


if __name__ == "__main__":
    sys.exit(main())
