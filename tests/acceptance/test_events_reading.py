"""`vodpoller events ...` in a subprocess: reading never writes, bad input is a one-line usage
error, and tables never cut an identifier."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from tests.acceptance.test_cli import _env, vodpoller
from tests.helpers import reaped, write_config
from vodpoller.database import make_engine
from vodpoller.events import parse_entry
from vodpoller.migrate import upgrade
from vodpoller.output import ELLIPSIS
from vodpoller.queries import _UNIT_SECONDS
from vodpoller.store import EventStore

ROOT = Path(__file__).resolve().parents[2]
READING = [
    ["list"],
    ["show", "1"],
    ["stats"],
    ["export"],
    ["tail", "--interval", "0.1"],
]
LONG_TASK_ID = "1256712345-Procedure-" + "0123456789abcdef" * 5 + "t2"  # 103 characters
LONG_STATUS = "PROCESSING-" + "waiting-for-the-transcoder-" * 3


def _entry(task_id: str, status: str = "FINISH") -> dict[str, object]:
    return {
        "EventHandle": "h",
        "EventType": "ProcedureStateChanged",
        "ProcedureStateChangeEvent": {
            "TaskId": task_id,
            "Status": status,
            "ErrCode": 0,
            "FileId": "5285890784246869930",
        },
    }


@pytest.fixture
def stored(tmp_path: Path) -> str:
    """A SQLite database with one event whose task id is long and whose status is long."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    with EventStore.connect(url) as store:
        store.save([parse_entry(_entry("short-task"), None)])
        store.save([parse_entry(_entry(LONG_TASK_ID, LONG_STATUS), None)])
    return url


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("action", READING, ids=lambda a: a[0])
def test_reading_a_missing_sqlite_file_creates_nothing_and_says_so(
    tmp_path: Path, action: list[str]
) -> None:
    before = _tree(tmp_path)
    absolute = vodpoller(
        "events", *action, "--database-url", f"sqlite:///{tmp_path}/none/x.db", cwd=tmp_path
    )
    typo = vodpoller("events", *action, "--database-url", "sqlite:///var/x/events.db", cwd=tmp_path)

    assert absolute.returncode == typo.returncode == 1
    assert absolute.stderr == f"vodpoller: no vodpoller database at {tmp_path}/none/x.db\n"
    assert typo.stderr == (
        f"vodpoller: no vodpoller database at {tmp_path}/var/x/events.db (sqlite:///var/x/"
        "events.db is relative to the current directory; sqlite:////… is absolute)\n"
    )
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("action", READING, ids=lambda a: a[0])
def test_reading_a_database_without_the_schema_says_to_migrate_in_one_line(
    tmp_path: Path, action: list[str], database_url: str
) -> None:
    sqlite_file = tmp_path / "state" / "events.db"
    if database_url.startswith("sqlite"):
        sqlite_file.parent.mkdir()
        sqlite3.connect(sqlite_file).close()  # an empty file, as an unrelated tool leaves it
    where = str(sqlite_file) if database_url.startswith("sqlite") else database_url

    done = vodpoller("events", *action, "--database-url", database_url, cwd=tmp_path)

    assert done.returncode == 1
    assert done.stderr == f"vodpoller: schema missing in {where}: run `vodpoller migrate`\n"
    engine = make_engine(database_url)
    try:
        assert inspect(engine).get_table_names() == []  # nothing created
    finally:
        engine.dispose()


def test_reading_leaves_a_sqlite_file_as_it_was(stored: str, tmp_path: Path) -> None:
    database = tmp_path / "events.db"
    with sqlite3.connect(database) as connection:  # as `sqlite3` or a backup may leave it
        connection.execute("PRAGMA journal_mode = DELETE")
    before = hashlib.sha256(database.read_bytes()).hexdigest()

    for action in READING[:4]:
        done = vodpoller("events", *action, "--database-url", stored, cwd=tmp_path)
        assert done.returncode == 0, done.stderr

    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.db"]


def test_a_listed_task_id_is_whole_and_finds_its_event(stored: str, tmp_path: Path) -> None:
    listing = vodpoller("events", "list", "--database-url", stored, cwd=tmp_path)

    assert listing.returncode == 0, listing.stderr
    assert ELLIPSIS not in listing.stdout  # a pipe: nothing is cut
    row = listing.stdout.splitlines()[2].split()
    shown = next(cell for cell in row if cell.startswith("1256712345-Procedure-"))
    assert shown == LONG_TASK_ID
    assert LONG_STATUS in listing.stdout
    found = vodpoller(
        "events",
        "list",
        "--task-id",
        shown,
        "--format",
        "json",
        "--database-url",
        stored,
        cwd=tmp_path,
    )
    assert [row["task_id"] for row in json.loads(found.stdout)] == [LONG_TASK_ID]


