"""Every ```sql example of the README runs on SQLite, PostgreSQL and MariaDB, as written.

A comment line that starts with a database's name (`-- PostgreSQL`, `-- MySQL / MariaDB`,
`-- SQLite`) makes the statements after it, up to the next blank line, that database's
version; every other statement is for all three."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.acceptance.test_cli import _env
from tests.conftest import EmulatorFactory
from tests.databases import EventFactory
from tests.helpers import emulator_config
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.migrate import upgrade
from vodpoller.store import EventStore

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"PostgreSQL": "postgresql", "MySQL / MariaDB": "mysql", "SQLite": "sqlite"}
EVERY = frozenset(NAMES.values())
FILE_ID = "5285890784246869930"  # the README's example file


@dataclass(frozen=True)
class Example:
    block: int  # which ```sql block of the README
    topic: str  # the first comment of its group, e.g. "Failed tasks of the last day"
    sql: str
    kinds: frozenset[str]


def readme_examples(readme: str) -> list[Example]:
    examples: list[Example] = []
    for number, block in enumerate(re.findall(r"```sql\n(.*?)```", readme, re.DOTALL)):
        kinds, topic, lines = EVERY, "", []
        for line in block.splitlines():
            text = line.strip()
            if not text:  # a blank line ends a group and its database's section
                kinds, topic = EVERY, ""
            elif text.startswith("--"):
                comment = text.removeprefix("--").strip()
                named = [kind for name, kind in NAMES.items() if comment.startswith(name)]
                kinds = frozenset(named) or kinds
                topic = topic or comment
            else:
                lines.append(line)
                if text.endswith(";"):
                    examples.append(Example(number, topic, "\n".join(lines), kinds))
                    lines = []
    return examples


EXAMPLES = readme_examples((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_its_examples_and_each_query_in_a_version_for_every_database() -> None:
    queries = [e for e in EXAMPLES if e.sql.lstrip().upper().startswith("SELECT")]
    topics = {e.topic for e in queries}

    assert topics >= {"What happened to a file, in order", "Failed tasks of the last day"}
    for topic in topics:
        kinds = [kind for e in queries if e.topic == topic for kind in e.kinds]
        assert sorted(kinds) == sorted(EVERY), topic
    assert any("GRANT" in e.sql for e in EXAMPLES if "mysql" in e.kinds)
    assert any("GRANT" in e.sql for e in EXAMPLES if "postgresql" in e.kinds)


@contextmanager
def _autocommit(url: str) -> Iterator[Connection]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _as_written_for(sql: str, kind: str, role: str, database: str) -> str:
    """The example with the README's user and database names made unique to this test (roles
    are shared by every database of a server)."""
    sql = re.sub(r"\bvodpoller\b", role, sql)
    return re.sub(r"\bvod\b", database, sql) if kind != "sqlite" else sql


def _store_events(url: str, factory: EventFactory) -> None:
    now = datetime.now(UTC)
    with EventStore.connect(url) as store:
        store.save([factory(TaskId="failed-now", ErrCode=10008, Message="source not found")], now)
        store.save([factory(TaskId="failed-long-ago", ErrCode=10008)], now - timedelta(days=2))
        store.save([factory(TaskId="fine-now", ErrCode=0, FileId=FILE_ID)], now)
        store.save([factory(TaskId="fine-too", ErrCode=0, FileId=FILE_ID, Status="PROCESSING")])


def test_every_sql_example_of_the_readme_runs(
    database_url: str, event_factory: EventFactory
) -> None:
    kind = make_url(database_url).get_backend_name()
    kind = "mysql" if kind == "mariadb" else kind
    upgrade(database_url)
    _store_events(database_url, event_factory)
    role = f"vp_{uuid.uuid4().hex[:12]}"
    # PostgreSQL's example creates a database of its own; MySQL's grants on the tables there.
    database = f"{role}_db" if kind == "postgresql" else str(make_url(database_url).database)
    results: dict[str, list[tuple[Any, ...]]] = {}
    with _autocommit(database_url) as connection:
        try:
            for example in (e for e in EXAMPLES if kind in e.kinds):
                sql = _as_written_for(example.sql, kind, role, database)
                answer = connection.execute(text(sql))  # text(): a `%` is not a placeholder
                if answer.returns_rows:
                    results[example.topic] = [tuple(row) for row in answer]
        finally:
            _drop(connection, kind, role, database)

    failed = results["Failed tasks of the last day"]
    assert failed == [("ProcedureStateChanged", "failed-now", 10008, "source not found")]
    history = results["What happened to a file, in order"]
    assert [row[2] for row in history] == ["FINISH", "PROCESSING"]
    per_type = results["Events per type and how often VOD delivered them more than once"]
    assert [tuple(row[:2]) for row in per_type] == [("ProcedureStateChanged", 4)]


def test_the_readme_grants_are_enough_for_a_daemon_that_does_not_migrate(
    database_url: str, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    kind = make_url(database_url).get_backend_name()
    if kind == "sqlite":
        pytest.skip("SQLite has no users to grant to")
    kind = "mysql" if kind == "mariadb" else kind
    upgrade(database_url)  # `vodpoller migrate` by a user that may
    role = f"vp_{uuid.uuid4().hex[:12]}"
    database = f"{role}_db" if kind == "postgresql" else str(make_url(database_url).database)
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    admin.generate(20)
    # One entry vodpoller cannot parse (nested deeper than any database's JSON takes): it is
    # kept in vod_rejects, and confirmed.
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    admin.enqueue([{"EventType": "NewFileUpload", "FileUploadEvent": {"Deep": deep}}])
    as_role = make_url(database_url).set(username=role, password="...")  # the README's password
    config = emulator_config(
        tmp_path / "config.toml", emulator, as_role.render_as_string(hide_password=False)
    )
    # The user as the README creates it, then only the grants for a daemon that does not
    # migrate (not the first block's, which would let it change the schema).
    ours = [e for e in EXAMPLES if kind in e.kinds]
    creates = [e for e in ours if re.match(r"CREATE (ROLE|USER)", e.sql)]
    restricted = next(e.block for e in EXAMPLES if "alembic_version" in e.sql)
    grants = [e for e in ours if e.block == restricted]
    assert len(creates) == 1
    assert grants
    with _autocommit(database_url) as connection:
        try:
            for example in creates + grants:
                connection.execute(text(_as_written_for(example.sql, kind, role, database)))
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "vodpoller",
                    "once",
                    "--no-migrate",
                    "--config",
                    str(config),
                ],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            _drop(connection, kind, role, database)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pulled=21 stored=20 duplicates=0 confirmed=21"), done.stdout


def _drop(connection: Connection, kind: str, role: str, database: str) -> None:
    if kind == "postgresql":
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}"')
        exists = text("SELECT 1 FROM pg_roles WHERE rolname = :role").bindparams(role=role)
        if connection.execute(exists).first():
            connection.exec_driver_sql(f'DROP OWNED BY "{role}"')  # its grants in this database
            connection.exec_driver_sql(f'DROP ROLE "{role}"')
    elif kind == "mysql":
        connection.exec_driver_sql(f"DROP USER IF EXISTS '{role}'@'%%'")  # %% for pyformat
