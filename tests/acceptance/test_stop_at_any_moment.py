"""SIGTERM at any moment of `vodpoller run`'s start-up ends it cleanly: exit 0, quickly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import emulator_config, reaped

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("after", [0.4, 0.9, 1.6, 3.0])
def test_a_stop_during_start_up_or_just_after_exits_0(
    emulator_factory: EmulatorFactory, tmp_path: Path, after: float
) -> None:
    emulator = emulator_factory()
    config = emulator_config(tmp_path / "c.toml", emulator, f"sqlite:///{tmp_path / 'e.db'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VODPOLLER_", "TENCENT"))}
    env.update(NO_PROXY="127.0.0.1,localhost")
    command = [sys.executable, "-m", "vodpoller", "run", "--config", str(config)]
    with reaped(
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    ) as daemon:
        time.sleep(after)
        signalled = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=20)
        took = time.monotonic() - signalled

    assert daemon.returncode == 0, stderr[-2000:]
    assert took < 15  # the long poll in flight (0.5 s here) at most, plus the stop
    assert "Traceback" not in stderr
