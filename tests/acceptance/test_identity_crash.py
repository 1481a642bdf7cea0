"""A `vodpoller run` killed between the commit and the confirm: the events come back after
their lease and land in their rows, on each of the three databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from tests.conftest import EmulatorFactory
from tests.helpers import emulator_config, reaped
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.schema import vod_daemons, vod_events

pytestmark = pytest.mark.slow


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VODPOLLER_", "TENCENT"))}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_crash_between_commit_and_confirm_then_the_redelivery_is_one_row_per_event(
    emulator_factory: EmulatorFactory, database_url: str, tmp_path: Path
) -> None:
    emulator = emulator_factory(lease_seconds=2.0)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(20)
    # Confirms fail before they take effect: the daemon keeps retrying inside its budget.
    admin.set_faults({"ConfirmEvents": {"error_rate": 1.0, "error_codes": ["InternalError"]}})
    config = emulator_config(tmp_path / "vodpoller.toml", emulator, database_url)
    engine = create_engine(database_url, poolclass=NullPool)

    def stored() -> int:
        try:
            with engine.connect() as connection:
                count = select(func.count()).select_from(vod_events)
                return int(connection.execute(count).scalar_one())
        except Exception:  # noqa: BLE001 (the schema may not exist yet)
            return 0

    command = [sys.executable, "-m", "vodpoller", "run", "--config", str(config)]
    try:
        with (
            (tmp_path / "daemon.log").open("w") as log,
            reaped(
                subprocess.Popen(
                    command, env=_environment(), stdout=subprocess.DEVNULL, stderr=log, text=True
                )
            ) as daemon,
        ):
            _wait_for(lambda: stored() == 20, 60, "20 rows committed")
            assert admin.stats()["Confirmed"] == 0
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)

        admin.set_faults({})
        time.sleep(2.2)  # the leases run out: VOD delivers the 20 events again
        again = subprocess.run(
            [sys.executable, "-m", "vodpoller", "once", "--config", str(config)],
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert again.returncode == 0, again.stderr
        assert "pulled=20 stored=0 duplicates=20 confirmed=20" in again.stdout
        with engine.connect() as connection:
            rows = connection.execute(
                select(vod_events.c.deliveries, vod_events.c.confirmed_at, vod_events.c.held_by)
            ).all()
            daemons = connection.execute(select(func.count()).select_from(vod_daemons))
            assert daemons.scalar_one() == 0  # the killed one was reaped, `once` unregistered
    finally:
        engine.dispose()
    assert len(rows) == 20
    assert {deliveries for deliveries, _, _ in rows} == {2}
    assert all(confirmed is not None and held is None for _, confirmed, held in rows)
    stats = admin.stats()
    assert (stats["Confirmed"], stats["Leased"], stats["Queued"]) == (20, 0, 0)
