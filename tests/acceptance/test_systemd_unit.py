"""The shipped unit as systemd judges it (`systemd-analyze verify` and `security`), its settings
against what the daemon needs, and vodpoller running under MemoryDenyWriteExecute's rule."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vodpoller.config import CREDENTIAL_KEYS, PollSettings

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "vodpoller.service"
SHIPPED_EXEC = "/opt/vodpoller/bin/vodpoller"
MAX_EXPOSURE = 1.5
# Keys newer than systemd 252 (Debian 12, CI): older versions warn and ignore them.
NEWER_KEYS = frozenset({"RestartSteps", "RestartMaxDelaySec"})
_UNKNOWN_KEY = re.compile(r"^\S+:\d+: Unknown key '(?P<key>\w+)' in section \[\w+\], ignoring\.$")
_EXPOSURE = re.compile(r"Overall exposure level for vodpoller\.service: (?P<score>\d+\.\d+)")

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (it is on CI: systemd 252)"
)


def _settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> every value given to it, in order (units repeat keys)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(f"{section}.{key}", []).append(value)
    return found


def _seconds(value: str) -> float:
    units = {"s": 1, "min": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(s|min|h)", value)
    assert match, f"write {value!r} as a number with s, min or h"
    return int(match[1]) * units[match[2]]


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    """The unit as installed here: `verify` wants the ExecStart program to exist."""
    program = Path(sys.executable).with_name("vodpoller")
    assert program.exists(), f"{program}: the venv's vodpoller script is missing"
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={SHIPPED_EXEC} " in text
    copy = tmp_path / "vodpoller.service"
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={program} "))
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_verify_finds_nothing_but_keys_newer_than_this_systemd(installed_unit: Path) -> None:
    done = _analyze("verify", str(installed_unit))

    assert done.returncode == 0, done.stdout + done.stderr
    for line in (done.stdout + done.stderr).splitlines():
        match = _UNKNOWN_KEY.match(line)
        assert match, f"systemd-analyze verify: {line}"
        assert match["key"] in NEWER_KEYS, f"systemd-analyze verify: {line}"


@needs_analyze
def test_the_unit_is_rated_at_most_one_and_a_half(installed_unit: Path) -> None:
    done = _analyze("security", "--offline=true", str(installed_unit))

    assert done.returncode == 0, done.stderr
    match = _EXPOSURE.search(done.stdout)
    assert match, done.stdout
    score = float(match["score"])
    print(f"systemd-analyze security: exposure {score}")  # shown with -s
    assert score <= MAX_EXPOSURE, done.stdout


def test_the_unit_waits_for_ready_and_is_watched() -> None:
    unit = _settings(UNIT.read_text(encoding="utf-8"))

    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert _seconds(unit["Service.WatchdogSec"][0]) >= 60
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.RestartPreventExitStatus"] == ["2"]  # a bad configuration stays bad
    assert "Unit.StartLimitIntervalSec" in unit
    assert "Unit.StartLimitBurst" in unit


def test_a_graceful_stop_fits_in_the_stop_timeout() -> None:
    unit = _settings(UNIT.read_text(encoding="utf-8"))
    # A long poll in flight, then the confirms of the batches in flight within their budget.
    graceful = 10.0 + PollSettings().confirm_budget_seconds

    assert _seconds(unit["Service.TimeoutStopSec"][0]) > graceful
    assert unit["Service.KillSignal"] == ["SIGTERM"]


def test_the_state_directory_holds_the_default_database() -> None:
    unit = _settings(UNIT.read_text(encoding="utf-8"))

    assert unit["Service.StateDirectory"] == ["vodpoller"]


def test_every_credential_the_unit_can_load_is_one_the_daemon_reads() -> None:
    # Commented-out lines count too: they are the ones a user enables.
    lines = re.findall(r"^#?LoadCredential=(\w+):", UNIT.read_text(encoding="utf-8"), re.M)

    assert sorted(lines) == sorted(CREDENTIAL_KEYS)


_PR_SET_MDWE = 65
_PR_MDWE_REFUSE_EXEC_GAIN = 1
_UNDER_MDWE = f"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({_PR_SET_MDWE}, {_PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("a writable and executable mapping was allowed: the rule is not on")
import psycopg, pymysql  # the drivers' C parts load too
from vodpoller.cli import main
sys.exit(main(["demo"]))
"""


def _kernel_has_mdwe() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(66, 0, 0, 0, 0) >= 0)  # PR_GET_MDWE: Linux 6.3


@pytest.mark.slow
@pytest.mark.skipif(not _kernel_has_mdwe(), reason="the kernel has no PR_SET_MDWE (Linux 6.3+)")
def test_vodpoller_works_where_memory_cannot_be_writable_and_executable(tmp_path: Path) -> None:
    # systemd's MemoryDenyWriteExecute= refuses the same mappings, through seccomp.
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_MDWE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"37 rows in {tmp_path / 'vodpoller-demo.db'}" in done.stdout
