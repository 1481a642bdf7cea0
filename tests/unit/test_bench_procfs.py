"""Reading /proc for the benchmark: the parsers on fixed texts, then the readers on real
processes (this one and a child it starts)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import procfs
from tests.helpers import reaped

# pid 4242, a command name with a space and a ")" in it, utime 150, stime 50, cutime 7, cstime 3
STAT = (
    "4242 (python ) x) S 1 4242 4242 0 -1 4194560 2120 0 0 0 150 50 7 3 20 0 3 0 "
    "220060 31334400 9001 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
)
STATUS = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   40960 kB\n"


def test_cpu_ticks_add_own_and_reaped_children_time_after_an_odd_command_name() -> None:
    assert procfs.cpu_ticks(STAT) == 150 + 50 + 7 + 3


def test_status_gives_the_named_kib_line_and_0_when_absent() -> None:
    assert procfs.status_kib(STATUS, "VmHWM") == 61440
    assert procfs.status_kib(STATUS, "VmRSS") == 40960
    assert procfs.status_kib("Name:\tzombie\nState:\tZ (zombie)\n", "VmRSS") == 0


def test_busy_ticks_leave_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 20 9000 300 1 2 7 50 0\ncpu0 50 2 10 4500 150 0 1 3 25 0\nintr 1\n"

    assert procfs.busy_ticks(stat) == 100 + 5 + 20 + 1 + 2 + 7


def test_busy_ticks_need_the_cpu_line() -> None:
    with pytest.raises(ValueError, match="no cpu line"):
        procfs.busy_ticks("cpu0 1 2 3 4 5 6 7 8 9 10\n")


def test_others_busy_seconds_leave_out_this_process_tree() -> None:
    def machine() -> float:
        return procfs.busy_ticks((procfs.PROC / "stat").read_text()) / procfs.CLOCK_TICKS

    own_before = procfs.usage(os.getpid()).cpu_seconds
    ours_before = machine() - procfs.others_busy_seconds()
    sum(range(50_000_000))  # about a second of this process's CPU
    ours_after = machine() - procfs.others_busy_seconds()
    own_spent = procfs.usage(os.getpid()).cpu_seconds - own_before

    # The machine's busy time less the neighbours' grew by what this process spent (to a few
    # clock ticks), whatever the neighbours did meanwhile.
    assert own_spent > 0.3
    assert ours_after - ours_before == pytest.approx(own_spent, abs=0.1)


def test_usage_converts_kib_to_mb() -> None:
    own = procfs.usage(os.getpid())
    status = (procfs.PROC / str(os.getpid()) / "status").read_text()

    assert own.peak_rss_mb == pytest.approx(
        procfs.status_kib(status, "VmHWM") * 1024 / 1_000_000, rel=0.05
    )
    assert own.cpu_seconds > 0
    assert own.peak_rss_mb >= own.rss_mb > 0


def test_usages_add_up_field_by_field() -> None:
    total = procfs.Usage(1.5, 10.0, 20.0) + procfs.Usage(0.5, 5.0, 6.0)

    assert total == procfs.Usage(2.0, 15.0, 26.0)


def test_a_tree_holds_the_children_and_their_usage_counts() -> None:
    # The child holds 50 MB written to, so its share of the tree cannot hide in noise.
    code = "import time; held = b'x' * 50_000_000; print('up', flush=True); time.sleep(60)"
    alone = procfs.usage(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    with reaped(child):
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"
        assert child.pid in procfs.children(os.getpid())
        assert child.pid in procfs.tree(os.getpid())

        together = procfs.usage(os.getpid())

        assert together.rss_mb > alone.rss_mb + 45
        assert together.peak_rss_mb > alone.peak_rss_mb + 45
    assert procfs.children(2**22 + 1) == []  # no such process: nothing, no error
    assert procfs.usage(2**22 + 1) == procfs.Usage()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="pinning to one of two CPUs needs two")
def test_pin_sets_the_affinity_of_every_thread_of_the_process() -> None:
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); "
    code += "print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    with reaped(child):
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"
        tasks = [int(task.name) for task in (procfs.PROC / str(child.pid) / "task").iterdir()]
        assert len(tasks) == 2

        procfs.pin(child.pid, {1})

        assert [os.sched_getaffinity(task) for task in tasks] == [{1}, {1}]
