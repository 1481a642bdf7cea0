"""`vodpoller events ...` in a subprocess, on a SQLite file filled through the store."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.acceptance.test_cli import _env, vodpoller
from tests.helpers import reaped, write_config
from vodpoller.emulator.samples import load_samples
from vodpoller.events import parse_entry
from vodpoller.migrate import upgrade
from vodpoller.store import Answer, EventStore, Reject

SAMPLES = load_samples()
OLD = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> str:
    """37 sample events of the default application stored long ago, 3 of app 1500000001 now."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    with EventStore.connect(url) as store:
        store.save([parse_entry({**s, "EventHandle": "h"}, None) for s in SAMPLES], OLD)
        store.save([parse_entry({**s, "EventHandle": "h"}, 1500000001) for s in SAMPLES[:3]])
        store.save([parse_entry({**SAMPLES[0], "EventHandle": "h2"}, None)], OLD)  # redelivery
    return url


def events(database: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = vodpoller(
        "events", *args, "--database-url", database, cwd=tmp_path
    )
    return done


def test_list_shows_the_newest_events_first_as_a_table(database: str, tmp_path: Path) -> None:
    done = events(database, tmp_path, "list", "--limit", "5")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "received_at", "sub_app_id", "event_type"]
    ids = [int(line.split()[0]) for line in lines[2:]]
    assert ids == [40, 39, 38, 37, 36]


def test_list_filters_combine_and_json_is_one_array_with_payloads(
    database: str, tmp_path: Path
) -> None:
    sample = SAMPLES[0]
    done = events(database, tmp_path, "list", "--type", sample["EventType"], "--format", "json")

    rows = json.loads(done.stdout)
    assert [row["sub_app_id"] for row in rows] == [1500000001, None]
    assert all(row["payload"]["EventType"] == sample["EventType"] for row in rows)
    assert rows[1]["deliveries"] == 2

    by_app = json.loads(
        events(database, tmp_path, "list", "--sub-app-id", "1500000001", "--format", "json").stdout
    )
    assert len(by_app) == 3

    event = parse_entry(sample, None)
    if event.task_id:
        by_task = json.loads(
            events(
                database, tmp_path, "list", "--task-id", event.task_id, "--format", "json"
            ).stdout
        )
        assert {row["task_id"] for row in by_task} == {event.task_id}


def test_since_and_until_take_ages_and_iso_times(database: str, tmp_path: Path) -> None:
    recent = json.loads(
        events(database, tmp_path, "list", "--since", "1h", "--format", "json").stdout
    )
    old = json.loads(
        events(
            database,
            tmp_path,
            "list",
            "--until",
            "2026-06-01",
            "--limit",
            "100",
            "--format",
            "json",
        ).stdout
    )

    assert len(recent) == 3
    assert len(old) == 37
    bad = events(database, tmp_path, "list", "--since", "yesterday")
    assert bad.returncode == 2
    assert "yesterday" in bad.stderr


def test_csv_has_a_header_and_one_row_per_event(database: str, tmp_path: Path) -> None:
    done = events(database, tmp_path, "list", "--limit", "4", "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 4
    assert rows[0]["id"] == "40"
    assert set(rows[0]) >= {"event_type", "task_id", "file_id", "status", "deliveries"}


def test_show_finds_an_event_by_id_or_dedup_key_prefix(database: str, tmp_path: Path) -> None:
    by_id = json.loads(events(database, tmp_path, "show", "1").stdout)
    by_key = json.loads(events(database, tmp_path, "show", by_id["dedup_key"][:10]).stdout)
    missing = events(database, tmp_path, "show", "999")

    assert by_id == by_key
    assert by_id["payload"]["EventType"] == by_id["event_type"]
    assert missing.returncode == 1
    assert "no event" in missing.stderr


def test_stats_counts_events_deliveries_and_unconfirmed_per_type(
    database: str, tmp_path: Path
) -> None:
    rows = json.loads(events(database, tmp_path, "stats", "--format", "json").stdout)

    by_type = {row["event_type"]: row for row in rows}
    assert len(by_type) == 37
    first = by_type[SAMPLES[0]["EventType"]]
    assert (first["events"], first["deliveries"], first["unconfirmed"]) == (2, 3, 2)
    assert sum(row["events"] for row in rows) == 40


def test_export_writes_json_lines_oldest_first(database: str, tmp_path: Path) -> None:
    to_stdout = events(database, tmp_path, "export", "--sub-app-id", "1500000001")
    target = tmp_path / "all.jsonl"
    to_file = events(database, tmp_path, "export", "--output", str(target))

    lines = [json.loads(line) for line in to_stdout.stdout.splitlines()]
    assert [line["id"] for line in lines] == [38, 39, 40]
    assert to_file.returncode == 0
    assert "40 event(s) written" in to_file.stderr
    exported = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in exported] == list(range(1, 41))
    assert all("payload" in row for row in exported)


