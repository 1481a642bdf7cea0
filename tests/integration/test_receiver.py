"""The receiver over real HTTP, fed by the emulator's normal callback (`/_emulator/push`) and
by hand-made requests, storing into real SQLite, PostgreSQL and MariaDB databases: an event
pushed and pulled is one row; what is refused stores nothing; a failed commit answers 503
and VOD's retry stores the event once."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from structlog.testing import capture_logs

from tests.daemon_process import wait_until
from tests.helpers import settings_for
from vodpoller import app
from vodpoller.config import ReceiverSettings
from vodpoller.daemons import DaemonRegistry
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import Emulator
from vodpoller.events import parse_entry
from vodpoller.metrics import CALLBACK_OUTCOMES, PrometheusMetrics
from vodpoller.migrate import upgrade
from vodpoller.receiver import Receiver
from vodpoller.schema import vod_rejects
from vodpoller.store import Answer, EventStore

TOKEN = "s3cr3t-t0ken-0123456789abcdef"
PATH = f"/vod/callback/{TOKEN}"
APP = 1500000001


@dataclass
class Running:
    receiver: Receiver
    metrics: PrometheusMetrics
    store: EventStore

    @property
    def url(self) -> str:
        return f"{self.receiver.url}{PATH}"

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "vodpoller_callbacks_received_total", {"outcome": outcome}
        )
        return value or 0.0

    def rows(self) -> list[dict[str, Any]]:
        return self.store.rows()

    def kept(self) -> tuple[list[dict[str, Any]], list[Any]]:
        """Every row of vod_events and of vod_rejects."""
        return self.rows(), self.rejects()

    def rejects(self) -> list[Any]:
        with self.store.engine.connect() as connection:
            return list(connection.execute(select(vod_rejects)))


def start(store: EventStore, max_body_bytes: int = 1_048_576) -> Running:
    metrics = PrometheusMetrics([None], receiving=True)
    settings = ReceiverSettings(listen="127.0.0.1:0", path=PATH, max_body_bytes=max_body_bytes)
    return Running(Receiver(store, settings, metrics).start(), metrics, store)


@pytest.fixture
def running(migrated_store: EventStore) -> Iterator[Running]:
    """A receiver on each kind of database."""
    started = start(migrated_store)
    yield started
    started.receiver.close()


@pytest.fixture
def on_sqlite(tmp_path: Path) -> Iterator[Running]:
    """A receiver on a SQLite file, for what does not depend on the database."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    store = EventStore.connect(url)
    started = start(store, max_body_bytes=4096)
    yield started
    started.receiver.close()
    store.dispose()


