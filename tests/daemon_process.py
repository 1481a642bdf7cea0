"""A real `vodpoller run` (or `once`) in a subprocess for acceptance tests: its JSON log lines
and its stdout go to files the test reads while it runs; optionally under a service manager's
notify socket and watchdog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

# What the test process may carry that must not reach the daemon.
_NOT_INHERITED = ("VODPOLLER_", "TENCENTCLOUD_", "NOTIFY_SOCKET", "WATCHDOG_")


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` every 50 ms until it is true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


class VodpollerProcess:
    """`python -m vodpoller COMMAND --config CONFIG` with stderr (the log) and stdout in files
    under `directory`; killed on the way out of a `with` block if it still runs."""

    def __init__(
        self,
        command: str,
        config: Path,
        directory: Path,
        *,
        name: str = "vodpoller",
        env: dict[str, str] | None = None,
        pid_variable: str | None = None,
    ):
        """`pid_variable`: set that variable to the process's own pid, as systemd sets
        `WATCHDOG_PID` (a shell exports its pid, then becomes vodpoller with `exec`)."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        environment.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        environment.update(env or {})
        self.log = directory / f"{name}.log"
        self.out = directory / f"{name}.out"
        argv = [sys.executable, "-m", "vodpoller", command, "--config", str(config)]
        if pid_variable is not None:
            argv = ["/bin/sh", "-c", f'export {pid_variable}=$$; exec "$@"', "sh", *argv]
        with self.log.open("w") as log, self.out.open("w") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=directory,
                env=environment,
                stdout=out,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then its exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (a line still being written is left out)."""
        lines = []
        for text in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                continue
        return lines

    def text(self) -> str:
        """Everything on stderr, for assertion messages."""
        return self.log.read_text()

    def stdout(self) -> str:
        return self.out.read_text()

    def events(self) -> list[str]:
        return [line.get("event", "") for line in self.lines()]

    def lines_of(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    def wait_for_line(self, event: str, timeout: float = 30) -> dict[str, Any]:
        """The first log line whose `event` is `event`, waiting for it to be written."""
        found: list[dict[str, Any]] = []

        def logged() -> bool:
            found[:] = self.lines_of(event)
            if not found and not self.alive():
                raise AssertionError(
                    f"exited {self.process.returncode} before {event!r}: {self.text()[-3000:]}"
                )
            return bool(found)

        wait_until(logged, timeout, f"the log line {event!r}")
        return found[0]

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> VodpollerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()