def test_events_read_the_database_from_the_configuration(database: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"database": {"url": database}})

    done = vodpoller("events", "stats", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "PullComplete" in done.stdout


def test_tail_prints_the_last_events_then_new_ones_until_interrupted(
    database: str, tmp_path: Path
) -> None:
    command = ["tail", "--database-url", database, "--limit", "2", "--interval", "0.1"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "vodpoller", "events", *command, "--format", "json"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped(follower):
        assert follower.stdout is not None
        first = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [row["id"] for row in first] == [39, 40]
        with EventStore.connect(database) as store:
            store.save([parse_entry({**SAMPLES[5], "EventHandle": "x"}, 7)])
        new = json.loads(follower.stdout.readline())
        assert (new["id"], new["sub_app_id"]) == (41, 7)
        time.sleep(0.2)
        follower.send_signal(signal.SIGINT)
        _, stderr = follower.communicate(timeout=10)
    assert follower.returncode == 0, stderr


def test_recent_received_at_is_within_the_last_minute(database: str, tmp_path: Path) -> None:
    rows = json.loads(events(database, tmp_path, "list", "--limit", "1", "--format", "json").stdout)
    received = datetime.fromisoformat(rows[0]["received_at"])
    assert datetime.now(UTC) - received < timedelta(minutes=1)


def test_rejects_lists_the_quarantined_entries_newest_first(database: str, tmp_path: Path) -> None:
    with EventStore.connect(database) as store:
        store.save_answers(
            [
                Answer([], OLD, None, [Reject('"a string"', None, "not an object")]),
                Answer(
                    [],
                    datetime.now(UTC),
                    1500000001,
                    [Reject('{"EventHandle": "h-9", "EventType": 7}', "h-9", "EventType: 7")],
                ),
            ]
        )

    table = events(database, tmp_path, "rejects")
    as_json = json.loads(events(database, tmp_path, "rejects", "--format", "json").stdout)
    recent = json.loads(
        events(database, tmp_path, "rejects", "--since", "1h", "--format", "json").stdout
    )
    of_app = events(database, tmp_path, "rejects", "--sub-app-id", "1500000001", "--limit", "5")

    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "id",
        "received_at",
        "sub_app_id",
        "reason",
        "raw",
    ]
    assert [(row["id"], row["reason"]) for row in as_json] == [
        (2, "EventType: 7"),
        (1, "not an object"),
    ]
    assert as_json[0]["raw"] == '{"EventHandle": "h-9", "EventType": 7}'
    assert as_json[0]["event_handle"] == "h-9"
    assert [row["id"] for row in recent] == [2]
    assert [line.split()[0] for line in of_app.stdout.splitlines()[2:]] == ["2"]


def test_rejects_takes_the_usual_usage_checks(database: str, tmp_path: Path) -> None:
    backwards = events(database, tmp_path, "rejects", "--since", "1h", "--until", "2h")
    no_rows = events(database, tmp_path, "rejects", "--limit", "0")

    assert backwards.returncode == 2
    assert "is not before" in backwards.stderr
    assert no_rows.returncode == 2
