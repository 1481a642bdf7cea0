"""Alembic revisions against real databases: the schema they build is the one the models
describe (the drift test), and they go down to nothing and up again."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from tests.databases import EventFactory
from vodpoller.database import make_engine
from vodpoller.migrate import current_revision, downgrade, head_revision, script_location, upgrade
from vodpoller.schema import metadata
from vodpoller.store import EventStore, SaveResult

ROOT = Path(__file__).resolve().parents[2]


def test_empty_database_has_no_revision(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_upgrade_to_head_builds_exactly_the_schema_of_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)

        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            # No dialect reports a spurious difference today; filter one here, with the
            # reason, only if a new server version starts to.
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(database_url: str, event_factory: EventFactory) -> None:
    upgrade(database_url)
    downgrade(database_url, "base")

    engine = make_engine(database_url)
    try:
        assert not inspect(engine).has_table("vod_events")
        assert current_revision(engine) is None

        upgrade(engine)

        assert inspect(engine).has_table("vod_events")
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    with EventStore.connect(database_url) as store:
        assert store.save([event_factory()]) == SaveResult(stored=1, duplicates=0)


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_migrations_are_found_with_their_first_revision() -> None:
    location = script_location()
    assert (location / "env.py").is_file()
    assert (location / "script.py.mako").is_file()
    assert (location / "versions" / "0001_create_vod_events.py").is_file()
    revisions = sorted(path.name[:4] for path in (location / "versions").glob("[0-9]*.py"))
    assert revisions[0] == "0001"
    assert head_revision() == revisions[-1]


def test_wheel_lists_every_package_and_maps_the_migrations() -> None:
    """`packages` is a list (a find cannot map migrations/ into the package): keep it whole."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"vodpoller.migrations": "migrations"}
    on_disk = {
        ".".join(path.relative_to(ROOT).parts)
        for path in (ROOT / "vodpoller").rglob("*")
        if path.is_dir() and path.name != "__pycache__"
    }
    on_disk |= {"vodpoller", "vodpoller.migrations", "vodpoller.migrations.versions"}
    assert set(setuptools["packages"]) == on_disk


def test_daemons_starting_together_migrate_once_without_error(database_url: str) -> None:
    # Processes, not threads: that is how daemons start, and Alembic's context is global.
    script = "import sys, vodpoller.migrate as m; m.upgrade(sys.argv[1])"
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url], stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    errors = [start.communicate(timeout=60)[1] for start in starts]
    outcomes = [(start.returncode, error) for start, error in zip(starts, errors, strict=True)]

    assert outcomes == [(0, "")] * 3
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
