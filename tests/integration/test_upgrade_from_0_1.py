"""Upgrading a database that vodpoller 0.1 filled (revision 0001), with 0.1's own code from
the repository's history running beside the new version for a moment: rows stored with the
old key keep absorbing their redeliveries, whichever version stores them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vodpoller.events import parse_entry
from vodpoller.migrate import upgrade
from vodpoller.store import EventStore, Release

ROOT = Path(__file__).resolve().parents[2]
# The last commit of vodpoller 0.1 (dedup_key = hash of the whole entry, revision 0001 only).
VERSION_0_1 = "90d46c4"
APP = 1500000001

# Runs in a subprocess with 0.1's package first on sys.path: stores the entries given on
# stdin the way a 0.1 daemon does, and prints the SaveResult.
_OLD_DAEMON = """
import json, sys
from vodpoller.events import parse_entry
from vodpoller.migrate import upgrade
from vodpoller.store import EventStore
request = json.load(sys.stdin)
assert not hasattr(__import__("vodpoller.events").events, "content_key"), "not the 0.1 code"
if request.get("migrate"):
    upgrade(request["url"])
with EventStore.connect(request["url"]) as store:
    events = [parse_entry(entry, request["sub_app_id"]) for entry in request["entries"]]
    result = store.save(events)
    if request.get("confirm"):
        store.mark_confirmed([event.dedup_key for event in events])
print(json.dumps({"stored": result.stored, "duplicates": result.duplicates}))
"""


@pytest.fixture(scope="module")
def version_0_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.1's `vodpoller` package and migrations, from git history."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is needed to take vodpoller 0.1 from the repository's history")
    target = tmp_path_factory.mktemp("vodpoller-0.1")
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", VERSION_0_1, "vodpoller", "migrations"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {VERSION_0_1} (vodpoller 0.1) is not in this clone's history")
    (target / "old.tar").write_bytes(archive.stdout)
    with tarfile.open(target / "old.tar") as tar:
        tar.extractall(target, filter="data")
    return target


def run_0_1(version: Path, url: str, entries: list[dict[str, Any]], **options: Any) -> Any:
    request = {"url": url, "entries": entries, "sub_app_id": APP, **options}
    done = subprocess.run(
        [sys.executable, "-c", _OLD_DAEMON],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(version)},
        cwd=version,  # `python -c` puts the working directory first on sys.path
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def entry(task: str, handle: str, **extra: Any) -> dict[str, Any]:
    return {
        "EventHandle": handle,
        "EventType": "ProcedureStateChanged",
        "FileUploadEvent": None,  # the official shape: every payload key, null if not this one
        "ProcedureStateChangeEvent": {"TaskId": task, "Status": "FINISH", "FileId": "528589"},
        **extra,
    }


@pytest.fixture
def new_store(database_url: str) -> Iterator[EventStore]:
    store = EventStore.connect(database_url)
    yield store
    store.dispose()


def row_of(store: EventStore, task: str) -> dict[str, Any]:
    (row,) = [row for row in store.rows() if row["task_id"] == task]
    return row


def test_rows_of_0_1_keep_absorbing_redeliveries_after_the_upgrade(
    database_url: str, version_0_1: Path, new_store: EventStore
) -> None:
    # 0.1 stores two events; the confirm of `lost` does not take effect, `done` is confirmed.
    assert run_0_1(version_0_1, database_url, [entry("lost", "h1")], migrate=True) == {
        "stored": 1,
        "duplicates": 0,
    }
    run_0_1(version_0_1, database_url, [entry("done", "h2")], confirm=True)

    upgrade(database_url)  # the new version starts; 0.1 runs on for a moment

    # The new version gets `lost` again, now with a null key VOD added meanwhile.
    redelivery = parse_entry(entry("lost", "h3", NewEventOfARelease=None), APP)
    assert new_store.save([redelivery]).duplicates == 1
    # 0.1 gets `lost` again too (it cannot tell the new shape, so the old one here).
    assert run_0_1(version_0_1, database_url, [entry("lost", "h4")])["duplicates"] == 1
    # `done` was confirmed: the same content again is another event, even for 0.1's rows.
    assert new_store.save([parse_entry(entry("done", "h5"), APP)]).stored == 1

    lost = row_of(new_store, "lost")
    assert lost["deliveries"] == 3
    assert lost["content_key"] == redelivery.content_key
    assert len([row for row in new_store.rows() if row["task_id"] == "done"]) == 2


def test_rows_either_version_stores_during_the_overlap_are_one_per_event(
    database_url: str, version_0_1: Path, new_store: EventStore
) -> None:
    run_0_1(version_0_1, database_url, [], migrate=True)
    upgrade(database_url)

    # 0.1 stores an event after the upgrade: a row without content_key.
    run_0_1(version_0_1, database_url, [entry("by-old", "h1")])
    # The new version stores one, then lets go of it (its confirm was refused).
    (row_id,) = new_store.save([parse_entry(entry("by-new", "h2"), APP)]).ids
    new_store.settle(released=[Release(row_id, row_of(new_store, "by-new")["received_at"])])

    # Each gets the other's redelivery.
    assert new_store.save([parse_entry(entry("by-old", "h3"), APP)]).duplicates == 1
    assert run_0_1(version_0_1, database_url, [entry("by-new", "h4")])["duplicates"] == 1

    assert len(new_store.rows()) == 2
    assert row_of(new_store, "by-old")["deliveries"] == 2
    assert row_of(new_store, "by-new")["deliveries"] == 2
    # The new version filled in what 0.1 could not write.
    assert row_of(new_store, "by-old")["content_key"] is not None