def test_tail_shows_whole_task_ids(stored: str, tmp_path: Path) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "vodpoller", "events", "tail", "--database-url", stored],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped(follower):
        assert follower.stdout is not None
        lines = [follower.stdout.readline() for _ in range(3)]
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=10)
    assert lines[0].split()[:5] == ["id", "received_at", "sub_app_id", "event_type", "task_id"]
    assert LONG_TASK_ID in lines[2].split()
    assert LONG_STATUS in lines[2]


def _on_a_terminal(args: list[str], columns: int, cwd: Path) -> str:
    """What the command prints to a terminal `columns` wide."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "vodpoller", *args],
        cwd=cwd,
        env=_env(COLUMNS=str(columns)),
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    output = b""
    with reaped(process):
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            output += chunk
        _, errors = process.communicate(timeout=30)
    os.close(leader)
    assert process.returncode == 0, errors
    return output.decode().replace("\r\n", "\n")


def test_on_a_terminal_other_text_is_cut_with_an_ellipsis_to_fit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    with EventStore.connect(url) as store:
        store.save([parse_entry(_entry("short-task", LONG_STATUS), None)])

    screen = _on_a_terminal(["events", "list", "--database-url", url], 140, tmp_path)
    piped = vodpoller("events", "list", "--database-url", url, cwd=tmp_path).stdout

    lines = screen.splitlines()
    assert len(lines) == 3
    assert all(len(line) <= 140 for line in lines), lines
    assert re.search(rf"  PROC\S*{ELLIPSIS}  ", lines[2])  # the status, cut visibly
    assert "short-task" in lines[2].split()
    assert max(len(line) for line in piped.splitlines()) > 140  # a pipe gets it whole
    assert LONG_STATUS in piped


def test_on_a_terminal_ids_are_never_cut(stored: str, tmp_path: Path) -> None:
    screen = _on_a_terminal(["events", "list", "--database-url", stored], 80, tmp_path)

    assert LONG_TASK_ID in screen.splitlines()[2].split()
    assert "5285890784246869930" in screen.splitlines()[2].split()


@pytest.mark.parametrize("interval", ["0", "-1", "nan"])
def test_tail_refuses_an_interval_that_is_not_positive(
    stored: str, tmp_path: Path, interval: str
) -> None:
    done = vodpoller(
        "events", "tail", "--interval", interval, "--database-url", stored, cwd=tmp_path, timeout=20
    )

    assert done.returncode == 2
    assert "argument --interval: must be" in done.stderr


@pytest.mark.parametrize("action", ["list", "tail"])
@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_below_1_is_a_usage_error(
    stored: str, tmp_path: Path, action: str, limit: str
) -> None:
    done = vodpoller(
        "events", action, "--limit", limit, "--database-url", stored, cwd=tmp_path, timeout=20
    )

    assert done.returncode == 2
    assert f"argument --limit: must be at least 1, not {limit}" in done.stderr


def test_since_after_until_is_a_usage_error_naming_both(stored: str, tmp_path: Path) -> None:
    done = vodpoller(
        "events", "list", "--since", "1h", "--until", "2h", "--database-url", stored, cwd=tmp_path
    )

    assert done.returncode == 2
    assert done.stderr.startswith("vodpoller: --since 1h (")
    assert ") is not before --until 2h (" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "not a database URL"),
        ("mysql://root@127.0.0.1/test", "the driver for mysql is not installed"),
        ("oracle+nothing://x", "unknown database kind"),
    ],
)
def test_a_bad_database_url_exits_2_as_from_the_configuration(
    tmp_path: Path, url: str, says: str
) -> None:
    config = write_config(tmp_path / "config.toml", {"database": {"url": url}})

    given = vodpoller("events", "list", "--database-url", url, cwd=tmp_path)
    configured = vodpoller("events", "list", "--config", str(config), cwd=tmp_path)

    assert given.returncode == configured.returncode == 2
    assert given.stderr.startswith(f"vodpoller: --database-url: {says}")
    assert says in configured.stderr


def test_export_takes_format_json_as_json_lines(stored: str, tmp_path: Path) -> None:
    plain = vodpoller("events", "export", "--database-url", stored, cwd=tmp_path)
    as_json = vodpoller(
        "events", "export", "--format", "json", "--database-url", stored, cwd=tmp_path
    )

    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout == plain.stdout
    assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [1, 2]


def test_an_unknown_option_shows_the_usage_of_its_command_not_every_command(
    tmp_path: Path,
) -> None:
    done = vodpoller("events", "export", "--limit", "3", cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.startswith("usage: vodpoller events export")
    assert "vodpoller events export: error: unrecognized arguments: --limit 3" in done.stderr
    assert "COMMAND" not in done.stderr


def test_the_ages_in_since_help_and_in_the_readme_agree(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("`--since WHEN`") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(\d+[a-z])`", paragraph))
    helped = vodpoller("events", "list", "--help", cwd=tmp_path, COLUMNS="200").stdout
    in_help = set(re.findall(r"\b(\d+[a-z])\b", " ".join(helped.split())))

    assert documented == in_help
    assert {age[-1] for age in documented} == set(_UNIT_SECONDS)
