"""Starting the daemon in a subprocess: `--no-migrate` refuses a schema it cannot use before it
pulls anything, and SIGHUP does not end it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_cli import _config, _count, _env, vodpoller
from tests.conftest import EmulatorFactory
from tests.helpers import reaped
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.migrate import upgrade


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


def _unmigrated(database: Path) -> str:
    sqlite3.connect(database).close()  # a file without tables
    return f"schema missing in {database}: run `vodpoller migrate`"


def _unknown_revision(database: Path) -> str:
    upgrade(f"sqlite:///{database}")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00d'")
    return f"schema of {database} at revision f00d, which this vodpoller does not know"


def _missing(database: Path) -> str:
    return f"no vodpoller database at {database}"


@pytest.mark.parametrize("command", ["run", "once"])
@pytest.mark.parametrize("prepare", [_unmigrated, _unknown_revision, _missing])
def test_no_migrate_stops_before_pulling_when_the_schema_is_not_the_one_it_needs(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    database: Path,
    command: str,
    prepare: Callable[[Path], str],
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    admin.generate(5)
    expected = prepare(database)
    config = _config(tmp_path, emulator, database)

    done = vodpoller(command, "--no-migrate", "--config", str(config), cwd=tmp_path, timeout=30)

    assert done.returncode == 1
    assert done.stderr.startswith(f"vodpoller: cannot start with --no-migrate: {expected}")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    stats = admin.stats()
    assert stats["Requests"].get("PullEvents", 0) == 0
    assert stats["Queued"] == 5
    assert database.exists() == (prepare is not _missing)  # nothing was created


def test_no_migrate_runs_on_a_migrated_database(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).generate(5)
    upgrade(f"sqlite:///{database}")
    config = _config(tmp_path, emulator, database)

    done = vodpoller("once", "--no-migrate", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert _count(database) == 5


def test_sighup_does_not_end_run(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    config = _config(tmp_path, emulator, database)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "vodpoller", "run", "--config", str(config)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped(daemon):
        stream = daemon.stderr
        assert stream is not None

        def next_line() -> dict[str, Any]:
            line: dict[str, Any] = json.loads(stream.readline() or "{}")
            assert line, f"the daemon ended with {daemon.wait()}"
            return line

        while next_line()["event"] != "started":
            pass
        daemon.send_signal(signal.SIGHUP)  # kill -HUP, systemctl reload: a reload, not an end
        while not (line := next_line())["event"].startswith("reload"):
            pass
        assert line["event"] == "reloaded: nothing changed"

        admin.generate(3)  # still draining after the signal
        while (line := next_line())["event"] != "drained" or not line["stored"]:
            pass
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    assert daemon.returncode == 0
    assert _count(database) == 3
