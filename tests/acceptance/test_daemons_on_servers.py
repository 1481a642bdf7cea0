"""`vodpoller run` processes against real PostgreSQL and MariaDB: two daemons on one database,
and a database that goes away in the middle of a drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.conftest import EmulatorFactory
from tests.databases import MYSQL_URL_VARIABLE, POSTGRES_URL_VARIABLE, fresh_database
from tests.helpers import emulator_config
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import Emulator
from vodpoller.schema import vod_events

pytestmark = pytest.mark.slow

SERVERS = [
    pytest.param(POSTGRES_URL_VARIABLE, marks=pytest.mark.postgres, id="postgresql"),
    pytest.param(MYSQL_URL_VARIABLE, marks=pytest.mark.mysql, id="mysql"),
]


def _server_url(variable: str) -> str:
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"needs {variable} (make test sets it when CI=true)")
    return url


@pytest.fixture(params=SERVERS)
def server_database(request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_database(_server_url(request.param)) as url:
        yield url


@pytest.fixture
def postgres_database() -> Iterator[str]:
    with fresh_database(_server_url(POSTGRES_URL_VARIABLE)) as url:
        yield url


class Daemon:
    """A `vodpoller run` subprocess whose JSON log lines go to a file."""

    def __init__(self, config: Path, log: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VODPOLLER_", "TENCENT"))}
        env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vodpoller", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.alive():
                self.process.kill()
                self.process.wait()
            self._log_file.close()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _drained(admin: EmulatorAdmin, total: int) -> Callable[[], bool]:
    def check() -> bool:
        stats = admin.stats()
        return bool(stats["Confirmed"] == total and stats["Leased"] == stats["Queued"] == 0)

    return check


def _config(tmp_path: Path, name: str, emulator: Emulator, url: str, **extra: Any) -> Path:
    return emulator_config(tmp_path / f"{name}.toml", emulator, url, **extra)


def test_two_daemons_on_one_database_store_every_event_exactly_once(
    emulator_factory: EmulatorFactory, server_database: str, tmp_path: Path
) -> None:
    emulator = emulator_factory(long_poll_seconds=1)
    admin = EmulatorAdmin(emulator.url)
    apps = {1500000001: 2500, 1500000002: 1500, 1500000003: 1000}
    for app, count in apps.items():
        admin.generate(count, sub_app_id=app)
    total = sum(apps.values())
    poll = {"concurrency": 4, "rate_limit_per_second": 50.0, "interval_seconds": 0.2}
    vod = {"sub_app_ids": list(apps)}
    daemons = [
        Daemon(
            _config(tmp_path, f"d{i}", emulator, server_database, poll=poll, vod=vod),
            tmp_path / f"d{i}.log",
        )
        for i in (1, 2)
    ]
    try:
        _wait_for(_drained(admin, total), 180, f"{total} events confirmed")
    finally:
        codes = [daemon.stop() for daemon in daemons]

    assert codes == [0, 0], [d.log.read_text()[-2000:] for d in daemons]
    engine = create_engine(server_database, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    vod_events.c.sub_app_id, func.count(), func.count(vod_events.c.confirmed_at)
                ).group_by(vod_events.c.sub_app_id)
            ).all()
    finally:
        engine.dispose()
    assert {app: (n, confirmed) for app, n, confirmed in rows} == {
        app: (n, n) for app, n in apps.items()
    }
    stats = admin.stats()
    assert (stats["Confirmed"], stats["Leased"], stats["Queued"]) == (total, 0, 0)
    # Both daemons did part of the work.
    for daemon in daemons:
        assert sum(line.get("stored", 0) for line in daemon.lines() if line["event"] == "drained")


def _set_connections(admin_url: str, database: str, *, allowed: bool) -> None:
    """Refuse (and cut) or allow again every connection to `database`: a database outage."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(
                text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            )
            if not allowed:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                )
    finally:
        engine.dispose()


def test_a_database_outage_mid_drain_loses_nothing_and_needs_no_restart(
    emulator_factory: EmulatorFactory, postgres_database: str, tmp_path: Path
) -> None:
    emulator = emulator_factory(long_poll_seconds=1, lease_seconds=4, latency_ms=10)
    admin = EmulatorAdmin(emulator.url)
    total = 3000
    admin.generate(total)
    config = _config(
        tmp_path,
        "daemon",
        emulator,
        postgres_database,
        poll={
            "concurrency": 2,
            "confirm_budget_seconds": 3.0,
            "interval_seconds": 0.2,
            "max_backoff_seconds": 1.0,
        },
    )
    admin_url = make_url(postgres_database).set(database="postgres").render_as_string(False)
    name = str(make_url(postgres_database).database)
    reader = create_engine(postgres_database, poolclass=NullPool)

    def confirmed_never_exceeds_stored() -> None:
        """Read the confirmed count first, then the rows: rows must be at least as many."""
        confirmed = admin.stats()["Confirmed"]
        with reader.connect() as connection:
            stored = connection.execute(select(func.count()).select_from(vod_events)).scalar_one()
        assert stored >= confirmed

    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        _wait_for(lambda: admin.stats()["Confirmed"] >= 300, 60, "the drain to be under way")
        confirmed_never_exceeds_stored()

        _set_connections(admin_url, name, allowed=False)
        at_outage = admin.stats()["Confirmed"]
        time.sleep(5)
        during_outage = admin.stats()["Confirmed"]
        assert daemon.alive()
        _set_connections(admin_url, name, allowed=True)

        # At most the batches committed just before the cut were confirmed during it.
        assert during_outage - at_outage <= 2 * 16
        deadline = time.monotonic() + 90
        while not _drained(admin, total)():
            assert time.monotonic() < deadline, admin.stats()
            confirmed_never_exceeds_stored()
            time.sleep(0.2)
        assert daemon.alive()
    finally:
        _set_connections(admin_url, name, allowed=True)
        code = daemon.stop()
        lines = daemon.lines()

    try:
        with reader.connect() as connection:
            stored, deliveries, unconfirmed = connection.execute(
                select(
                    func.count(),
                    func.sum(vod_events.c.deliveries),
                    func.count() - func.count(vod_events.c.confirmed_at),
                ).select_from(vod_events)
            ).one()
    finally:
        reader.dispose()

    assert code == 0
    assert stored == total
    assert unconfirmed == 0
    stats = admin.stats()
    assert stats["Redelivered"] > 0  # the batches pulled during the outage came back
    # Deliveries whose batch failed to commit during the outage never reached a row.
    assert total <= deliveries <= total + stats["Redelivered"]
    failures = [line for line in lines if line["event"].startswith("drain failed")]
    # A transient streak is a warning when it begins (and every 5 minutes), not per attempt.
    streak_lines = [line for line in failures if line["level"] == "warning"]
    assert 1 <= len(streak_lines) <= 3, streak_lines
    assert not [line for line in failures if line["level"] in ("error", "critical")]
    # The database's return shows in the heartbeat, if a beat fell in the outage. (The drain's
    # streak ends only when a later drain stores something: here the failed drain itself
    # stored the rest of the backlog, and no event came after it.)
    beats = [line["event"] for line in lines if line["event"].startswith("heartbeat")]
    assert beats in ([], ["heartbeat failed; retrying", "heartbeat recovered"]), beats
    assert all(line["event"] != "unexpected error: stopping" for line in lines)
