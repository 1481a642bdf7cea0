"""Entries that cannot be events go to `vod_rejects` in the same transaction as the good ones
of their batch, and their handles are confirmed: no poison entry stops a batch or comes back.
Numbers are kept as VOD wrote them. On each of the three databases."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy import text as text_

from vodpoller import migrate, rawjson
from vodpoller.database import writer
from vodpoller.envelope import Delivery, delivery_of, read_answer
from vodpoller.poller import Poller, Rates
from vodpoller.rawjson import RawNumber
from vodpoller.schema import vod_rejects
from vodpoller.source import Batch
from vodpoller.store import EventStore


class OneBatch:
    """A source that answers one batch, then nothing; records the confirms."""

    def __init__(self, deliveries: Sequence[Delivery]):
        self.batches = [Batch(None, tuple(deliveries))]
        self.confirmed: list[str] = []
        self.lock = threading.Lock()

    def pull(self, sub_app_id: int | None) -> Batch:
        with self.lock:
            return self.batches.pop(0) if self.batches else Batch(sub_app_id)

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        with self.lock:
            self.confirmed.extend(handles)


def entry(task: str, handle: str, **payload: Any) -> dict[str, Any]:
    return {
        "EventHandle": handle,
        "EventType": "PullComplete",
        "PullCompleteEvent": {"TaskId": task, **payload},
    }


def bad(text: str, handle: str | None, problem: str) -> Delivery:
    return Delivery(text=text, entry=None, handle=handle, problem=problem)


@pytest.fixture
def store(database_url: str) -> Iterator[EventStore]:
    migrate.upgrade(database_url)
    with EventStore.connect(database_url) as opened:
        yield opened


def drain(store: EventStore, deliveries: Sequence[Delivery]) -> tuple[Any, OneBatch]:
    source = OneBatch(deliveries)
    poller = Poller(source, store, concurrency=1, holder="me", rates=Rates.per_second(1e4))
    try:
        result = poller.drain(None)
    finally:
        poller.close()
    return result, source


def rejects(store: EventStore) -> list[dict[str, Any]]:
    with store.engine.connect() as connection:
        query = select(vod_rejects).order_by(vod_rejects.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def test_unparseable_entries_are_kept_raw_and_confirmed_beside_the_good_ones(
    store: EventStore,
) -> None:
    deep = "[" * 40 + "]" * 40
    deliveries = [
        delivery_of(entry("good-1", "h1")),
        bad('{"EventHandle":"h2","EventType":' + deep + "}", "h2", "nested deeper than 30"),
        bad("42", None, "an entry is a number, not an object"),
        delivery_of(entry("good-2", "h3")),
    ]

    result, source = drain(store, deliveries)

    assert (result.pulled, result.stored, result.rejected, result.confirmed) == (4, 2, 2, 3)
    assert sorted(source.confirmed) == ["h1", "h2", "h3"]
    assert [row["task_id"] for row in store.rows()] == ["good-1", "good-2"]
    kept = rejects(store)
    assert [(row["event_handle"], row["reason"]) for row in kept] == [
        ("h2", "nested deeper than 30"),
        (None, "an entry is a number, not an object"),
    ]
    assert kept[0]["raw"].endswith(deep + "}")
    assert all(row["received_at"] is not None for row in kept)


def test_a_reject_with_text_no_database_holds_is_kept_all_the_same(store: EventStore) -> None:
    nasty = '{"EventHandle":"h1","Note":"nul \x00 and half an emoji \ud83d"}'
    result, source = drain(store, [bad(nasty, "h1", "invalid")])

    assert (result.rejected, source.confirmed) == (1, ["h1"])
    (kept,) = rejects(store)
    assert kept["raw"] == '{"EventHandle":"h1","Note":"nul \ufffd and half an emoji \ufffd"}'


def test_numbers_beyond_a_float_are_stored_as_written(store: EventStore) -> None:
    huge = RawNumber("1e400")
    precise = RawNumber("12345678901234567890.123456789")
    result, _ = drain(store, [delivery_of(entry("t", "h1", Size=huge, Ratio=precise))])

    (row,) = store.rows()
    if result.stored == 1:
        payload = row["payload"]["PullCompleteEvent"]
        # PostgreSQL's jsonb keeps the value, written its own way (1 and 400 zeros).
        size, ratio = (getattr(v, "text", str(v)) for v in (payload["Size"], payload["Ratio"]))
        assert size in ("1e400", "1" + "0" * 400)
        assert ratio.startswith("12345678901234567890.123456789")
    with store.engine.connect() as connection:
        raw = connection.execute(text("SELECT payload FROM vod_events")).scalar_one()
    as_text = raw if isinstance(raw, str) else rawjson.dumps(raw)
    assert "Infinity" not in as_text  # always valid JSON


def _refuse_poison(store: EventStore) -> None:
    """A database rule that refuses one value, as a database refuses what it cannot hold."""
    dialect = store.engine.dialect.name
    with writer(store.engine).begin() as connection:
        if dialect == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON vod_events WHEN NEW.task_id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
            )
        else:
            connection.exec_driver_sql(
                "ALTER TABLE vod_events ADD CONSTRAINT poison CHECK (task_id <> 'poison')"
            )


def test_an_entry_the_database_refuses_is_kept_and_the_rest_of_its_batch_stored(
    store: EventStore,
) -> None:
    _refuse_poison(store)
    deliveries = [delivery_of(entry(task, f"h{n}")) for n, task in enumerate(["a", "poison", "b"])]

    result, source = drain(store, deliveries)

    assert (result.pulled, result.stored, result.rejected, result.confirmed) == (3, 2, 1, 3)
    assert sorted(source.confirmed) == ["h0", "h1", "h2"]
    assert [row["task_id"] for row in store.rows()] == ["a", "b"]
    (kept,) = rejects(store)
    assert kept["reason"].startswith("the database refused it:")
    assert json.loads(kept["raw"])["PullCompleteEvent"]["TaskId"] == "poison"
    assert all(row["confirmed_at"] is not None for row in store.rows())


def test_a_database_that_refuses_everything_confirms_nothing(store: EventStore) -> None:
    with contextlib.ExitStack():
        _refuse_poison(store)
    deliveries = [delivery_of(entry("poison", "h1"))]

    result, source = drain(store, deliveries)

    # A lone entry refused is kept in vod_rejects, and confirmed: it never comes back.
    assert (result.stored, result.rejected, source.confirmed) == (0, 1, ["h1"])


@pytest.mark.parametrize(
    ("text", "as_received"),
    [
        ('{"EventType":"PullComplete","EventHandle":"h1","PullCompleteEvent":{"Size":1.50}}', True),
        ('{"EventHandle":"h1","PullCompleteEvent":{"TaskId":"t\\u00e9"},"EventType":"X"}', True),
        ('{"EventHandle":"h1","EventType":"X","X":{"TaskId":"nul\\u0000"}}', False),
        ('{"EventHandle":"h1","EventType":"X","X":{"TaskId":"half \\ud83d"}}', False),
    ],
    ids=["number-as-written", "key-order-and-escapes", "escaped-nul", "escaped-half-emoji"],
)
def test_the_payload_is_the_entry_text_as_received_when_the_database_can_hold_it(
    store: EventStore, text: str, as_received: bool
) -> None:
    body = '{"Response":{"EventSet":[' + text + '],"RequestId":"r"}}'
    deliveries = read_answer(body.encode()).event_set or ()

    result, source = drain(store, deliveries)

    assert (result.stored, source.confirmed) == (1, ["h1"])
    if store.engine.dialect.name != "sqlite":
        return  # PostgreSQL's jsonb and MySQL's JSON keep values, not text
    with store.engine.connect() as connection:
        stored = connection.execute(text_("SELECT payload FROM vod_events")).scalar_one()
    assert (stored == text) is as_received
    assert "\\u0000" not in stored
