"""A real `vodpoller run` forwarding a 5,000-event drain from the emulator to a handler that
fails a fifth of its requests (500s, answers slower than the timeout, dropped connections) and
is restarted once, while the daemon itself is restarted once: every event arrives at least
once, and the keys the handler saw, deduplicated, are exactly the table's."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.acceptance.test_run_metrics import _free_port as free_port
from tests.callback_handler import CallbackHandler, Received, Reply
from tests.conftest import EmulatorFactory
from tests.daemon_process import VodpollerProcess, wait_until
from tests.helpers import emulator_config
from tests.integration.test_metrics import get
from vodpoller.database import make_engine
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.schema import vod_events

pytestmark = pytest.mark.slow

EVENTS = 5000
TIMEOUT_SECONDS = 0.3


@pytest.mark.timeout(600)
def test_every_event_of_a_drain_reaches_a_flaky_handler_across_restarts(
    emulator_factory: EmulatorFactory, database_url: str, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    admin.generate(EVENTS)
    chance = random.Random(20)
    lock = threading.Lock()

    def flaky(_: Received) -> Reply:
        with lock:
            draw = chance.random()
        if draw < 0.14:
            return Reply(500)
        if draw < 0.17:
            return Reply(200, sleep=TIMEOUT_SECONDS * 2)  # the answer comes too late
        if draw < 0.20:
            return Reply(drop=True)
        return Reply(200)

    handler = CallbackHandler(flaky).start()
    port = free_port()
    config = emulator_config(
        tmp_path / "config.toml",
        emulator,
        database_url,
        metrics={"listen": f"127.0.0.1:{port}"},
        forward={
            "url": handler.url,
            "timeout_seconds": TIMEOUT_SECONDS,
            "retry_seconds": 0.05,
            "max_retry_seconds": 0.5,
        },
    )
    engine = make_engine(database_url)
    c = vod_events.c

    def unique_delivered() -> int:
        return len(set(handler.delivered()))

    def forwarded() -> int:
        with engine.connect() as connection:
            counted = select(func.count()).where(c.forwarded_at.isnot(None))
            return int(connection.execute(counted).scalar_one())

    began = time.monotonic()
    try:
        with VodpollerProcess("run", config, tmp_path, name="first") as first:
            first.wait_for_line("forwarding")
            wait_until(lambda: unique_delivered() >= EVENTS // 4, 120, "a quarter forwarded")
            first.signal(signal.SIGTERM)
            assert first.wait(60) == 0, first.text()[-3000:]
        with VodpollerProcess("run", config, tmp_path, name="second") as second:
            wait_until(lambda: unique_delivered() >= EVENTS // 2, 120, "half forwarded")
            handler.stop()  # the application restarts: connections are refused meanwhile
            time.sleep(2)
            handler.start()
            wait_until(lambda: admin.stats()["Confirmed"] == EVENTS, 120, "every event confirmed")
            wait_until(lambda: forwarded() == EVENTS, 120, "every row forwarded")
            took = time.monotonic() - began

            def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                return get(f"http://127.0.0.1:{port}/metrics").samples()

            wait_until(
                lambda: scraped()[("vodpoller_forward_pending", ())] == 0, 30, "0 pending"
            )  # the gauge: every 15 s
            samples = scraped()
            second.signal(signal.SIGTERM)
            assert second.wait(60) == 0, second.text()[-3000:]
        with engine.connect() as connection:
            keys = set(connection.scalars(select(c.dedup_key)))
            attempts = int(connection.scalar(select(func.sum(c.forward_attempts))) or 0)
    finally:
        handler.stop()
        engine.dispose()

    delivered = handler.delivered()
    assert len(keys) == EVENTS
    assert set(delivered) == keys  # each at least once, nothing else
    replies = Counter(
        "drop" if r.reply.drop else "slow" if r.reply.sleep else r.reply.status
        for r in handler.received
    )
    assert replies[500] > 0
    assert replies["slow"] > 0
    assert replies["drop"] > 0
    assert attempts > 0
    # The second daemon's counts: it saw the handler's restart (connections refused).
    assert samples[("vodpoller_forwarded_total", ())] > 0
    assert samples[("vodpoller_forward_failures_total", (("reason", "connection"),))] > 0
    assert samples[("vodpoller_forward_failures_total", (("reason", "5xx"),))] > 0
    assert samples[("vodpoller_forward_lag_seconds", ())] == 0
    logs = first.lines() + second.lines()
    events = [line.get("event") for line in logs]
    # A handler failing a fifth of its requests is one streak per daemon, not a line per
    # failure: each daemon ran under a minute, so no reminder and no quiet spell to recover in.
    assert events.count("forwarding failing; retrying with backoff") == 2
    assert "forwarding recovered" not in events
    # Reported by `pytest -s`: how long it took and how many POSTs it needed.
    print(
        f"\n{EVENTS} events forwarded in {took:.1f} s: {len(handler.received)} POSTs, "
        f"{len(delivered) - EVENTS} repeats answered 2xx, {attempts} failed tries recorded, "
        f"replies {dict(replies)}"
    )
