"""The forwarder on SQLite, PostgreSQL and MariaDB, POSTing to a real HTTP handler: what it
sends, when it tries again, what it leaves out, how it hands over between daemons, and what
it logs and counts."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from structlog.testing import capture_logs

from tests.callback_handler import CallbackHandler, Received, Reply
from tests.daemon_process import wait_until
from tests.databases import EventFactory
from tests.integration.test_metrics import Answer
from vodpoller import app, rawjson
from vodpoller.config import Settings
from vodpoller.events import Event
from vodpoller.forwarder import Forwarder
from vodpoller.forwardsend import HandlerClient
from vodpoller.metrics import PrometheusMetrics
from vodpoller.schema import vod_events
from vodpoller.store import EventStore

_c = vod_events.c
PENDING = ("vodpoller_forward_pending", ())


def make_forwarder(
    store: EventStore, url: str, metrics: PrometheusMetrics | None = None, **forward: Any
) -> Forwarder:
    values = {"url": url, "retry_seconds": 0.05, "max_retry_seconds": 0.2, **forward}
    forwarder = app.make_forwarder(
        Settings.model_validate({"forward": values}), store.engine, metrics=metrics
    )
    assert forwarder is not None
    forwarder.waiting_report_seconds = 0.2  # the gauges at once, not every 15 s
    return forwarder


@pytest.fixture
def forwarders() -> Iterator[Callable[[Forwarder], Forwarder]]:
    """Start forwarders; every one still running is stopped after the test."""
    started: list[Forwarder] = []

    def start(forwarder: Forwarder) -> Forwarder:
        started.append(forwarder.start())
        return forwarder

    yield start
    for forwarder in started:
        forwarder.stop()


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`(sample name, sorted labels)` -> value, as a scraper reads them."""
    return Answer(200, {}, metrics.render()[0]).samples()


def rows(store: EventStore) -> dict[str, dict[str, Any]]:
    """Every row's forwarding columns by dedup key."""
    statement = select(
        _c.dedup_key,
        _c.event_type,
        _c.forwarded_at,
        _c.forward_attempts,
        _c.forward_claim,
        _c.forward_after,
    )
    with store.engine.connect() as connection:
        return {row.dedup_key: dict(row._mapping) for row in connection.execute(statement)}


def all_forwarded(store: EventStore) -> Callable[[], bool]:
    return lambda: all(row["forwarded_at"] is not None for row in rows(store).values())


def stored(store: EventStore, events: list[Event], **options: Any) -> list[str]:
    """Store distinct events; their dedup keys, in order."""
    with store.engine.connect() as connection:
        before = connection.scalar(select(func.max(_c.id))) or 0
    assert store.save(events, **options).stored == len(events)
    with store.engine.connect() as connection:
        return list(connection.scalars(select(_c.dedup_key).where(_c.id > before).order_by(_c.id)))


