"""The crash harness: a real `vodpoller run` killed with SIGKILL at seeded random moments, over
and over, while the emulator injects faults on both actions (errors, dropped answers, 502s,
confirms applied and then their answer lost or broken). Afterwards every event is stored
once and confirmed, and nothing is left leased."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import emulator_config, reaped
from vodpoller.emulator.admin import EmulatorAdmin

pytestmark = [pytest.mark.slow, pytest.mark.sqlite, pytest.mark.timeout(600)]

KILLS = 30
EVENTS = 2000
SEED = 20261201

FAULTS = {
    "PullEvents": {
        "error_rate": 0.04,
        "error_codes": ["InternalError", "RequestLimitExceeded"],
        "drop_rate": 0.04,  # the events are leased, the answer never comes
        "http_error_rate": 0.03,
        "truncate_rate": 0.02,  # leased, then the answer is cut off
        "latency_ms": 80,  # a drain lasts long enough to be killed in the middle of it
    },
    "ConfirmEvents": {
        # Not applied, tried again a moment later: a kill then finds batches committed and
        # not yet confirmed, which come back after their lease and must find their rows.
        "error_rate": 0.25,
        "error_codes": ["InternalError"],
        "drop_rate": 0.05,  # the confirm is applied, its answer never comes
        "http_error_rate": 0.04,
        "bad_chunked_rate": 0.02,  # applied, then a broken answer
    },
}


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VODPOLLER_", "TENCENT"))}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def _entry(n: int) -> dict[str, object]:
    """A distinct event: its TaskId is its own."""
    return {
        "EventType": "PullComplete",
        "PullCompleteEvent": {"TaskId": f"1256712345-Pull-crash{n:06d}", "Status": "FINISH"},
    }


def _wait_for_pulls(admin: EmulatorAdmin, before: int, daemon: subprocess.Popen[str]) -> None:
    """Until the daemon pulls (its start-up is over), or it died."""
    deadline = time.monotonic() + 30
    while admin.stats()["Requests"].get("PullEvents", 0) <= before:
        if daemon.poll() is not None or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def test_thirty_kills_at_random_moments_lose_nothing_and_store_nothing_twice(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    emulator = emulator_factory(lease_seconds=2.0, long_poll_seconds=0.5, seed=SEED)
    admin = EmulatorAdmin(emulator.url)
    admin.enqueue([_entry(n) for n in range(EVENTS)])
    admin.set_faults(FAULTS)
    database = tmp_path / "events.db"
    config = emulator_config(
        tmp_path / "vodpoller.toml",
        emulator,
        f"sqlite:///{database}",
        poll={"interval_seconds": 0.1, "max_backoff_seconds": 0.5, "concurrency": 2},
        logging={"level": "warning"},
    )
    command = [sys.executable, "-m", "vodpoller", "run", "--config", str(config)]
    kills = 0
    during_start_up = 0
    with (tmp_path / "daemons.log").open("w") as log:
        while kills < KILLS:
            pulls = admin.stats()["Requests"].get("PullEvents", 0)
            with reaped(
                subprocess.Popen(command, env=_environment(), stdout=log, stderr=log, text=True)
            ) as daemon:
                if rng.random() < 0.2:
                    # Start-up: credentials, the migration lock, the store process.
                    time.sleep(rng.uniform(0.0, 1.5))
                    during_start_up += 1
                else:
                    # Mid-drain: stored and not yet confirmed, confirmed and not recorded...
                    _wait_for_pulls(admin, pulls, daemon)
                    time.sleep(rng.uniform(0.0, 1.2))
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGKILL)
                    kills += 1
                daemon.wait(10)
        # The faults stop; one more daemon finishes the work, and stops gracefully.
        admin.set_faults({})
        pulls = admin.stats()["Requests"].get("PullEvents", 0)
        with reaped(
            subprocess.Popen(command, env=_environment(), stdout=log, stderr=log, text=True)
        ) as daemon:
            deadline = time.monotonic() + 120
            while True:
                stats = admin.stats()
                if stats["Confirmed"] == EVENTS and stats["Leased"] == stats["Queued"] == 0:
                    break
                assert time.monotonic() < deadline, stats
                time.sleep(0.2)
            _wait_for_pulls(admin, pulls, daemon)  # it is up, whoever finished the work
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(60) == 0

    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT count(*), count(DISTINCT task_id), sum(deliveries), count(held_by)"
            " FROM vod_events"
        ).fetchone()
        stray = connection.execute("SELECT count(*) FROM vod_rejects").fetchone()[0]
    count, distinct, deliveries, held = rows
    assert (count, distinct) == (EVENTS, EVENTS), "every event stored, exactly once"
    assert deliveries > EVENTS  # redeliveries of stored events found their rows
    assert held == 0  # the last daemon reaped the killed ones and settled its own
    assert stray == 0
    stats = admin.stats()
    assert stats["Redelivered"] > 0  # the kills and faults did make events come back
    print(  # the figures for the closing note: pytest -s shows them
        f"kills={kills} (start-up {during_start_up}) events={EVENTS} "
        f"redelivered={stats['Redelivered']} "
        f"deliveries={deliveries} requests={stats['Requests']}"
    )
