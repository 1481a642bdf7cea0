"""Pure parts of `vodpoller status` and of the `daemons` probe: whether the registered daemons
poll, ages as words, the JSON object and the table rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vodpoller.daemons import DaemonRecord
from vodpoller.status import (
    POLL_WINDOW_SECONDS,
    DaemonStatus,
    StatusReport,
    ago,
    as_json,
    error_lines,
    polling,
    table_rows,
)

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
WINDOW = POLL_WINDOW_SECONDS


def daemon(
    pid: int = 100,
    *,
    alive: bool = True,
    polled: float | None = 1.0,
    started: float = 3600.0,
    error: str | None = None,
    holding: int = 0,
) -> DaemonStatus:
    """A daemon that polled `polled` seconds before NOW (None: never) and started `started`
    seconds before it."""
    record = DaemonRecord(
        id=f"host-a:{pid}:0123456789abcdef",
        host="host-a",
        pid=pid,
        boot_id="boot",
        version="0.1.0",
        command="run",
        applications=["default", "1500000001"],
        started_at=NOW - timedelta(seconds=started),
        heartbeat_at=NOW - timedelta(seconds=2),
        last_poll_at=None if polled is None else NOW - timedelta(seconds=polled),
        last_error=error,
        last_error_at=None if error is None else NOW - timedelta(seconds=90),
        pulled=10,
        stored=9,
        duplicates=1,
        confirmed=10,
    )
    return DaemonStatus(record, alive=alive, holding=holding)


def test_no_daemon_registered_is_fine() -> None:
    verdict = polling([], NOW)
    assert verdict.ok
    assert verdict.detail == "none registered"


def test_a_daemon_that_polled_within_the_window_is_fine_up_to_its_last_second() -> None:
    assert polling([daemon(polled=12)], NOW).detail == "1 running, last poll 12 s ago"
    assert polling([daemon(polled=WINDOW)], NOW).ok
    assert not polling([daemon(polled=WINDOW + 1)], NOW).ok


def test_the_latest_poll_of_any_living_daemon_counts() -> None:
    verdict = polling([daemon(1, polled=WINDOW * 3), daemon(2, polled=30)], NOW)
    assert verdict.ok
    assert verdict.detail == "2 running, last poll 30 s ago"


def test_a_dead_daemon_s_recent_poll_does_not_count() -> None:
    verdict = polling([daemon(1, alive=False, polled=5), daemon(2, polled=WINDOW * 2)], NOW)
    assert not verdict.ok
    assert verdict.detail.startswith(f"no daemon polled in the last {WINDOW:g} s (")
    assert "host-a:1 dead, heartbeat 2 s ago" in verdict.detail
    assert "host-a:2 last poll 10 min ago" in verdict.detail


def test_dead_daemons_beside_a_polling_one_are_counted_in_the_detail() -> None:
    verdict = polling([daemon(1, alive=False), daemon(2, polled=3)], NOW)
    assert verdict.ok
    assert verdict.detail == "1 running (1 dead), last poll 3 s ago"


def test_a_daemon_that_just_started_has_the_window_to_poll_for_the_first_time() -> None:
    assert polling([daemon(polled=None, started=10)], NOW).detail == (
        "1 running, starting: no poll yet"
    )
    assert polling([daemon(polled=None, started=WINDOW)], NOW).ok
    late = polling([daemon(polled=None, started=WINDOW + 1, error="PullEvents failed: x")], NOW)
    assert not late.ok
    assert "host-a:100 last poll never, last error 90 s ago: PullEvents failed: x" in late.detail


def test_only_dead_daemons_registered_says_to_start_one() -> None:
    verdict = polling([daemon(1, alive=False), daemon(2, alive=False, polled=None)], NOW)
    assert not verdict.ok
    assert verdict.detail.startswith("2 registered, none running (host-a:1 dead, ")
    assert "systemctl start vodpoller" in verdict.detail


def test_a_long_error_is_cut_to_one_short_line() -> None:
    error = "PullEvents failed:\n" + "x" * 1000
    verdict = polling([daemon(polled=None, started=WINDOW * 2, error=error)], NOW)
    assert "\n" not in verdict.detail
    assert "x" * 200 not in verdict.detail
    assert "…" in verdict.detail


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "never"),
        (0.4, "0 s ago"),
        (119.4, "119 s ago"),
        (120, "2 min ago"),
        (7199, "119 min ago"),
        (7200, "2 h ago"),
        (172799, "47 h ago"),
        (172800, "2 d ago"),
    ],
)
def test_ages_read_as_words(seconds: float | None, text: str) -> None:
    assert ago(seconds) == text


def test_the_json_object_carries_every_field_with_ages() -> None:
    report = StatusReport(
        [daemon(7, polled=4, holding=3, error="boom"), daemon(8, alive=False, polled=None)],
        unconfirmed=5,
        held=4,
        checked_at=NOW,
    )
    document = as_json(report, "sqlite:///x.db")
    assert document["database"] == "sqlite:///x.db"
    assert document["checked_at"] == "2026-12-01T12:00:00+00:00"
    assert document["unconfirmed"] == {"rows": 5, "held_by_daemons": 4}
    first, second = document["daemons"]
    assert first == {
        "id": "host-a:7:0123456789abcdef",
        "host": "host-a",
        "pid": 7,
        "alive": True,
        "version": "0.1.0",
        "command": "run",
        "applications": ["default", "1500000001"],
        "started_at": "2026-12-01T11:00:00+00:00",
        "heartbeat_at": "2026-12-01T11:59:58+00:00",
        "heartbeat_seconds_ago": 2.0,
        "last_poll_at": "2026-12-01T11:59:56+00:00",
        "last_poll_seconds_ago": 4.0,
        "last_error": "boom",
        "last_error_at": "2026-12-01T11:58:30+00:00",
        "pulled": 10,
        "stored": 9,
        "duplicates": 1,
        "confirmed": 10,
        "holding": 3,
    }
    assert second["alive"] is False
    assert second["last_poll_at"] is None
    assert second["last_poll_seconds_ago"] is None


def test_the_table_shows_ages_and_state_and_errors_go_below() -> None:
    report = StatusReport(
        [daemon(7, polled=4, error="boom"), daemon(8, alive=False, polled=None)],
        unconfirmed=0,
        held=0,
        checked_at=NOW,
    )
    first, second = table_rows(report)
    assert (first["state"], first["started"]) == ("alive", "60 min ago")
    assert first["last_poll"] == "4 s ago"
    assert first["applications"] == "default,1500000001"
    assert (second["state"], second["last_poll"]) == ("dead", "never")
    assert error_lines(report) == ["last error of host-a:7 (90 s ago): boom"]