def test_each_event_reaches_the_handler_as_its_normal_callback_with_its_key(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    # A number no float holds, and a key VOD may add later: both sent as they came.
    events = [
        event_factory(FileId="5285890784246869930", Big=123456789012345678901234567890),
        event_factory("NewFileUpload"),
        event_factory("SomeFutureType"),
    ]
    keys = stored(migrated_store, events)
    with CallbackHandler() as handler:
        forwarders(make_forwarder(migrated_store, handler.url))
        wait_until(all_forwarded(migrated_store), 20, "every row forwarded")

    assert sorted(handler.delivered()) == sorted(keys)
    by_key = {received.key: received for received in handler.received}
    for event, key in zip(events, keys, strict=True):
        received = by_key[key]
        expected = {k: v for k, v in event.payload.items() if k != "EventHandle"}
        assert rawjson.loads(rawjson.dumps(received.body)) == rawjson.loads(rawjson.dumps(expected))
        assert "EventHandle" not in received.body
        assert received.headers["Content-Type"] == "application/json"
        assert received.path == "/vod/callback"
    big = by_key[keys[0]].body["ProcedureStateChangeEvent"]["Big"]
    assert big == 123456789012345678901234567890
    for row in rows(migrated_store).values():
        assert row["forwarded_at"] is not None
        assert row["forward_attempts"] == 0
        assert row["forward_claim"] is None


def test_failed_posts_are_tried_again_with_backoff_until_the_handler_answers_2xx(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    keys = stored(migrated_store, event_factory.batch(5))
    tries: Counter[str] = Counter()

    def two_failures(received: Received) -> Reply:
        assert received.key is not None
        tries[received.key] += 1
        return Reply(500) if tries[received.key] <= 2 else Reply(204)

    metrics = PrometheusMetrics([None], forwarding=True)
    with CallbackHandler(two_failures) as handler:
        forwarder = forwarders(make_forwarder(migrated_store, handler.url, metrics))
        wait_until(all_forwarded(migrated_store), 20, "every row forwarded")
        # The gauges follow within a round.
        wait_until(lambda: samples(metrics)[PENDING] == 0, 10, "nothing pending")
        forwarder.stop()

    assert tries == dict.fromkeys(keys, 3)
    assert {row["forward_attempts"] for row in rows(migrated_store).values()} == {2}
    scraped = samples(metrics)
    assert scraped[("vodpoller_forwarded_total", ())] == 5
    assert scraped[("vodpoller_forward_failures_total", (("reason", "5xx"),))] == 10
    assert scraped[("vodpoller_forward_failures_total", (("reason", "timeout"),))] == 0
    assert scraped[("vodpoller_forward_lag_seconds", ())] == 0


def test_a_failed_event_waits_out_its_pause_before_its_next_try(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    (key,) = stored(migrated_store, [event_factory()])
    with CallbackHandler(lambda _: Reply(500)) as handler:
        forwarder = make_forwarder(
            migrated_store, handler.url, retry_seconds=60.0, max_retry_seconds=300.0
        )
        forwarders(forwarder)
        wait_until(lambda: rows(migrated_store)[key]["forward_attempts"] == 1, 20, "a failure")
        failed_at = datetime.now(UTC)
        time.sleep(2.5)  # two idle rounds and more
        assert handler.keys() == [key]

    row = rows(migrated_store)[key]
    assert row["forwarded_at"] is None
    assert row["forward_claim"] is None
    assert row["forward_after"] is not None
    wait = (row["forward_after"] - failed_at).total_seconds()
    assert 55 < wait <= 60


def test_a_redirect_is_a_failure_and_is_not_followed(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    (key,) = stored(migrated_store, [event_factory()])

    def redirect_once(_: Received) -> Reply:
        return Reply(302, location="/elsewhere") if not handler.received else Reply(200)

    with CallbackHandler(redirect_once) as handler:
        forwarders(make_forwarder(migrated_store, handler.url))
        wait_until(all_forwarded(migrated_store), 20, "the row forwarded")

    assert [r.reply.status for r in handler.received] == [302, 200]
    assert {r.path for r in handler.received} == {"/vod/callback"}
    assert rows(migrated_store)[key]["forward_attempts"] == 1


def test_a_handler_slower_than_the_timeout_counts_as_a_failure_and_is_tried_again(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    (key,) = stored(migrated_store, [event_factory()])
    metrics = PrometheusMetrics([None], forwarding=True)

    def slow_once(received: Received) -> Reply:
        return Reply(200, sleep=1.5) if len(handler.received) == 0 else Reply(200)

    with CallbackHandler(slow_once) as handler:
        forwarder = forwarders(
            make_forwarder(migrated_store, handler.url, metrics, timeout_seconds=0.3)
        )
        wait_until(all_forwarded(migrated_store), 20, "the row forwarded")
        forwarder.stop()

    assert handler.keys() == [key, key]
    assert rows(migrated_store)[key]["forward_attempts"] == 1
    scraped = samples(metrics)
    assert scraped[("vodpoller_forward_failures_total", (("reason", "timeout"),))] == 1
    assert scraped[("vodpoller_forwarded_total", ())] == 1


def test_only_the_configured_event_types_received_since_the_given_moment_are_forwarded(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    # History: long before `since` (below the id bound found at start), and shortly before.
    old = [
        *stored(migrated_store, [event_factory("NewFileUpload")], received_at=since - timedelta(3)),
        *stored(migrated_store, [event_factory("NewFileUpload")], received_at=since - timedelta(2)),
        *stored(migrated_store, [event_factory("FileDeleted")], received_at=since - timedelta(0.5)),
    ]
    wanted = stored(migrated_store, [event_factory("NewFileUpload"), event_factory("FileDeleted")])
    other = stored(migrated_store, [event_factory("ProcedureStateChanged")])
    metrics = PrometheusMetrics([None], forwarding=True)
    with CallbackHandler() as handler:
        forwarders(
            make_forwarder(
                migrated_store,
                handler.url,
                metrics,
                event_types=["NewFileUpload", "FileDeleted"],
                since=since.isoformat(),
            )
        )
        wait_until(
            lambda: all(rows(migrated_store)[k]["forwarded_at"] for k in wanted), 20, "forwarded"
        )
        wait_until(
            lambda: samples(metrics).get(PENDING) == 0,
            10,
            "nothing pending",
        )

    assert sorted(handler.keys()) == sorted(wanted)
    table = rows(migrated_store)
    assert [table[key]["forwarded_at"] for key in old + other] == [None] * 4


def test_a_row_waits_for_its_confirm_before_it_is_forwarded(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    (key,) = stored(migrated_store, [event_factory()], holder="daemon-1")
    with CallbackHandler() as handler:
        forwarder = forwarders(make_forwarder(migrated_store, handler.url))
        time.sleep(2.5)  # two idle rounds and more: the held row is not sent
        assert handler.keys() == []
        with migrated_store.engine.connect() as connection:
            row_id = connection.execute(select(_c.id).where(_c.dedup_key == key)).scalar_one()
        migrated_store.settle([row_id], holder="daemon-1")
        forwarder.wake()
        wait_until(all_forwarded(migrated_store), 20, "the row forwarded once confirmed")

    assert handler.keys() == [key]


def test_a_stop_gives_back_unsent_claims_and_keeps_the_outcome_of_the_request_in_flight(
    migrated_store: EventStore,
    event_factory: EventFactory,
) -> None:
    keys = stored(migrated_store, event_factory.batch(4))
    with CallbackHandler(lambda _: Reply(200, sleep=1.0)) as handler:
        forwarder = make_forwarder(migrated_store, handler.url, max_in_flight=1).start()
        wait_until(lambda: len(handler.received) == 1, 10, "the first POST")
        forwarder.stop()

    table = rows(migrated_store)
    assert handler.keys() == [keys[0]]
    assert table[keys[0]]["forwarded_at"] is not None
    # The second was claimed, waiting for the one in flight; the rest never were.
    for key in keys[1:]:
        assert table[key]["forwarded_at"] is None
        assert table[key]["forward_claim"] is None
        assert table[key]["forward_after"] is None
        assert table[key]["forward_attempts"] == 0


def test_a_restart_sends_nothing_twice_and_takes_over_the_claims_a_dead_daemon_left(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    first = stored(migrated_store, event_factory.batch(10))
    with CallbackHandler() as handler:
        forwarder = forwarders(make_forwarder(migrated_store, handler.url))
        wait_until(all_forwarded(migrated_store), 20, "the first rows forwarded")
        forwarder.stop()
        later = stored(migrated_store, event_factory.batch(6))
        # A daemon died while sending two of them; its claim on one still runs.
        now = datetime.now(UTC)
        with migrated_store.engine.begin() as connection:
            for key, until in (
                (later[0], now - timedelta(seconds=1)),
                (later[1], now + timedelta(hours=1)),
            ):
                connection.execute(
                    update(vod_events)
                    .where(_c.dedup_key == key)
                    .values(forward_claim="dead-daemon-claim", forward_after=until)
                )
        forwarders(make_forwarder(migrated_store, handler.url))
        wait_until(
            lambda: (
                sum(row["forwarded_at"] is not None for row in rows(migrated_store).values()) == 15
            ),
            20,
            "the later rows forwarded",
        )

    assert sorted(handler.keys()) == sorted(first + later[:1] + later[2:])
    assert Counter(handler.keys()).most_common(1)[0][1] == 1
    assert rows(migrated_store)[later[1]]["forwarded_at"] is None


def test_two_forwarders_on_one_database_never_send_one_row_at_once_and_forward_everything(
    migrated_store: EventStore,
    event_factory: EventFactory,
    database_url: str,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    keys = stored(migrated_store, event_factory.batch(300))
    chance = random.Random(12)
    lock = threading.Lock()

    def flaky(_: Received) -> Reply:
        with lock:
            failing = chance.random() < 0.2
        return Reply(500 if failing else 200, sleep=0.005)

    other = EventStore.connect(database_url)  # a second daemon: its own engine
    counted = [PrometheusMetrics([None], forwarding=True) for _ in range(2)]
    try:
        with CallbackHandler(flaky) as handler:
            both = [
                forwarders(make_forwarder(store, handler.url, metrics, max_in_flight=4))
                for store, metrics in zip((migrated_store, other), counted, strict=True)
            ]
            wait_until(all_forwarded(migrated_store), 60, "every row forwarded")
            for forwarder in both:
                forwarder.stop()
    finally:
        other.dispose()

    assert set(handler.delivered()) == set(keys)
    assert max(handler.most_at_once.values()) == 1
    forwarded = [samples(metrics)[("vodpoller_forwarded_total", ())] for metrics in counted]
    assert sum(forwarded) == 300  # each row answered 2xx exactly once
    assert min(forwarded) > 0  # both took part


def test_a_failure_streak_is_logged_when_it_begins_and_once_when_it_ends(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    stored(migrated_store, event_factory.batch(3))

    def eight_failures(_: Received) -> Reply:
        return Reply(503) if len(handler.received) < 8 else Reply(200)

    with capture_logs() as logs, CallbackHandler(eight_failures) as handler:
        forwarder = make_forwarder(migrated_store, handler.url, max_in_flight=1)
        forwarder.streak.quiet_seconds = 0.5
        forwarders(forwarder)
        wait_until(all_forwarded(migrated_store), 30, "every row forwarded")
        # Successes right after the failures do not end the streak; one after a quiet spell does.
        time.sleep(0.6)
        stored(migrated_store, event_factory.batch(1))
        wait_until(all_forwarded(migrated_store), 30, "the later row forwarded")
        forwarder.stop()

    failing = [line for line in logs if line["event"].startswith("forwarding failing")]
    recovered = [line for line in logs if line["event"] == "forwarding recovered"]
    assert len(failing) == 1
    assert failing[0]["reason"] == "5xx"
    assert failing[0]["status"] == 503
    assert failing[0]["url"] == handler.url.replace("/vod/callback", "/vod/…")
    assert len(recovered) == 1
    assert recovered[0]["failures"] == 8


def test_a_user_and_password_in_the_url_become_basic_authentication() -> None:
    with CallbackHandler() as handler:
        url = handler.url.replace("http://", "http://vod:s3cr%40t@")
        client = HandlerClient(url, 5.0)
        try:
            answer = client.post(b'{"EventType": "X"}', "the-key")
        finally:
            client.close()

    assert answer.delivered
    (received,) = handler.received
    assert received.headers["Authorization"] == "Basic " + base64.b64encode(b"vod:s3cr@t").decode()
    assert received.key == "the-key"
    assert client.safe_url == handler.url.replace("/vod/callback", "/vod/…")


def test_a_database_failure_is_logged_once_and_forwarding_resumes_after_it(
    migrated_store: EventStore,
    event_factory: EventFactory,
    forwarders: Callable[[Forwarder], Forwarder],
) -> None:
    # Held (not sendable) until the outage is over.
    (key,) = stored(migrated_store, [event_factory()], holder="daemon-1")
    with capture_logs() as logs, CallbackHandler() as handler:
        forwarders(make_forwarder(migrated_store, handler.url))
        with migrated_store.engine.begin() as connection:  # the table is gone for a while
            connection.execute(text("ALTER TABLE vod_events RENAME TO vod_events_away"))
        time.sleep(2.5)  # a few rounds fail
        with migrated_store.engine.begin() as connection:
            connection.execute(text("ALTER TABLE vod_events_away RENAME TO vod_events"))
            connection.execute(update(vod_events).values(held_by=None))
        wait_until(all_forwarded(migrated_store), 20, "the row forwarded")

    assert handler.keys() == [key]
    events = [line["event"] for line in logs]
    assert events.count("forwarding: database unavailable; trying again") == 1
    assert events.count("forwarding: database available again") == 1
