"""Two `vodpoller run` racing on the same redeliveries: the emulator trickles some answers so
slowly that their leases run out on the way, and VOD gives those events to the other daemon
meanwhile. Both store them; the daemon whose confirm is refused folds its copy into the
other's. One row per event, on SQLite and on each database server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from tests.conftest import EmulatorFactory
from tests.helpers import emulator_config, reaped
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.schema import vod_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EVENTS = 400


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VODPOLLER_", "TENCENT"))}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def test_two_daemons_racing_on_redeliveries_keep_one_row_per_event(
    emulator_factory: EmulatorFactory, database_url: str, tmp_path: Path
) -> None:
    emulator = emulator_factory(lease_seconds=1.5, long_poll_seconds=0.5, seed=11)
    admin = EmulatorAdmin(emulator.url)
    admin.enqueue(
        [
            {"EventType": "PullComplete", "PullCompleteEvent": {"TaskId": f"race-{n:05d}"}}
            for n in range(EVENTS)
        ]
    )
    # A third of the answers arrive after their events' lease ran out (about 2 s for 16).
    admin.set_faults({"PullEvents": {"trickle_rate": 0.3, "trickle_bytes_per_second": 1200}})
    configs = [
        emulator_config(
            tmp_path / f"d{n}.toml",
            emulator,
            database_url,
            poll={"interval_seconds": 0.1, "concurrency": 4},
            logging={"level": "warning"},
        )
        for n in (1, 2)
    ]
    commands = [[sys.executable, "-m", "vodpoller", "run", "--config", str(c)] for c in configs]
    with (
        (tmp_path / "d1.log").open("w") as log1,
        (tmp_path / "d2.log").open("w") as log2,
        reaped(subprocess.Popen(commands[0], env=_environment(), stderr=log1, text=True)) as one,
        reaped(subprocess.Popen(commands[1], env=_environment(), stderr=log2, text=True)) as two,
    ):
        deadline = time.monotonic() + 120
        while admin.stats()["Redelivered"] < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        admin.set_faults({})  # then let them finish
        while True:
            stats = admin.stats()
            if stats["Confirmed"] == EVENTS and stats["Leased"] == stats["Queued"] == 0:
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.2)
        time.sleep(1.0)  # the last confirm outcomes recorded
        for daemon in (one, two):
            daemon.send_signal(signal.SIGTERM)
        assert [one.wait(60), two.wait(60)] == [0, 0]

    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows, tasks, deliveries, held = connection.execute(
                select(
                    func.count(),
                    func.count(vod_events.c.task_id.distinct()),
                    func.sum(vod_events.c.deliveries),
                    func.count(vod_events.c.held_by),
                ).select_from(vod_events)
            ).one()
    finally:
        engine.dispose()
    assert (rows, tasks) == (EVENTS, EVENTS), "one row per event"
    assert held == 0
    assert deliveries > EVENTS  # the redeliveries found their rows (or were folded in)
    assert admin.stats()["Redelivered"] >= 40
