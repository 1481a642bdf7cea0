"""Faults at start and a stop at any moment, on a real `vodpoller run` / `once`: a database that
is down is waited for (and a stop then ends it cleanly), a wrong secret key stops it with what to
fix, and `once` interrupted mid-backlog stores and confirms what it pulled."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from tests.acceptance.test_daemons_on_servers import _set_connections
from tests.conftest import EmulatorFactory
from tests.daemon_process import VodpollerProcess, wait_until
from tests.databases import POSTGRES_URL_VARIABLE, fresh_database
from tests.helpers import emulator_config
from tests.sdnotify import NotifySocket
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.schema import vod_events
from vodpoller.store import EventStore

pytestmark = pytest.mark.slow

WAITING = "database unavailable at start; waiting for it"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _count(url: str) -> int:
    with EventStore.connect(url) as store, store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(vod_events)).scalar_one())


def test_sigterm_while_waiting_for_a_database_that_is_down_exits_0_at_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    # A PostgreSQL server where nothing listens.
    url = f"postgresql+psycopg://vodpoller@127.0.0.1:{_free_port()}/events"
    config = emulator_config(tmp_path / "config.toml", emulator_factory(), url)
    with (
        NotifySocket(tmp_path / "notify.sock") as manager,
        VodpollerProcess("run", config, tmp_path, env={"NOTIFY_SOCKET": manager.address}) as daemon,
    ):
        daemon.wait_for_line(WAITING)
        time.sleep(4)  # tries at about 0, 1 and 3 s
        alive = daemon.alive()
        daemon.signal(signal.SIGHUP)
        ignored = daemon.wait_for_line(
            "SIGHUP while starting up: ignored; send it again once started"
        )
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(5)  # within the unit's TimeoutStopSec, and far sooner
        manager.wait_for("STOPPING")

    assert alive
    assert code == 0, daemon.text()[-3000:]
    assert ignored["level"] == "warning"
    (waiting,) = daemon.lines_of(WAITING)  # one line for the whole wait
    assert waiting["level"] == "warning"
    assert "connection" in waiting["error"].lower()
    (stopped,) = daemon.lines_of("stopped during start-up")
    assert stopped["step"] == "stopped while waiting for the database"
    told = manager.messages
    assert not [m for m in told if "READY" in m]
    extensions = [m for m in told if "EXTEND_TIMEOUT_USEC" in m]
    assert len(extensions) >= 3  # one per try
    assert {m["EXTEND_TIMEOUT_USEC"] for m in extensions} == {"90000000"}
    statuses = [m["STATUS"] for m in told if "STATUS" in m]
    assert statuses
    assert all(status.startswith("waiting for the database: ") for status in statuses)


def test_a_database_that_comes_back_is_used_and_ready_follows_it(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).generate(10)
    # The SQLite file's directory cannot be made while a file has its name.
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker / 'events.db'}"
    config = emulator_config(tmp_path / "config.toml", emulator, url)
    # Under a 2 s watchdog: the wait at start is longer than its window.
    env = {"WATCHDOG_USEC": "2000000"}
    with (
        NotifySocket(tmp_path / "notify.sock") as manager,
        VodpollerProcess(
            "run", config, tmp_path, env={"NOTIFY_SOCKET": manager.address, **env}
        ) as daemon,
    ):
        daemon.wait_for_line(WAITING)
        manager.wait_for("EXTEND_TIMEOUT_USEC")
        time.sleep(2.5)
        before = [m for m in manager.drain() if "WATCHDOG" in m or "READY" in m]
        blocker.unlink()  # the database can be had now
        available = daemon.wait_for_line("database available", timeout=30)
        manager.wait_for("READY")
        manager.wait_for("WATCHDOG")
        wait_until(lambda: _count(url) == 10, 30, "the 10 events stored")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    assert before == []  # neither ready nor watched while it waits
    assert available["attempts"] >= 1
    assert len(daemon.lines_of(WAITING)) == 1
    # Watched from the start of the schedule, not from the start of the wait: no false alarm.
    assert [line for line in daemon.lines() if line["level"] in ("error", "critical")] == []


@pytest.fixture
def postgres_database() -> Iterator[str]:
    import os

    server = os.environ.get(POSTGRES_URL_VARIABLE)
    if not server:
        pytest.skip(f"needs {POSTGRES_URL_VARIABLE} (make test sets it when CI=true)")
    with fresh_database(server) as url:
        yield url


@pytest.mark.postgres
def test_a_postgresql_database_refusing_connections_at_start_is_waited_for(
    emulator_factory: EmulatorFactory, postgres_database: str, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    admin.generate(10)
    parsed = make_url(postgres_database)
    server = parsed.set(database="postgres").render_as_string(hide_password=False)
    name = str(parsed.database)
    config = emulator_config(tmp_path / "config.toml", emulator, postgres_database)
    _set_connections(server, name, allowed=False)
    try:
        with (
            NotifySocket(tmp_path / "notify.sock") as manager,
            VodpollerProcess(
                "run", config, tmp_path, env={"NOTIFY_SOCKET": manager.address}
            ) as daemon,
        ):
            daemon.wait_for_line(WAITING)
            time.sleep(2)
            assert daemon.alive()
            assert admin.stats()["Requests"].get("PullEvents", 0) == 0  # nothing pulled yet
            _set_connections(server, name, allowed=True)
            manager.wait_for("READY", timeout=60)
            wait_until(lambda: admin.stats()["Confirmed"] == 10, 30, "the 10 events confirmed")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(20) == 0, daemon.text()[-3000:]
    finally:
        _set_connections(server, name, allowed=True)

    assert _count(postgres_database) == 10
    (waiting,) = daemon.lines_of(WAITING)
    assert "not currently accepting connections" in waiting["error"]
    assert daemon.lines_of("database available")


def test_a_wrong_secret_key_stops_run_with_exit_1_and_one_line_saying_what_to_fix(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).generate(5)
    wrong = "a-wrong-secret-key-of-some-length"
    config = emulator_config(
        tmp_path / "config.toml",
        emulator,
        f"sqlite:///{tmp_path / 'events.db'}",
        vod={"secret_key": wrong},
    )
    with VodpollerProcess("run", config, tmp_path) as daemon:
        code = daemon.wait(30)

    assert code == 1, daemon.text()[-3000:]
    errors = [line for line in daemon.lines() if line["level"] in ("error", "critical")]
    assert len(errors) == 1, errors
    (error,) = errors
    assert error["event"] == "fatal: stopping; fix this, then systemd restarts the service"
    assert "AuthFailure.SignatureFailure" in error["error"]
    assert "secret" in error["fix"].lower()
    assert wrong not in daemon.text()
    assert _count(f"sqlite:///{tmp_path / 'events.db'}") == 0


def test_once_interrupted_mid_backlog_stores_and_confirms_what_it_pulled(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory(latency_ms=20)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(3000)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    config = emulator_config(tmp_path / "config.toml", emulator, url)
    with VodpollerProcess("once", config, tmp_path) as once:
        wait_until(lambda: admin.stats()["Confirmed"] >= 200, 60, "the drain under way")
        once.signal(signal.SIGINT)
        code = once.wait(30)

    assert code == 1, once.text()[-3000:]
    summary = re.fullmatch(
        r"pulled=(\d+) stored=(\d+) duplicates=(\d+) confirmed=(\d+)", once.stdout().strip()
    )
    assert summary is not None, once.stdout()
    pulled, stored, duplicates, confirmed = map(int, summary.groups())
    assert 200 <= pulled < 3000  # stopped mid-backlog
    assert (stored, duplicates, confirmed) == (pulled, 0, pulled)
    assert "vodpoller: interrupted: the summary counts what was done" in once.text()
    # Nothing it pulled is left leased: every pulled event was confirmed on the way out.
    wait_until(lambda: admin.stats()["Leased"] == 0, 2, "no lease left")
    stats = admin.stats()
    assert stats["Confirmed"] == pulled
    assert stats["Queued"] == 3000 - pulled
    assert _count(url) == pulled
