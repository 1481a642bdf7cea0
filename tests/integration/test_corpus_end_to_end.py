"""The bad-input corpus through the whole daemon: each malformed, broken, slow or hostile
answer of tests/integration/test_source_corpus.py served to a real poller (the SDK-signed
source, the store worker, the confirmer) over a raw HTTP stand-in, into a real SQLite file.
Whatever comes, the drain ends (or fails with a classified `SourceError`), good entries are
stored, bad ones kept in vod_rejects, and only handles of what was kept are confirmed."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_source_corpus import PULL_CASES, Batched, Case, source_for
from tests.standin import Play, Request, StandIn, Wire, answer
from vodpoller import migrate
from vodpoller import poller as poller_module
from vodpoller.errors import SourceError
from vodpoller.poller import Poller, Rates
from vodpoller.store import EventStore

pytestmark = pytest.mark.sqlite

CONFIRMED = {"Response": {"RequestId": "req-c"}}
EMPTY = {"Response": {"Error": {"Code": "ResourceNotFound", "Message": "none"}, "RequestId": "e"}}


def routed(first: Play) -> Play:
    """The case's answer to the first pull; then empty pulls, and every confirm taken."""
    pulls = [0]
    lock = threading.Lock()

    def play(wire: Wire, request: Request) -> bool:
        if request.action == "ConfirmEvents":
            return answer(CONFIRMED)(wire, request)
        with lock:
            pulls[0] += 1
            number = pulls[0]
        return first(wire, request) if number == 1 else answer(EMPTY)(wire, request)

    return play


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore.connect(f"sqlite:///{tmp_path / 'events.db'}") as opened:
        migrate.upgrade(opened.engine)
        yield opened


@pytest.fixture(autouse=True)
def _instant_pull_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "PULL_RETRY_FIRST_SECONDS", 0.0)


def kept(database: Path) -> tuple[list[str], list[str | None]]:
    with sqlite3.connect(database) as connection:
        events = [row[0] for row in connection.execute("SELECT event_handle FROM vod_events")]
        rejects = [row[0] for row in connection.execute("SELECT event_handle FROM vod_rejects")]
    return events, rejects


@pytest.mark.parametrize("case", PULL_CASES, ids=[case.name for case in PULL_CASES])
def test_every_bad_answer_ends_the_drain_cleanly_and_confirms_only_what_was_kept(
    case: Case, store: EventStore, tmp_path: Path
) -> None:
    with StandIn([routed(case.play)]) as stand_in:
        source = source_for(stand_in, case.seconds)
        poller = Poller(
            source, store, concurrency=1, holder="corpus", rates=Rates.per_second(1000.0)
        )
        try:
            outcome: object = poller.drain(None)
        except SourceError as failure:  # classified: anything else fails the test
            outcome = failure
        finally:
            poller.close()
            source.close()
        confirmed = [
            handle
            for request in stand_in.requests
            if request.action == "ConfirmEvents"
            for handle in request.json()["EventHandles"]
        ]

    events, rejects = kept(tmp_path / "events.db")
    stored_handles = set(events) | {handle for handle in rejects if handle is not None}
    assert set(confirmed) <= stored_handles, "a handle confirmed for something not kept"
    if isinstance(case.expect, Batched):
        assert not isinstance(outcome, SourceError), outcome
        handles = list(case.expect.handles)
        assert len(events) + len(rejects) == len(handles)
        assert len(rejects) == len(case.expect.problems)
        # Every entry that has a usable handle is confirmed, good or kept aside.
        assert sorted(confirmed) == sorted(handle for handle in handles if handle is not None)
    else:
        assert (events, rejects, confirmed) == ([], [], [])
