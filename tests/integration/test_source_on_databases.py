"""What the source accepts can be stored: the deepest entry it lets through, and numbers kept
as written, are JSON each database's JSON type takes (MariaDB stops at 31 levels)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from vodpoller import rawjson
from vodpoller.envelope import MAX_DEPTH, read_answer

CHECKS = {
    "sqlite": "SELECT json_valid(:document)",
    "postgresql": "SELECT CAST(:document AS jsonb) IS NOT NULL",
    "mysql": "SELECT JSON_VALID(:document)",
}


def deepest_entry() -> str:
    inner = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    return '{"EventHandle": "h", "D": ' + inner + ', "N": [1e400, -1e-400, 0.1000000000000000055]}'


def test_the_deepest_entry_let_through_is_json_every_database_takes(database_url: str) -> None:
    answer = read_answer(('{"Response": {"EventSet": [' + deepest_entry() + "]}}").encode())
    [delivery] = answer.event_set or ()
    assert delivery.problem is None
    assert delivery.entry is not None
    document = rawjson.dumps({"payload": delivery.entry})  # wrapped once, as a store might

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool)
    kind = engine.dialect.name
    try:
        with engine.connect() as connection:
            assert connection.execute(text(CHECKS[kind]), {"document": document}).scalar()
            assert connection.execute(text(CHECKS[kind]), {"document": delivery.text}).scalar()
    finally:
        engine.dispose()
