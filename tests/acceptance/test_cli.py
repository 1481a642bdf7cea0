"""The real `vodpoller` command in a subprocess, against the emulator and a SQLite file."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import emulator_config, reaped, write_config
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import Emulator


def _env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VODPOLLER_", "TENCENTCLOUD_"))
    }
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", **extra)
    return env


def vodpoller(*args: str, cwd: Path, timeout: float = 60, **env: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "vodpoller", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _count(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        (count,) = connection.execute("SELECT count(*) FROM vod_events").fetchone()
    return int(count)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


def _config(tmp_path: Path, emulator: Emulator, db_file: Path, **extra: Any) -> Path:
    return emulator_config(tmp_path / "config.toml", emulator, f"sqlite:///{db_file}", **extra)


def test_once_drains_and_prints_the_summary_line(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).generate(50)
    config = _config(tmp_path, emulator, database)

    done = vodpoller("once", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pulled=50 stored=50 duplicates=0 confirmed=50"
    assert _count(database) == 50
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert {line["event"] for line in lines} >= {"drained"}
    assert sum(line["stored"] for line in lines if line["event"] == "drained") == 50


def test_once_reads_the_config_path_from_the_environment(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    emulator = emulator_factory()
    config = _config(tmp_path, emulator, database)

    done = vodpoller("once", cwd=tmp_path, VODPOLLER_CONFIG=str(config))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pulled=0 stored=0 duplicates=0 confirmed=0"


def test_run_stops_on_sigterm_with_exit_0_and_nothing_left_leased(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    emulator = emulator_factory(latency_ms=20, long_poll_seconds=5)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(3000)
    config = _config(tmp_path, emulator, database, poll={"concurrency": 2})
    daemon = subprocess.Popen(
        [sys.executable, "-m", "vodpoller", "run", "--config", str(config)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped(daemon):
        deadline = time.monotonic() + 30
        while admin.stats()["Confirmed"] < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.poll() is None, daemon.communicate()[1]
        signalled = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=10)
        stopped_after = time.monotonic() - signalled

    assert daemon.returncode == 0, stderr
    assert stopped_after < 10
    stats = admin.stats()
    assert stats["Leased"] == 0
    assert 0 < stats["Confirmed"] < 3000  # stopped mid-backlog
    assert _count(database) == stats["Confirmed"]
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert events[-1] == "stopped"


def test_run_exits_0_on_sigint_while_idle(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    emulator = emulator_factory(long_poll_seconds=2)
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
        deadline = time.monotonic() + 20
        while not EmulatorAdmin(emulator.url).stats()["Requests"].get("PullEvents"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        daemon.send_signal(signal.SIGINT)
        _, stderr = daemon.communicate(timeout=10)
    assert daemon.returncode == 0, stderr


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        ({"poll": {"concurency": 2}}, "poll.concurency"),
        ({"poll": {"concurrency": "four"}}, "poll.concurrency"),
        ({"vod": {"scheme": "http", "endpoint": "vod.tencentcloudapi.com"}}, "http"),
        ({"databse": {"url": "sqlite://"}}, "databse"),
    ],
)
def test_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, sections: dict[str, dict[str, Any]], named: str
) -> None:
    config = write_config(tmp_path / "bad.toml", sections)

    for command in ("run", "once", "check", "migrate"):
        done = vodpoller(command, "--config", str(config), cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert named in done.stderr
        assert str(config) in done.stderr


def test_a_missing_config_file_exits_2_and_says_how_to_give_one(tmp_path: Path) -> None:
    done = vodpoller("once", "--config", str(tmp_path / "nowhere.toml"), cwd=tmp_path)

    assert done.returncode == 2
    assert "nowhere.toml" in done.stderr
    assert "VODPOLLER_CONFIG" in done.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert vodpoller("frobnicate", cwd=tmp_path).returncode == 2
    assert vodpoller(cwd=tmp_path).returncode == 2


def test_no_secret_reaches_any_log_line(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    secret_key = "s3cr3t-KEY-that-must-never-be-logged"
    emulator = emulator_factory(secret_key=secret_key)
    admin = EmulatorAdmin(emulator.url)
    admin.generate(40)
    admin.set_faults({"ConfirmEvents": {"error_rate": 0.5}, "PullEvents": {"error_rate": 0.3}})
    config = _config(tmp_path, emulator, database, logging={"level": "debug"})

    outputs = [vodpoller("once", "--config", str(config), cwd=tmp_path) for _ in range(3)]
    wrong = vodpoller(
        "once",
        "--config",
        str(config),
        cwd=tmp_path,
        TENCENTCLOUD_SECRET_ID=emulator.options.secret_id,
        TENCENTCLOUD_SECRET_KEY="wrong-" + secret_key,
    )

    assert wrong.returncode == 1
    assert "AuthFailure.SignatureFailure" in wrong.stderr
    for done in [*outputs, wrong]:
        text = done.stdout + done.stderr
        assert secret_key not in text
        assert "TC3-HMAC-SHA256 Credential=" not in text
        assert "Signature=" not in text


def test_check_passes_on_a_working_setup_and_fails_on_an_unreachable_database(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).generate(3)
    config = _config(tmp_path, emulator, database)
    assert vodpoller("migrate", "--config", str(config), cwd=tmp_path).returncode == 0

    good = vodpoller("check", "--config", str(config), cwd=tmp_path)

    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok    schema: at the newest revision" in good.stdout
    assert "about 3 event(s) waiting" in good.stdout

    broken = _config(
        tmp_path,
        emulator,
        database,
        database={"url": "postgresql+psycopg://nobody@127.0.0.1:1/nothing"},
    )
    bad = vodpoller("check", "--config", str(broken), cwd=tmp_path)

    assert bad.returncode == 1
    assert "FAIL  database" in bad.stdout


def test_check_says_an_empty_database_gets_its_schema_on_first_run(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    config = _config(tmp_path, emulator_factory(), database)
    sqlite3.connect(database).close()  # a file without tables

    done = vodpoller("check", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    schema: none yet: will be created on first run (run migrates)" in done.stdout


def test_check_no_migrate_says_to_migrate_an_empty_database(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    config = _config(tmp_path, emulator_factory(), database)
    sqlite3.connect(database).close()

    done = vodpoller("check", "--no-migrate", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 1
    assert "FAIL  schema: schema missing in" in done.stdout
    assert "run `vodpoller migrate`" in done.stdout


def test_migrate_brings_the_schema_to_the_newest_revision(
    emulator_factory: EmulatorFactory, tmp_path: Path, database: Path
) -> None:
    config = _config(tmp_path, emulator_factory(), database)

    first = vodpoller("migrate", "--config", str(config), cwd=tmp_path)
    again = vodpoller("migrate", "--config", str(config), cwd=tmp_path)

    assert first.returncode == again.returncode == 0
    assert "schema at revision" in first.stdout
    assert _count(database) == 0


def test_demo_stores_one_row_per_sample_type_and_absorbs_the_refused_ones(
    tmp_path: Path,
) -> None:
    first = vodpoller("demo", cwd=tmp_path)
    second = vodpoller("demo", cwd=tmp_path)

    for done in (first, second):  # each run starts afresh and tells the same story
        assert done.returncode == 0, done.stderr
        assert "pulled=12 stored=12 duplicates=0 confirmed=0" in done.stdout
        assert "pulled=37 stored=25 duplicates=12 confirmed=37" in done.stdout
        assert "Queued=0 Leased=0" in done.stdout
        assert "PullComplete" in done.stdout
        assert "ProcedureStateChanged" in done.stdout
    database = tmp_path / "vodpoller-demo.db"
    with sqlite3.connect(database) as connection:
        types = connection.execute(
            "SELECT count(DISTINCT event_type), count(*), sum(deliveries),"
            " count(confirmed_at), count(held_by) FROM vod_events"
        ).fetchone()
    assert types == (37, 37, 37 + 12, 37, 0)


def test_demo_names_the_vodpoller_that_ran_it_and_its_hints_work(tmp_path: Path) -> None:
    database = tmp_path / "vodpoller-demo.db"
    script = Path(sys.executable).parent / "vodpoller"  # the console script of this install
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    as_module = vodpoller("demo", cwd=tmp_path)
    as_script = subprocess.run(
        [str(script), "demo"], cwd=tmp_path, env=_env(), capture_output=True, text=True, check=False
    )

    hints = [line.strip() for line in as_module.stdout.splitlines() if "--database-url" in line]
    assert hints == [
        f"{sys.executable} -m vodpoller events stats --database-url sqlite:///{database}",
        f"{sys.executable} -m vodpoller events show 1 --database-url sqlite:///{database}",
    ]
    assert f"  {script} events stats --database-url sqlite:///{database}" in as_script.stdout
    for hint in hints:  # from another directory too: the paths are absolute
        followed = subprocess.run(
            shlex.split(hint),
            cwd=elsewhere,
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        assert followed.returncode == 0, followed.stderr
        assert "event_type" in followed.stdout


def test_demo_and_the_emulator_never_go_through_an_http_proxy(tmp_path: Path) -> None:
    dead_proxy = "http://127.0.0.1:9"
    done = vodpoller("demo", cwd=tmp_path, HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy)

    assert done.returncode == 0, done.stderr
    assert "pulled=37 stored=25 duplicates=12 confirmed=37" in done.stdout


def test_check_passes_on_a_sqlite_file_that_run_will_create_and_creates_nothing(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "not-yet" / "events.db"
    config = _config(tmp_path, emulator_factory(), missing)

    done = vodpoller("check", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok    database: {missing} does not exist yet: run creates it" in done.stdout
    assert "ok    schema: will be created on first run (run migrates)" in done.stdout
    assert not missing.parent.exists()
    # The documented order: check, then run (here once), which creates and migrates it.
    assert vodpoller("once", "--config", str(config), cwd=tmp_path).returncode == 0
    assert _count(missing) == 0


def test_check_no_migrate_fails_on_a_missing_sqlite_file(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "not-yet" / "events.db"
    config = _config(tmp_path, emulator_factory(), missing)

    done = vodpoller("check", "--no-migrate", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 1
    assert f"FAIL  database: no vodpoller database at {missing}" in done.stdout
    assert "run `vodpoller migrate` first" in done.stdout
    assert not missing.parent.exists()


def test_check_blames_an_impossible_sqlite_path_not_the_migrations(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    a_file = tmp_path / "plain-file"
    a_file.write_text("not a directory")
    impossible = a_file / "state" / "events.db"
    config = _config(tmp_path, emulator_factory(), impossible)

    done = vodpoller("check", "--config", str(config), cwd=tmp_path)
    run = vodpoller("once", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 1
    assert f"FAIL  database: cannot create {impossible}: {a_file} is not a directory" in (
        done.stdout
    )
    assert "migrate" not in done.stdout
    assert run.returncode == 1  # check said what run finds


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_blames_a_directory_the_user_cannot_write(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    config = _config(tmp_path, emulator_factory(), locked / "vodpoller" / "events.db")

    done = vodpoller("check", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 1
    assert f"{locked} is not writable by" in done.stdout
