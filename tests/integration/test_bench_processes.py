"""The benchmark's process handling on real processes: the emulator started as `vodpoller
emulator` and found by its first line, a child reaped with its rusage, the watch loop stopping
when a measured process dies, and the hand loop draining through the SDK."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from bench.processes import Child, start_emulator, start_hand_loop
from bench.watch import watch


def test_the_emulator_runs_in_its_own_process_and_answers_its_admin(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, 0, cpus=None)
    with emulator.child:
        assert emulator.url == f"http://{emulator.endpoint}"
        assert emulator.admin.generate(20) == 20
        assert emulator.admin.stats()["Queued"] == 20
        assert emulator.child.usage().rss_mb > 0
    assert emulator.child.exit is not None
    assert not emulator.child.running()


def test_a_child_stops_on_sigterm_and_is_reaped_with_its_usage(tmp_path: Path) -> None:
    code = "import time; sum(range(3_000_000)); time.sleep(60)"
    child = Child("sleeper", [sys.executable, "-c", code], cpus=None, log=tmp_path / "s.log")
    assert child.running()

    ended = child.stop()

    assert ended.code == -15  # killed by SIGTERM: Python's default handler
    assert ended.cpu_seconds > 0
    assert ended.max_rss_mb > 1
    assert child.process.returncode == -15  # Popen knows it is reaped
    assert child.stop() is ended  # stopping again changes nothing


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    code += "print('up', flush=True); time.sleep(60)"
    child = Child(
        "stubborn",
        [sys.executable, "-c", code],
        cpus=None,
        log=tmp_path / "s.log",
        stdout=subprocess.PIPE,
    )
    assert child.process.stdout is not None
    assert child.process.stdout.readline() == "up\n"

    assert child.stop(seconds=0.2).code == -9


def test_watching_stops_when_a_measured_process_dies(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, 0, cpus=None)
    with emulator.child:
        emulator.admin.generate(10)
        crash = Child(
            "daemon0", [sys.executable, "-c", "raise SystemExit(3)"], cpus=None, log=tmp_path / "c"
        )

        seen = watch(emulator, [crash], until_confirmed=10)

    assert seen.problem is not None
    assert seen.problem.startswith("daemon0 exited with 3")
    assert seen.ticks[-1].confirmed == 0
    assert seen.measured_cpu is None  # no confirm was ever seen


def test_the_hand_loop_drains_through_the_sdk_into_its_sqlite_file(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, 0, cpus=None)
    with emulator.child:
        emulator.admin.generate(40)
        loop = start_hand_loop(tmp_path, emulator, tmp_path / "hand.db", cpus=None)
        with loop:
            seen = watch(emulator, [loop], until_confirmed=40)
    assert seen.problem is None
    assert seen.ticks[-1].confirmed == 40
    assert seen.measured_cpu is not None
    with sqlite3.connect(tmp_path / "hand.db") as database:
        assert database.execute("SELECT count(*) FROM events").fetchone() == (40,)
