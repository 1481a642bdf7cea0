"""A real `vodpoller run` under a service manager's end of the notify protocol (a real AF_UNIX
datagram socket, by path and by abstract name): READY, STATUS, STOPPING, and WATCHDOG pings
only when asked for and only while it makes progress."""

from __future__ import annotations

import itertools
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from tests.conftest import EmulatorFactory
from tests.daemon_process import VodpollerProcess, wait_until
from tests.helpers import emulator_config
from tests.sdnotify import NotifySocket
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.migrate import head_revision
from vodpoller.schema import vod_daemons

pytestmark = pytest.mark.slow


def _revision_and_daemons(database: Path) -> tuple[str | None, int]:
    """The schema's revision and how many daemons are registered, read at once."""
    engine = create_engine(f"sqlite:///{database}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version"))
            daemons = connection.execute(select(vod_daemons.c.id)).all()
            return revision.scalar_one_or_none(), len(daemons)
    finally:
        engine.dispose()


def _listen(manager: NotifySocket, seconds: float) -> list[dict[str, str]]:
    """Every message that comes within `seconds`."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = manager.receive(left)
        if message is not None:
            got.append(message)
    return got


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_after_start_then_status_then_stopping_on_sigterm(
    emulator_factory: EmulatorFactory, tmp_path: Path, abstract: bool
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).generate(20)
    database = tmp_path / "events.db"
    config = emulator_config(tmp_path / "config.toml", emulator, f"sqlite:///{database}")
    with (
        NotifySocket(None if abstract else tmp_path / "notify.sock") as manager,
        VodpollerProcess("run", config, tmp_path, env={"NOTIFY_SOCKET": manager.address}) as daemon,
    ):
        ready = manager.wait_for("READY")
        # Read the moment READY came: the schema is at the newest revision, the daemon is
        # registered.
        at_ready = _revision_and_daemons(database)
        status = manager.wait_for("STATUS")
        while "drained 20 events" not in status["STATUS"]:
            status = manager.wait_for("STATUS")
        daemon.signal(signal.SIGTERM)
        manager.wait_for("STOPPING")
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    assert manager.messages[0] is ready  # nothing before it
    assert ready == {"READY": "1", "STATUS": "drained 0 events, no poll yet"}
    assert at_ready == (head_revision(), 1)
    assert re.fullmatch(r"drained 20 events, last poll \d+ s ago", status["STATUS"])
    assert not [m for m in manager.messages if "WATCHDOG" in m]  # not asked for


@pytest.mark.parametrize(
    ("environment", "own_pid", "pings"),
    [
        ({"WATCHDOG_USEC": "2000000"}, False, True),
        ({"WATCHDOG_USEC": "2000000"}, True, True),  # WATCHDOG_PID: its own pid
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, False, False),  # another's
        ({"WATCHDOG_USEC": "0"}, False, False),
        ({}, False, False),
    ],
    ids=["asked", "asked-of-its-pid", "asked-of-another-pid", "zero", "not-asked"],
)
def test_watchdog_pings_only_when_systemd_asks_this_process_for_them(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    environment: dict[str, str],
    own_pid: bool,
    pings: bool,
) -> None:
    emulator = emulator_factory()
    config = emulator_config(tmp_path / "config.toml", emulator, f"sqlite:///{tmp_path}/e.db")
    with (
        NotifySocket(tmp_path / "notify.sock") as manager,
        VodpollerProcess(
            "run",
            config,
            tmp_path,
            env={"NOTIFY_SOCKET": manager.address, **environment},
            pid_variable="WATCHDOG_PID" if own_pid else None,
        ) as daemon,
    ):
        manager.wait_for("READY")
        heard = _listen(manager, 2.0)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    watchdog = [m for m in heard if m.get("WATCHDOG") == "1"]
    # One ping every quarter of the 2 s interval: about 4 in 2 s.
    assert (len(watchdog) >= 2) if pings else (watchdog == [])


def test_watchdog_pings_stop_while_pulls_hang_and_resume_after(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    config = emulator_config(tmp_path / "config.toml", emulator, f"sqlite:///{tmp_path}/e.db")
    with (
        NotifySocket(tmp_path / "notify.sock") as manager,
        VodpollerProcess(
            "run",
            config,
            tmp_path,
            env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "2000000"},
        ) as daemon,
    ):
        manager.wait_for("READY")
        manager.wait_for("WATCHDOG")
        # Every answer now takes 6 s: no progress within the 1 s window.
        admin.set_faults({"PullEvents": {"latency_ms": 6000}})
        daemon.wait_for_line(
            "no progress: watchdog pings stop, systemd will restart the service", timeout=20
        )
        manager.drain()
        silent = _listen(manager, 1.5)
        admin.set_faults({})
        daemon.wait_for_line("progress again: watchdog pings resume", timeout=20)
        manager.wait_for("WATCHDOG")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    assert [m for m in silent if "WATCHDOG" in m] == []
    (stalled,) = daemon.lines_of(
        "no progress: watchdog pings stop, systemd will restart the service"
    )
    assert stalled["level"] == "error"
    assert stalled["lagging"] == ["default"]
    assert stalled["window_seconds"] == 1.0


def _count(database: Path) -> int:
    engine = create_engine(f"sqlite:///{database}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM vod_events")).scalar_one())
    finally:
        engine.dispose()


def _reloaded(manager: NotifySocket) -> tuple[dict[str, str], dict[str, str]]:
    """RELOADING=1, then READY=1: the reload systemd waits for is over."""
    reloading = manager.wait_for("RELOADING")
    return reloading, manager.wait_for("READY")


def test_sighup_applies_poll_and_logging_refuses_the_rest_and_survives_a_broken_file(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    database = tmp_path / "events.db"
    elsewhere = tmp_path / "elsewhere.db"
    config = tmp_path / "config.toml"
    emulator_config(config, emulator, f"sqlite:///{database}")
    new_key = "a-new-secret-key-not-to-be-logged"
    with (
        NotifySocket(tmp_path / "notify.sock") as manager,
        VodpollerProcess("run", config, tmp_path, env={"NOTIFY_SOCKET": manager.address}) as daemon,
    ):
        manager.wait_for("READY")
        time.sleep(1)  # a few drains at the info level
        debug_before = [line for line in daemon.lines() if line["level"] == "debug"]
        emulator_config(
            config,
            emulator,
            f"sqlite:///{elsewhere}",
            vod={"secret_key": new_key},
            poll={"interval_seconds": 1.0},
            logging={"level": "debug"},
        )
        daemon.signal(signal.SIGHUP)
        reloading, ready = _reloaded(manager)
        applied = daemon.wait_for_line("reloaded")
        refused = daemon.wait_for_line("changes that need a restart were not applied")

        def planned() -> list[dict[str, Any]]:
            return daemon.lines_of("next drain planned")

        wait_until(lambda: len(planned()) >= 3, 30, "three drains at the debug level")
        admin.generate(5)
        wait_until(lambda: _count(database) == 5, 30, "5 events in the running database")

        config.write_text("[poll\ninterval_seconds = ", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        _reloaded(manager)
        failed = daemon.wait_for_line("reload failed; the running configuration stays")
        admin.generate(5)
        wait_until(lambda: _count(database) == 10, 30, "10 events in the running database")
        assert daemon.alive()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    assert debug_before == []
    assert reloading["RELOADING"] == "1"
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert ready == {"READY": "1"}
    assert applied["applied"] == ["logging.level", "poll.interval_seconds"]
    assert refused["level"] == "warning"
    assert refused["keys"] == ["database.url", "vod.secret_key"]
    # The new interval: each drain planned 1 s after the last, and run no sooner.
    runs = planned()
    assert {line["in_seconds"] for line in runs[1:]} == {1.0}
    moments = [datetime.fromisoformat(line["timestamp"]) for line in runs[1:]]
    assert all((b - a).total_seconds() >= 1.0 for a, b in itertools.pairwise(moments))
    assert not elsewhere.exists()
    assert failed["level"] == "error"
    assert "config.toml" in failed["error"]
    assert new_key not in daemon.text()


def test_a_reload_in_the_middle_of_a_drain_drops_nothing(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory(latency_ms=10)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(1500)
    database = tmp_path / "events.db"
    config = tmp_path / "config.toml"
    emulator_config(config, emulator, f"sqlite:///{database}", poll={"concurrency": 4})
    with (
        NotifySocket(tmp_path / "notify.sock") as manager,
        VodpollerProcess("run", config, tmp_path, env={"NOTIFY_SOCKET": manager.address}) as daemon,
    ):
        manager.wait_for("READY")
        at_reload = []
        for done, poll in (
            (200, {"concurrency": 1, "rate_limit_per_second": 20.0}),
            (700, {"concurrency": 3, "rate_limit_per_second": 100.0, "confirm_budget_seconds": 20}),
        ):
            wait_until(lambda: admin.stats()["Confirmed"] >= done, 30, f"{done} confirmed")  # noqa: B023
            emulator_config(config, emulator, f"sqlite:///{database}", poll=poll)
            daemon.signal(signal.SIGHUP)
            at_reload.append(admin.stats()["Confirmed"])
            _reloaded(manager)
        wait_until(lambda: admin.stats()["Confirmed"] == 1500, 60, "every event confirmed")
        assert daemon.alive()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    assert all(confirmed < 1500 for confirmed in at_reload)  # both in the middle of the drain
    stats = admin.stats()
    assert (stats["Leased"], stats["Queued"], stats["Redelivered"]) == (0, 0, 0)
    assert _count(database) == 1500
    assert len(daemon.lines_of("reloaded")) == 2
    assert not [line for line in daemon.lines() if line["level"] in ("error", "critical")]
