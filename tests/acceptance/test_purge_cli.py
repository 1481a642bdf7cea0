"""`vodpoller events purge --before WHEN [--dry-run]` in a subprocess, on each database."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.acceptance.test_cli import _env, vodpoller
from tests.databases import EventFactory
from tests.helpers import reaped, write_config
from vodpoller.migrate import upgrade
from vodpoller.schema import vod_events
from vodpoller.store import EventStore

NOW = datetime.now(UTC)


def _count(store: EventStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(vod_events)) or 0)


@pytest.fixture
def filled(migrated_store: EventStore, event_factory: EventFactory) -> EventStore:
    """5 events received 40 days ago, 3 received 10 days ago, 2 now."""
    migrated_store.save(event_factory.batch(5), NOW - timedelta(days=40))
    migrated_store.save(event_factory.batch(3), NOW - timedelta(days=10))
    migrated_store.save(event_factory.batch(2), NOW)
    return migrated_store


def _url(store: EventStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def test_purge_removes_what_is_older_and_says_how_many(filled: EventStore, tmp_path: Path) -> None:
    done = vodpoller(
        "events", "purge", "--before", "30d", "--database-url", _url(filled), cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 5 event(s) received before ")
    assert _count(filled) == 5


def test_a_dry_run_says_how_many_and_keeps_them(filled: EventStore, tmp_path: Path) -> None:
    cutoff = (NOW - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S")
    done = vodpoller(
        "events",
        "purge",
        "--before",
        cutoff,
        "--dry-run",
        "--database-url",
        _url(filled),
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"would remove 8 event(s) received before {cutoff}+00:00\n"
    assert _count(filled) == 10


def test_purge_uses_the_database_of_the_configuration(filled: EventStore, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"database": {"url": _url(filled)}})

    done = vodpoller("events", "purge", "--before", "1d", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 8 event(s)")
    assert _count(filled) == 2


@pytest.mark.sqlite
def test_a_time_in_the_future_is_refused_and_nothing_goes(tmp_path: Path) -> None:
    tomorrow = (NOW + timedelta(days=1)).date().isoformat()
    done = vodpoller(
        "events",
        "purge",
        "--before",
        tomorrow,
        "--database-url",
        f"sqlite:///{tmp_path}/x.db",
        cwd=tmp_path,
    )

    assert done.returncode == 2
    assert f"--before {tomorrow} is in the future" in done.stderr


@pytest.mark.sqlite
def test_when_is_required_and_must_be_a_time(tmp_path: Path) -> None:
    missing = vodpoller("events", "purge", "--database-url", "sqlite:///x.db", cwd=tmp_path)
    wrong = vodpoller(
        "events",
        "purge",
        "--before",
        "last tuesday",
        "--database-url",
        "sqlite:///x.db",
        cwd=tmp_path,
    )

    assert missing.returncode == 2
    assert "--before" in missing.stderr
    assert wrong.returncode == 2
    assert "'last tuesday' is neither an ISO 8601 time" in wrong.stderr


@pytest.mark.sqlite
@pytest.mark.slow
def test_a_stop_signal_ends_the_purge_between_batches(
    tmp_path: Path, event_factory: EventFactory
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    with EventStore.connect(url) as store:
        store.save(event_factory.batch(10_000), NOW - timedelta(days=40))
        command = [sys.executable, "-m", "vodpoller", "events", "purge", "--before", "1d"]
        with reaped(
            subprocess.Popen(
                [*command, "--database-url", url],
                cwd=tmp_path,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        ) as purge:
            while _count(store) == 10_000:  # the first batch of 1,000 has not gone yet
                assert purge.poll() is None, purge.communicate()
                time.sleep(0.01)
            purge.send_signal(signal.SIGINT)
            out, err = purge.communicate(timeout=60)
        left = _count(store)

    assert purge.returncode == 1, err
    removed = 10_000 - left
    assert 0 < removed < 10_000
    assert removed % 1000 == 0  # whole batches only
    assert out.startswith(f"stopped early: removed {removed} event(s) received before ")
