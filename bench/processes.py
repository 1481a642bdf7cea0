"""The processes a benchmark starts, each on its own: the emulator, `vodpoller run` and the
hand-written loop. Started as a user starts them, pinned to CPUs when asked, measured through
/proc while they run, stopped with SIGTERM and reaped with their resource usage."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from bench import procfs
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY

# Printed first by `vodpoller emulator`; the CLI keeps this wording for tests and benchmarks.
_LISTENING: Final = re.compile(r"listening on (http://(\S+)) ")
STOP_SECONDS: Final = 60.0


def clean_environment() -> dict[str, str]:
    """This environment without vodpoller's and the SDK's variables (the configuration file
    decides), and with loopback outside any HTTP proxy."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VODPOLLER_", "TENCENTCLOUD_"))
    }
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


@dataclass(frozen=True)
class Exit:
    """How a process ended: its exit code, and what it used over its whole life (its reaped
    children included): CPU seconds, peak RSS in MB."""

    code: int
    cpu_seconds: float
    max_rss_mb: float


class Child:
    """A process of the benchmark; `stop()` (or leaving the `with`) ends and reaps it."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        cpus: set[int] | None,
        log: Path,
        stdout: int | IO[str] | None = None,
    ):
        self.name = name
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                argv, env=clean_environment(), stdout=stdout, stderr=stderr, text=True
            )
        self.pid = self.process.pid
        self.started = time.monotonic()
        self.exit: Exit | None = None
        if cpus is not None:
            procfs.pin(self.pid, cpus)

    def usage(self) -> procfs.Usage:
        return procfs.usage(self.pid)

    def running(self) -> bool:
        if self.exit is not None:
            return False
        pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._reaped(status, rusage)
        return False

    def stop(self, seconds: float = STOP_SECONDS) -> Exit:
        """SIGTERM, then SIGKILL after `seconds`; wait for it and return its `Exit`."""
        if self.exit is not None:
            return self.exit
        deadline = time.monotonic() + seconds
        with contextlib.suppress(ProcessLookupError):  # ended by itself: reaped below
            self.process.send_signal(signal.SIGTERM)
        # os.wait4 rather than Popen.wait: it gives the child's rusage (CPU, peak RSS).
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                return self._reaped(status, rusage)
            if time.monotonic() > deadline:
                self.process.kill()
                deadline = float("inf")
            time.sleep(0.02)

    def _reaped(self, status: int, rusage: resource.struct_rusage) -> Exit:
        code = os.waitstatus_to_exitcode(status)
        self.process.returncode = code  # tells Popen it is reaped
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.exit = Exit(
            code, rusage.ru_utime + rusage.ru_stime, rusage.ru_maxrss / procfs.KIB_PER_MB
        )
        return self.exit

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Emulator:
    child: Child
    url: str
    endpoint: str  # host:port, for the SDK and the configuration

    @property
    def admin(self) -> EmulatorAdmin:
        return EmulatorAdmin(self.url, timeout=120)


def start_emulator(
    workdir: Path, latency_ms: float, *, cpus: set[int] | None, name: str = "emulator"
) -> Emulator:
    """`vodpoller emulator` on a free port with `latency_ms` before every API answer; the
    other options are the real API's (rate limit 100/s per action, 16 events, 5 s long poll)."""
    argv = [sys.executable, "-m", "vodpoller", "emulator", "--port", "0"]
    argv += ["--latency-ms", f"{latency_ms:g}", "--seed", "10"]
    child = Child(name, argv, cpus=cpus, log=workdir / f"{name}.log", stdout=subprocess.PIPE)
    first = child.process.stdout.readline() if child.process.stdout else ""
    match = _LISTENING.search(first)
    if match is None:
        child.stop()
        raise RuntimeError(f"the emulator did not start: {first!r}, see {child.log}")
    return Emulator(child, match.group(1), match.group(2))


def write_daemon_config(path: Path, emulator: Emulator, database_url: str, log_level: str) -> Path:
    """A configuration with the defaults but for the endpoint, credentials, database and log
    level: what a user who points vodpoller at the emulator writes."""
    path.write_text(
        "[vod]\n"
        f'endpoint = "{emulator.endpoint}"\n'
        'scheme = "http"\n'
        f'secret_id = "{DEFAULT_SECRET_ID}"\n'
        f'secret_key = "{DEFAULT_SECRET_KEY}"\n'
        "\n[database]\n"
        f'url = "{database_url}"\n'
        "\n[logging]\n"
        f'level = "{log_level}"\n',
        encoding="utf-8",
    )
    return path


def start_daemon(config: Path, *, cpus: set[int] | None, name: str = "daemon") -> Child:
    """`vodpoller run --config FILE`; its log (stderr) goes to NAME.log beside the file."""
    argv = [sys.executable, "-m", "vodpoller", "run", "--config", str(config)]
    return Child(name, argv, cpus=cpus, log=config.with_name(f"{name}.log"))


def start_hand_loop(
    workdir: Path, emulator: Emulator, database: Path, *, cpus: set[int] | None
) -> Child:
    """bench/handloop.py against the emulator, into its own SQLite file."""
    # Run by path, as a user runs a script: the bench package need not be importable there.
    argv = [sys.executable, str(Path(__file__).with_name("handloop.py"))]
    argv += ["--endpoint", emulator.endpoint]
    argv += ["--database", str(database)]
    return Child("handloop", argv, cpus=cpus, log=workdir / "handloop.log")
