"""The notify protocol over real AF_UNIX datagram sockets (a path and an abstract name), the
watchdog interval from the environment, and the progress gate with a fake clock."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.helpers import FakeClock
from tests.sdnotify import NotifySocket
from vodpoller.notify import (
    Notifier,
    Progress,
    Watchdog,
    status_text,
    watchdog_seconds,
)

APPS = (None, 1500000001)


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    with NotifySocket(tmp_path / "notify" if request.param == "path" else None) as listener:
        yield listener


@pytest.fixture
def notifier(manager: NotifySocket) -> Iterator[Notifier]:
    with Notifier.from_environment({"NOTIFY_SOCKET": manager.address}) as opened:
        yield opened


def test_each_message_arrives_as_one_datagram_of_key_value_lines(
    manager: NotifySocket, notifier: Notifier
) -> None:
    assert notifier.ready("drained 0 events, no poll yet")
    assert notifier.status("drained 5 events, last poll 1 s ago")
    assert notifier.watchdog()
    assert notifier.stopping()

    assert [manager.receive(), manager.receive(), manager.receive(), manager.receive()] == [
        {"READY": "1", "STATUS": "drained 0 events, no poll yet"},
        {"STATUS": "drained 5 events, last poll 1 s ago"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1"},
    ]


def test_reloading_carries_the_monotonic_clock_in_microseconds(
    manager: NotifySocket, notifier: Notifier
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    assert notifier.reloading()

    message = manager.receive()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert message is not None
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_ready_without_a_status_sends_ready_alone(
    manager: NotifySocket, notifier: Notifier
) -> None:
    notifier.ready()

    assert manager.receive() == {"READY": "1"}


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}])
def test_without_a_usable_socket_nothing_is_sent_and_nothing_fails(env: dict[str, str]) -> None:
    notifier = Notifier.from_environment(env)

    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()


def test_a_manager_that_went_away_is_logged_once_and_does_not_raise(tmp_path: Path) -> None:
    gone = NotifySocket(tmp_path / "notify")
    gone.close()
    (tmp_path / "notify").unlink()

    with capture_logs() as logs, Notifier(gone.address) as notifier:
        assert not notifier.status("one")
        assert not notifier.status("two")

    assert [entry["event"] for entry in logs] == ["cannot notify the service manager"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 60.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
    ],
)
def test_the_watchdog_interval_is_ours_only_when_the_pid_matches(
    env: dict[str, str], expected: float | None
) -> None:
    assert watchdog_seconds(env) == expected


def test_an_application_that_has_not_reported_lags_one_window_after_the_start() -> None:
    clock = FakeClock()
    progress = Progress(APPS, 30.0, clock=clock)

    clock.advance(30.0)
    assert progress.alive()
    clock.advance(0.001)
    assert progress.lagging() == list(APPS)


def test_each_application_must_report_within_the_window() -> None:
    clock = FakeClock()
    progress = Progress(APPS, 30.0, clock=clock)
    clock.advance(20.0)
    progress.progressed(None)
    clock.advance(10.5)

    assert progress.lagging() == [1500000001]

    progress.progressed(1500000001)
    assert progress.alive()
    clock.advance(20.0)  # 40 s after the default application's report
    assert progress.lagging() == [None]


def test_a_planned_pause_extends_the_deadline_by_that_much() -> None:
    clock = FakeClock()
    progress = Progress([None], 30.0, clock=clock)

    progress.progressed(None, pause=60.0)  # a back-off after errors
    clock.advance(90.0)
    assert progress.alive()
    clock.advance(0.001)
    assert not progress.alive()


def test_a_restart_gives_every_application_a_window_from_now() -> None:
    clock = FakeClock()
    progress = Progress(APPS, 30.0, clock=clock)
    progress.progressed(None, pause=600.0)
    clock.advance(100.0)  # start-up took longer than the window
    assert progress.lagging() == [1500000001]

    progress.restart()
    clock.advance(30.0)
    assert progress.alive()
    clock.advance(0.001)
    assert progress.lagging() == list(APPS)  # the long pause of before is forgotten too


def test_watching_begins_when_the_watchdog_starts_not_when_it_is_made(
    manager: NotifySocket, notifier: Notifier
) -> None:
    clock = FakeClock()
    watchdog = Watchdog(notifier, Progress(APPS, 30.0, clock=clock), 60.0)
    clock.advance(45.0)  # the database was down at start

    watchdog.start()
    try:
        assert manager.wait_for("WATCHDOG", timeout=10) == {"WATCHDOG": "1"}
    finally:
        watchdog.stop()


def test_a_report_for_an_unknown_application_is_a_bug() -> None:
    progress = Progress([None], 30.0, clock=FakeClock())

    with pytest.raises(KeyError):
        progress.progressed(7)


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="more than 0"):
        Progress([None], 0.0)


def test_a_beat_pings_only_while_every_application_is_alive(
    manager: NotifySocket, notifier: Notifier
) -> None:
    clock = FakeClock()
    watchdog = Watchdog(notifier, Progress(APPS, 30.0, clock=clock), 60.0)

    assert watchdog.beat()
    assert manager.receive() == {"WATCHDOG": "1"}

    clock.advance(31.0)
    watchdog.progress.progressed(None)
    assert not watchdog.beat()  # 1500000001 is stuck
    assert manager.drain() == []

    watchdog.progress.progressed(1500000001)
    assert watchdog.beat()
    assert manager.receive(1.0) == {"WATCHDOG": "1"}
    assert watchdog.pings == 2


def test_the_thread_pings_until_progress_stops_then_stays_silent(
    manager: NotifySocket, notifier: Notifier
) -> None:
    clock = FakeClock()
    progress = Progress(APPS, 30.0, clock=clock)
    watchdog = Watchdog(notifier, progress, 0.2)  # a beat every 50 ms

    with capture_logs() as logs:
        watchdog.start()
        try:
            for _ in range(3):
                assert manager.wait_for("WATCHDOG", timeout=10) == {"WATCHDOG": "1"}
            clock.advance(31.0)  # no report: the loops hang
            deadline = time.monotonic() + 10
            while not any(e["event"].startswith("no progress") for e in logs):
                assert time.monotonic() < deadline, "the stall was never noticed"
                time.sleep(0.01)
            # The thread saw the stall (it logs before waiting): from now on it stays silent.
            manager.drain()
            pings = watchdog.pings
            time.sleep(0.2)  # four more beats
            assert manager.drain() == []
            assert watchdog.pings == pings
        finally:
            watchdog.stop()

    stalls = [entry for entry in logs if entry["event"].startswith("no progress")]
    assert len(stalls) == 1
    assert stalls[0]["lagging"] == ["default", 1500000001]


def test_no_watchdog_unless_systemd_asks_for_one_and_can_hear_it(notifier: Notifier) -> None:
    heard = notifier
    unheard = Notifier(None)
    asked = {"WATCHDOG_USEC": "60000000"}

    assert Watchdog.for_environment(heard, APPS, {}) is None
    assert Watchdog.for_environment(unheard, APPS, asked) is None
    watchdog = Watchdog.for_environment(heard, APPS, asked)
    assert watchdog is not None
    assert watchdog.period == 15.0
    assert watchdog.progress.window == 30.0


@pytest.mark.parametrize(
    ("events", "ago", "text"),
    [
        (1234, 2.4, "drained 1234 events, last poll 2 s ago"),
        (1, 0.0, "drained 1 event, last poll 0 s ago"),
        (0, None, "drained 0 events, no poll yet"),
    ],
)
def test_the_status_line_reads_as_a_sentence(events: int, ago: float | None, text: str) -> None:
    assert status_text(events, ago) == text