def upload(file_id: str) -> dict[str, Any]:
    return {"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id}}


def cast(status: str) -> dict[str, Any]:
    return {
        "EventType": "MediaCastStatusChanged",
        "MediaCastStatusChangedEvent": {"CastId": "cast-1", "Status": status},
    }


def pull_all(emulator: Emulator, database_url: str, *sub_app_ids: int) -> None:
    """What a `vodpoller once` does: drain, store, confirm."""
    app.run_once(settings_for(emulator, database_url, sub_app_ids=sub_app_ids))


def exchange(receiver: Receiver, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Raw bytes to the receiver; its status, headers and body (it closes the connection)."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=20) as sock:
        sock.sendall(request)
        pieces = []
        while data := sock.recv(65536):
            pieces.append(data)
    head, _, body = b"".join(pieces).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def post(receiver: Receiver, body: bytes, path: str = PATH, method: str = "POST") -> int:
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: vod\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return exchange(receiver, request)[0]


# -- one row per event -----------------------------------------------------------------------


def test_an_event_pushed_then_pulled_is_one_confirmed_row(
    running: Running, admin: EmulatorAdmin, emulator: Emulator, database_url: str
) -> None:
    entry = upload("1")
    admin.enqueue([entry])
    assert admin.push(running.url, events=[entry])["Pushed"] == 1
    (pushed,) = running.rows()
    assert (pushed["deliveries"], pushed["pushed_deliveries"]) == (1, 1)
    assert (pushed["held_by"], pushed["confirmed_at"], pushed["event_handle"]) == (None, None, "")

    pull_all(emulator, database_url)

    (row,) = running.rows()
    assert row["id"] == pushed["id"]
    assert (row["deliveries"], row["pushed_deliveries"], row["held_by"]) == (2, 1, None)
    assert row["confirmed_at"] is not None
    assert admin.stats()["Confirmed"] == 1
    assert (running.count("stored"), running.count("duplicate")) == (1, 0)


def test_an_event_pulled_then_pushed_is_one_row_that_stays_confirmed(
    running: Running, admin: EmulatorAdmin, emulator: Emulator, database_url: str
) -> None:
    entry = upload("1")
    admin.enqueue([entry])
    pull_all(emulator, database_url)
    (pulled,) = running.rows()

    assert admin.push(running.url, events=[entry])["Pushed"] == 1

    (row,) = running.rows()
    assert (row["id"], row["deliveries"], row["pushed_deliveries"]) == (pulled["id"], 2, 1)
    assert row["confirmed_at"] == pulled["confirmed_at"] is not None
    assert row["event_handle"] == pulled["event_handle"] != ""
    assert row["delivered_at"] > pulled["delivered_at"]
    assert (running.count("stored"), running.count("duplicate")) == (0, 1)


def test_a_cast_pushed_working_stopped_working_is_three_rows(running: Running) -> None:
    for status in ["Working", "Stopped", "Working"]:
        assert post(running.receiver, json.dumps(cast(status)).encode()) == 200

    rows = running.rows()
    assert [r["status"] for r in rows] == ["Working", "Stopped", "Working"]
    assert [r["occurrence"] for r in rows] == [0, 0, 1]
    assert [(r["deliveries"], r["pushed_deliveries"]) for r in rows] == [(1, 1)] * 3
    assert running.count("stored") == 3


def test_pulled_copies_of_pushed_twins_land_in_one_row_each(
    running: Running, admin: EmulatorAdmin, emulator: Emulator, database_url: str
) -> None:
    entries = [cast("Working"), cast("Stopped"), cast("Working")]
    admin.enqueue(entries)
    assert admin.push(running.url, events=entries)["Pushed"] == 3

    pull_all(emulator, database_url)

    rows = running.rows()
    assert [r["status"] for r in rows] == ["Working", "Stopped", "Working"]
    assert [(r["deliveries"], r["pushed_deliveries"]) for r in rows] == [(2, 1)] * 3
    assert all(r["confirmed_at"] is not None for r in rows)


def test_a_push_to_the_path_of_an_application_is_that_applications_event(
    running: Running, admin: EmulatorAdmin, emulator: Emulator, database_url: str
) -> None:
    entry = upload("1")
    admin.enqueue([entry], sub_app_id=APP)
    assert admin.push(f"{running.url}/{APP}", events=[entry])["Pushed"] == 1
    (pushed,) = running.rows()
    assert pushed["sub_app_id"] == APP

    pull_all(emulator, database_url, APP)

    (row,) = running.rows()
    assert (row["sub_app_id"], row["deliveries"], row["pushed_deliveries"]) == (APP, 2, 1)
    assert row["confirmed_at"] is not None


def test_the_same_entry_pushed_for_two_applications_is_two_events(running: Running) -> None:
    body = json.dumps(upload("1")).encode()
    assert post(running.receiver, body) == 200
    assert post(running.receiver, body, f"{PATH}/{APP}") == 200

    assert [(r["sub_app_id"], r["occurrence"]) for r in running.rows()] == [(None, 0), (APP, 0)]


def test_an_event_handle_in_a_pushed_body_is_ignored(running: Running) -> None:
    body = json.dumps({**upload("1"), "EventHandle": "from-elsewhere"}).encode()
    assert post(running.receiver, body) == 200

    (row,) = running.rows()
    assert (row["event_handle"], row["held_by"], row["pushed_deliveries"]) == ("", None, 1)
    assert row["content_key"] == parse_entry(upload("1"), None).content_key


def test_a_push_and_a_pull_racing_on_two_daemons_make_one_row_each(
    running: Running, database_url: str
) -> None:
    other = EventStore.connect(database_url)
    registry = DaemonRegistry(other.engine, command="test")
    registry.register()
    entries = [upload(str(n)) for n in range(20)]
    try:
        for entry in entries:
            gate = threading.Barrier(2)
            statuses: list[int] = []

            def push(
                body: bytes = json.dumps(entry).encode(),
                gate: threading.Barrier = gate,
                statuses: list[int] = statuses,
            ) -> None:
                gate.wait()
                statuses.append(post(running.receiver, body))

            thread = threading.Thread(target=push)
            thread.start()
            gate.wait()
            event = parse_entry({**entry, "EventHandle": "h"}, None)
            saved = other.save_answers(
                [Answer([event], datetime.now(UTC))], holder=registry.daemon_id
            )
            other.settle(saved[0].ids, holder=registry.daemon_id)
            thread.join()
            assert statuses == [200]
    finally:
        registry.unregister()
        other.dispose()

    rows = running.rows()
    assert len(rows) == len(entries)
    assert {(r["deliveries"], r["pushed_deliveries"]) for r in rows} == {(2, 1)}
    assert all(r["confirmed_at"] is not None for r in rows)


def test_two_pushes_racing_onto_a_pulled_row_are_one_absorbed_and_one_new_event(
    running: Running, database_url: str
) -> None:
    # Two identical pushes are two events (Working, Stopped, Working): whichever commits
    # second finds the row taken by the first push and makes a row of its own.
    entries = [upload(str(n)) for n in range(20)]
    running.store.save_answers(
        [Answer([parse_entry({**e, "EventHandle": "h"}, None) for e in entries], datetime.now(UTC))]
    )
    for entry in entries:
        gate = threading.Barrier(2)
        statuses: list[int] = []

        def push(
            body: bytes = json.dumps(entry).encode(),
            gate: threading.Barrier = gate,
            statuses: list[int] = statuses,
        ) -> None:
            gate.wait()
            statuses.append(post(running.receiver, body))

        threads = [threading.Thread(target=push) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200, 200]

    rows = running.rows()
    by_content: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        by_content.setdefault(row["content_key"], []).append(
            (row["deliveries"], row["pushed_deliveries"])
        )
    assert len(by_content) == len(entries)
    assert all(sorted(pair) == [(1, 1), (2, 1)] for pair in by_content.values())


# -- failures --------------------------------------------------------------------------------


def test_a_failed_commit_answers_503_and_the_retry_stores_the_event_once(
    running: Running, admin: EmulatorAdmin, migrated_store: EventStore
) -> None:
    engine = migrated_store.engine
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE vod_events RENAME TO vod_events_away"))
    outcome: list[dict[str, Any]] = []
    pushing = threading.Thread(
        target=lambda: outcome.append(admin.push(running.url, events=[upload("1")], retries=10))
    )
    with capture_logs() as logs:
        pushing.start()
        try:
            wait_until(lambda: running.count("failed") >= 1, 20, "a push answered 503")
        finally:
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE vod_events_away RENAME TO vod_events"))
        pushing.join()

    (result,) = outcome[0]["Results"]
    assert result["Status"] == 200
    assert result["Attempts"] >= 2
    (row,) = running.rows()
    assert (row["deliveries"], row["pushed_deliveries"]) == (1, 1)
    assert running.count("stored") == 1
    assert (running.metrics.registry.get_sample_value("vodpoller_storage_errors_total") or 0) >= 1
    failures = [line for line in logs if line["event"].startswith("pushed events cannot")]
    assert len(failures) == 1  # one line per streak, not per retry
    assert [line["event"] for line in logs].count("pushed events are stored again") == 1


def test_a_body_that_is_an_object_but_no_event_is_quarantined_and_answered_200(
    running: Running,
) -> None:
    body = b'{"EventType": "NewFileUpload", "Deep": ' + b"[" * 40 + b"]" * 40 + b"}"
    assert post(running.receiver, body) == 200

    assert running.rows() == []
    (reject,) = running.rejects()
    assert reject.raw == body.decode()
    assert reject.reason == "nested more than 30 levels deep"
    assert (reject.event_handle, reject.sub_app_id) == (None, None)
    assert running.count("rejected") == 1


# -- refused requests (the database does not matter here) -------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/vod/callback/wrong-token-0123456789abcdef",
        PATH[:-1],
        PATH + "x",
        f"{PATH}/0",
        f"{PATH}/{2**63}",
        f"{PATH}/-1",
        f"{PATH}/{APP}/1",
        f"{PATH}/01500000001",
        "/",
    ],
)
def test_a_wrong_path_gets_403_and_stores_nothing(on_sqlite: Running, path: str) -> None:
    with capture_logs() as logs:
        status = post(on_sqlite.receiver, json.dumps(upload("1")).encode(), path)

    assert status == 403
    assert on_sqlite.kept() == ([], [])
    assert on_sqlite.count("refused_token") == 1
    (line,) = logs
    assert (line["event"], line["status"]) == ("callback refused", 403)
    assert TOKEN not in repr(logs)


