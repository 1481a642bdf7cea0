"""What Linux's /proc says about a process and its descendants: CPU seconds and resident memory.
psutil is not a dependency; these few files are all the benchmark needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
# In /proc/PID/stat after "pid (comm) ": state is field 3, utime..cstime are fields 14..17.
_FIRST_FIELD: Final = 3
_UTIME: Final = 14
_CSTIME: Final = 17
KIB_PER_MB: Final = 1_000_000 / 1024  # the kernel's "kB" are KiB; figures are in MB (10^6 B)


@dataclass(frozen=True)
class Usage:
    """A process tree at one moment: CPU seconds used so far, resident and peak memory (MB)."""

    cpu_seconds: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_seconds + other.cpu_seconds,
            self.rss_mb + other.rss_mb,
            self.peak_rss_mb + other.peak_rss_mb,
        )


def cpu_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime from the text of /proc/PID/stat: the process's own CPU
    and that of the children it reaped, in clock ticks."""
    # The command name sits in parentheses and may itself hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[_UTIME - _FIRST_FIELD : _CSTIME - _FIRST_FIELD + 1])


def status_kib(status: str, key: str) -> int:
    """A `kB` line of /proc/PID/status (`VmRSS`, `VmHWM`); 0 when absent (a zombie has none)."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return 0


def busy_ticks(stat: str) -> int:
    """CPU ticks the whole machine spent busy (all CPUs, anything but idle and iowait), from
    the text of /proc/stat."""
    for line in stat.splitlines():
        name, *values = line.split()
        if name == "cpu":
            # user nice system idle iowait irq softirq steal (guest is inside user already)
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[:8])
            return user + nice + system + irq + softirq + steal
    raise ValueError("no cpu line in /proc/stat")


def others_busy_seconds() -> float:
    """CPU seconds used so far on the machine by processes outside this one's tree; meaningful
    as a difference between two moments: how much the neighbours ran meanwhile."""
    machine = busy_ticks((PROC / "stat").read_text()) / CLOCK_TICKS
    return machine - usage(os.getpid()).cpu_seconds


def children(pid: int) -> list[int]:
    """The direct children of `pid`, whichever of its threads started them."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # the thread ended meanwhile
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its living descendants."""
    pids = [pid]
    for parent in pids:  # grows while it is walked: breadth first
        pids.extend(children(parent))
    return pids


def usage(pid: int) -> Usage:
    """The usage of `pid` and its descendants together; processes gone meanwhile count 0."""
    total = Usage()
    for member in tree(pid):
        try:
            stat = (PROC / str(member) / "stat").read_text()
            status = (PROC / str(member) / "status").read_text()
        except OSError:
            continue
        total += Usage(
            cpu_ticks(stat) / CLOCK_TICKS,
            status_kib(status, "VmRSS") / KIB_PER_MB,
            status_kib(status, "VmHWM") / KIB_PER_MB,
        )
    return total


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of `pid` and of its descendants to `cpus`; threads started later
    inherit it from the thread that starts them."""
    for member in tree(pid):
        try:
            tasks = [int(task.name) for task in (PROC / str(member) / "task").iterdir()]
        except OSError:
            continue
        for task in tasks:
            try:
                os.sched_setaffinity(task, cpus)
            except OSError:
                continue  # the thread ended meanwhile
