"""`vodpoller status` and the `daemons` probe of `vodpoller check`, read from real `vodpoller run`
processes: alive, frozen, killed, and unable to reach VOD."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.acceptance.test_cli import vodpoller
from tests.conftest import EmulatorFactory
from tests.daemon_process import VodpollerProcess, wait_until
from tests.helpers import emulator_config
from vodpoller import __version__
from vodpoller.daemons import DaemonRecord
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.migrate import upgrade
from vodpoller.schema import vod_daemons, vod_events
from vodpoller.store import EventStore

pytestmark = pytest.mark.slow


def _records(url: str) -> list[DaemonRecord]:
    with EventStore.connect(url) as store, store.engine.connect() as connection:
        return [
            DaemonRecord.from_row(row) for row in connection.execute(select(vod_daemons)).mappings()
        ]


def _unconfirmed_held(url: str) -> int:
    with EventStore.connect(url) as store, store.engine.connect() as connection:
        count = connection.execute(
            select(func.count())
            .select_from(vod_events)
            .where(vod_events.c.confirmed_at.is_(None), vod_events.c.held_by.is_not(None))
        ).scalar_one()
    return int(count)


def _by_pid(document: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {daemon["pid"]: daemon for daemon in document["daemons"]}


def test_status_shows_every_daemon_alive_or_dead_and_the_unconfirmed_rows(
    emulator_factory: EmulatorFactory, database_url: str, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    admin.generate(40)
    config = emulator_config(tmp_path / "config.toml", emulator, database_url)
    upgrade(database_url)  # both start on a migrated database: no race on the first revision
    with (
        VodpollerProcess("run", config, tmp_path, name="first") as first,
        VodpollerProcess("run", config, tmp_path, name="second") as second,
    ):
        wait_until(lambda: admin.stats()["Confirmed"] == 40, 60, "40 events confirmed")

        def both_beat_their_counts() -> bool:
            records = _records(database_url)
            return (
                len(records) == 2
                and sum(r.stored for r in records) == 40
                and all(r.last_poll_at is not None for r in records)
            )

        wait_until(both_beat_their_counts, 30, "both daemons' heartbeats with 40 stored")
        # Confirms that take a minute: the next events are stored, held by whoever pulled them.
        admin.set_faults({"ConfirmEvents": {"latency_ms": 60_000}})
        admin.generate(6)
        wait_until(lambda: _unconfirmed_held(database_url) == 6, 30, "6 rows held")
        # Frozen, the second is alive (its process is there, its heartbeat fresh) but cannot
        # remove the row of the first, which dies with its row in place.
        second.signal(signal.SIGSTOP)
        try:
            first.kill()
            table = vodpoller("status", "--database-url", database_url, cwd=tmp_path)
            as_json = vodpoller("status", "--config", str(config), "--format", "json", cwd=tmp_path)
        finally:
            second.signal(signal.SIGCONT)
        admin.set_faults({})
        assert second.stop(60) == 0, second.text()[-3000:]

    assert table.returncode == 0, table.stderr
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    daemons = _by_pid(document)
    assert set(daemons) == {first.pid, second.pid}
    assert daemons[first.pid]["alive"] is False
    assert daemons[second.pid]["alive"] is True
    for daemon in daemons.values():
        assert daemon["host"] == socket.gethostname()
        assert daemon["version"] == __version__
        assert daemon["command"] == "run"
        assert daemon["applications"] == ["default"]
        assert datetime.fromisoformat(daemon["started_at"]) <= datetime.now(UTC)
        assert daemon["last_poll_seconds_ago"] is not None
        assert daemon["heartbeat_seconds_ago"] < 30
    assert sum(d["stored"] for d in daemons.values()) == 40
    assert sum(d["confirmed"] for d in daemons.values()) == 40
    assert sum(d["pulled"] for d in daemons.values()) == 40
    assert sum(d["holding"] for d in daemons.values()) == 6
    assert document["unconfirmed"] == {"rows": 6, "held_by_daemons": 6}

    lines = table.stdout.splitlines()
    assert lines[0].startswith("2 daemon(s) registered on ")
    assert lines[0].endswith("(1 alive, 1 dead)")
    header = lines[2].split()
    assert header[:4] == ["host", "pid", "state", "command"]
    rows = {int(line.split()[1]): line.split() for line in lines[4:6]}
    assert rows[first.pid][2] == "dead"
    assert rows[second.pid][2] == "alive"
    assert "unconfirmed rows: 6, of which 6 held by a daemon" in table.stdout


def test_status_with_no_daemon_says_so(database_url: str, tmp_path: Path) -> None:
    upgrade(database_url)

    table = vodpoller("status", "--database-url", database_url, cwd=tmp_path)
    as_json = vodpoller("status", "--database-url", database_url, "--format", "json", cwd=tmp_path)

    assert table.returncode == as_json.returncode == 0, table.stderr + as_json.stderr
    assert table.stdout.splitlines()[0].startswith("0 daemon(s) registered on ")
    assert "unconfirmed rows: 0, of which 0 held" in table.stdout
    document = json.loads(as_json.stdout)
    assert document["daemons"] == []
    assert document["unconfirmed"] == {"rows": 0, "held_by_daemons": 0}


def _age_start(url: str, minutes: float) -> None:
    """As if the daemons had started `minutes` ago."""
    with EventStore.connect(url) as store, store.engine.begin() as connection:
        connection.execute(
            update(vod_daemons).values(started_at=datetime.now(UTC) - timedelta(minutes=minutes))
        )


def _daemons_line(done: subprocess.CompletedProcess[str]) -> str:
    (line,) = [line for line in done.stdout.splitlines() if "daemons:" in line]
    return line


def test_check_fails_when_registered_daemons_do_not_poll(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    reachable = emulator_factory()
    unreachable = emulator_factory()
    unreachable.close()  # the daemon's VOD is down
    checked = emulator_config(tmp_path / "check.toml", reachable, url)
    config = emulator_config(tmp_path / "daemon.toml", unreachable, url)

    none = vodpoller("check", "--config", str(checked), cwd=tmp_path)
    assert none.returncode == 0, none.stdout + none.stderr
    assert _daemons_line(none) == "ok    daemons: none registered"

    with VodpollerProcess("run", config, tmp_path) as daemon:
        wait_until(lambda: any(r.last_error for r in _records(url)), 30, "an error recorded")
        starting = vodpoller("check", "--config", str(checked), cwd=tmp_path)
        _age_start(url, 10)
        failing = vodpoller("check", "--config", str(checked), cwd=tmp_path)
        status = vodpoller("status", "--database-url", url, "--format", "json", cwd=tmp_path)
        daemon.kill()
        dead = vodpoller("check", "--config", str(checked), cwd=tmp_path)

    assert starting.returncode == 0, starting.stdout
    assert _daemons_line(starting) == "ok    daemons: 1 running, starting: no poll yet"
    name = f"{socket.gethostname()}:{daemon.pid}"
    assert failing.returncode == 1
    line = _daemons_line(failing)
    assert line.startswith(f"FAIL  daemons: no daemon polled in the last 300 s ({name} last poll ")
    assert "never, last error " in line
    assert "PullEvents failed: cannot connect to " in line
    assert "see `vodpoller status` and the daemons' logs (journalctl -u vodpoller)" in line
    (record,) = json.loads(status.stdout)["daemons"]
    assert record["last_poll_at"] is None
    assert record["last_error"].startswith("PullEvents failed: cannot connect to ")
    assert datetime.fromisoformat(record["last_error_at"]) <= datetime.now(UTC)
    assert dead.returncode == 1
    line = _daemons_line(dead)
    assert line.startswith(f"FAIL  daemons: 1 registered, none running ({name} dead, heartbeat ")
    assert "systemctl start vodpoller" in line


def test_check_passes_while_a_daemon_polls_and_status_sees_it_poll_during_a_long_drain(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    # 4,000 events 16 at a time, one puller, 40 ms per answer: a first drain of 10 s or
    # more, longer than a heartbeat.
    emulator = emulator_factory(latency_ms=40)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(4000)
    config = emulator_config(tmp_path / "config.toml", emulator, url, poll={"concurrency": 1})

    with VodpollerProcess("run", config, tmp_path) as daemon:
        wait_until(lambda: any(r.last_poll_at for r in _records(url)), 30, "a poll recorded")
        drains_done = daemon.lines_of("drained")
        check = vodpoller("check", "--config", str(config), cwd=tmp_path)
        still_draining = not daemon.lines_of("drained")
        assert daemon.stop() == 0

    # The poll was recorded, and check saw it, while the first drain still ran.
    assert drains_done == []
    assert still_draining
    assert check.returncode == 0, check.stdout + check.stderr
    line = _daemons_line(check)
    assert line.startswith("ok    daemons: 1 running, last poll ")
    assert line.endswith(" s ago")


def test_rows_that_came_only_by_push_are_not_counted_as_unconfirmed(
    database_url: str, tmp_path: Path
) -> None:
    from vodpoller.events import parse_entry
    from vodpoller.store import Answer

    upgrade(database_url)

    def upload(file_id: str) -> Any:
        return parse_entry(
            {"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id}}, None
        )

    at = datetime.now(UTC)
    with EventStore.connect(database_url) as store:
        store.save_answers([Answer([upload("1"), upload("2")], at, pushed=True)])
        store.save([upload("3")], at)  # pulled, its confirm never recorded
        # Pushed, then pulled (absorbed) and not confirmed yet: it is the pull's to confirm.
        store.save_answers([Answer([upload("4")], at, pushed=True)])
        store.save([upload("4")], at)

    table = vodpoller("status", "--database-url", database_url, cwd=tmp_path)
    as_json = vodpoller("status", "--database-url", database_url, "--format", "json", cwd=tmp_path)
    stats = vodpoller(
        "events", "stats", "--database-url", database_url, "--format", "json", cwd=tmp_path
    )

    assert table.returncode == as_json.returncode == stats.returncode == 0, table.stderr
    assert "unconfirmed rows: 2, of which 0 held" in table.stdout
    assert "rows that came only by normal callback (nothing to confirm): 2" in table.stdout
    document = json.loads(as_json.stdout)
    assert document["unconfirmed"] == {"rows": 2, "held_by_daemons": 0}
    assert document["pushed_only"] == 2
    (row,) = json.loads(stats.stdout)
    assert (row["events"], row["unconfirmed"]) == (4, 2)