@pytest.mark.parametrize("path", [PATH, f"{PATH}/", f"{PATH}?sign=1", f"{PATH}/{2**63 - 1}"])
def test_the_path_its_slash_query_and_largest_application_are_accepted(
    on_sqlite: Running, path: str
) -> None:
    assert post(on_sqlite.receiver, json.dumps(upload("1")).encode(), path) == 200
    assert len(on_sqlite.rows()) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_the_path_get_405(on_sqlite: Running, method: str) -> None:
    request = f"{method} {PATH} HTTP/1.1\r\nHost: vod\r\nContent-Length: 0\r\n\r\n".encode()
    status, headers, _ = exchange(on_sqlite.receiver, request)

    assert (status, headers["allow"]) == (405, "POST")
    assert on_sqlite.count("refused_method") == 1


def test_a_get_on_a_wrong_path_gets_403(on_sqlite: Running) -> None:
    status, _, _ = exchange(on_sqlite.receiver, b"GET /metrics HTTP/1.1\r\nHost: vod\r\n\r\n")
    assert status == 403


def test_a_body_over_the_limit_gets_413_before_it_is_sent(on_sqlite: Running) -> None:
    # Only the head is sent: the answer comes without waiting for 5 MB that never come.
    request = f"POST {PATH} HTTP/1.1\r\nHost: vod\r\nContent-Length: 5000000\r\n\r\n".encode()
    status, _, body = exchange(on_sqlite.receiver, request)

    assert status == 413
    assert "max_body_bytes" in json.loads(body)["error"]
    assert on_sqlite.kept() == ([], [])
    assert on_sqlite.count("refused_size") == 1


def test_a_chunked_body_over_the_limit_gets_413(on_sqlite: Running) -> None:
    chunk = b"x" * 3000
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: vod\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"%x\r\n%s\r\n" % (len(chunk), chunk)
        + b"%x\r\n%s\r\n" % (len(chunk), chunk)  # 6000 bytes in all: over 4096
    )
    assert exchange(on_sqlite.receiver, request)[0] == 413
    assert on_sqlite.rows() == []


def test_a_chunked_body_within_the_limit_is_stored(on_sqlite: Running) -> None:
    body = json.dumps(upload("1")).encode()
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: vod\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"%x\r\n%s\r\n" % (10, body[:10])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 10, body[10:])
    )
    assert exchange(on_sqlite.receiver, request)[0] == 200
    (row,) = on_sqlite.rows()
    assert row["file_id"] == "1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "the body is not JSON"),
        (b'[{"EventType": "NewFileUpload"}]', "the body is a list, not a JSON object"),
        (b'"NewFileUpload"', "the body is a string, not a JSON object"),
        (b'{"EventType": "NewFileUpload"', "the body ends inside a value (truncated?)"),
        (b'{"EventType": "\xff"}', "the body is not UTF-8 (byte 15)"),
        (b"", "an empty body"),
    ],
    ids=["not-json", "list", "string", "truncated", "not-utf8", "empty"],
)
def test_a_body_that_is_not_a_json_object_gets_400_and_is_kept_nowhere(
    on_sqlite: Running, body: bytes, reason: str
) -> None:
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: vod\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    with capture_logs() as logs:
        status, _, answer = exchange(on_sqlite.receiver, request)

    assert (status, json.loads(answer)) == (400, {"error": reason})
    assert on_sqlite.kept() == ([], [])
    assert on_sqlite.count("refused_body") == 1
    (line,) = logs
    assert (line["event"], line["status"], line["reason"]) == ("callback refused", 400, reason)
    assert len(line["body_prefix"]) <= 40


def test_a_long_refused_body_is_logged_by_its_first_characters_only(on_sqlite: Running) -> None:
    with capture_logs() as logs:
        assert post(on_sqlite.receiver, b"x" * 3000) == 400
    (line,) = logs
    assert line["body_prefix"] == "x" * 39 + "…"


def test_every_outcome_is_a_series_from_the_start() -> None:
    metrics = PrometheusMetrics([None], receiving=True)
    for outcome in CALLBACK_OUTCOMES:
        value = metrics.registry.get_sample_value(
            "vodpoller_callbacks_received_total", {"outcome": outcome}
        )
        assert value == 0


def test_the_listening_line_shows_no_token(on_sqlite: Running) -> None:
    with capture_logs() as logs:
        started = start(on_sqlite.store)
        started.receiver.close()
    (line,) = [line for line in logs if line["event"] == "receiver listening"]
    assert line["url"] == f"{started.receiver.url}/vod/callback/<token>"
