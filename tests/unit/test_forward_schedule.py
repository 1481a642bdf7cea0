"""The forwarder's pure parts: the backoff schedule, how long a claim lasts, the failure streak,
the body and the status classes, and what the client makes of its URL."""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from vodpoller import rawjson
from vodpoller.forwarder import (
    CLAIM_MARGIN_SECONDS,
    FailureStreak,
    claim_seconds,
    retry_delay,
)
from vodpoller.forwardsend import HandlerClient, callback_body, shown_path, status_answer


def test_the_pause_after_a_failure_doubles_from_retry_seconds() -> None:
    assert [retry_delay(attempts, 1.0, 300.0) for attempts in range(6)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
    ]
    assert retry_delay(0, 0.25, 300.0) == 0.25
    assert retry_delay(3, 0.25, 300.0) == 2.0


def test_the_pause_never_passes_max_retry_seconds_however_many_failures() -> None:
    assert retry_delay(9, 1.0, 300.0) == 300.0  # 512 s capped
    assert retry_delay(8, 1.0, 300.0) == 256.0
    assert retry_delay(10_000, 1.0, 300.0) == 300.0  # no overflow
    assert retry_delay(-1, 1.0, 300.0) == 1.0


def test_a_claim_lasts_two_requests_and_a_margin() -> None:
    assert claim_seconds(10.0) == 20.0 + CLAIM_MARGIN_SECONDS
    assert claim_seconds(0.5) == 1.0 + CLAIM_MARGIN_SECONDS


def test_a_failure_streak_is_worth_a_line_when_it_begins_and_every_few_minutes() -> None:
    streak = FailureStreak(report_seconds=300.0, quiet_seconds=0.0)
    assert streak.succeeded(0.0) is None  # no streak ran
    assert streak.failed(10.0) is True
    assert [streak.failed(t) for t in (11.0, 50.0, 309.0)] == [False, False, False]
    assert streak.failed(310.0) is True  # a reminder
    assert streak.failed(311.0) is False
    assert streak.succeeded(320.0) == (6, 301.0)  # from its first failure to its last
    assert streak.succeeded(321.0) is None
    assert streak.failed(400.0) is True  # a new streak


def test_a_streak_ends_only_with_a_success_a_quiet_spell_after_its_last_failure() -> None:
    streak = FailureStreak(report_seconds=300.0, quiet_seconds=30.0)
    assert streak.failed(0.0) is True
    assert streak.succeeded(1.0) is None  # a handler failing one request in five: still one
    assert streak.failed(2.0) is False
    assert streak.succeeded(31.9) is None
    assert streak.succeeded(32.0) == (2, 2.0)
    assert streak.succeeded(33.0) is None
    assert streak.failed(40.0) is True


def test_a_streak_waits_thirty_seconds_of_quiet_by_default() -> None:
    streak = FailureStreak()
    streak.failed(0.0)
    assert streak.succeeded(29.9) is None
    assert streak.succeeded(30.0) == (1, 0.0)


def test_the_body_is_the_entry_without_its_handle_numbers_as_they_came() -> None:
    entry = rawjson.loads(
        '{"EventHandle": "h-1", "EventType": "NewFileUpload",'
        ' "FileUploadEvent": {"FileId": "52858", "Size": 123456789012345678901234567890,'
        ' "Ratio": 0.12345678901234567890123, "Later": null}}'
    )
    body = callback_body(entry).decode()
    assert json.loads(body, parse_float=str) == {
        "EventType": "NewFileUpload",
        "FileUploadEvent": {
            "FileId": "52858",
            "Size": 123456789012345678901234567890,
            "Ratio": "0.12345678901234567890123",
            "Later": None,
        },
    }
    assert "123456789012345678901234567890" in body
    assert "0.12345678901234567890123" in body  # more digits than a float keeps
    assert list(json.loads(body)) == ["EventType", "FileUploadEvent"]


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_a_2xx_is_delivered(status: int) -> None:
    answer = status_answer(status)
    assert answer.delivered
    assert answer.status == status


@pytest.mark.parametrize(
    ("status", "reason"),
    [(300, "3xx"), (301, "3xx"), (302, "3xx"), (307, "3xx"), (400, "4xx"), (404, "4xx"),
     (429, "4xx"), (500, "5xx"), (503, "5xx")],
)  # fmt: skip
def test_any_other_status_is_a_failure_of_its_class(status: int, reason: str) -> None:
    answer = status_answer(status)
    assert not answer.delivered
    assert answer.reason == reason


def test_the_url_shown_in_logs_has_no_credentials() -> None:
    client = HandlerClient("https://app:s3cr%40t@app.internal:8443/vod/cb?tenant=7", 5.0)
    assert client.safe_url == "https://app.internal:8443/vod/…"
    assert client.target == "/vod/cb?tenant=7"
    assert "s3cr" not in client.safe_url
    assert client.port == 8443


def test_https_verifies_the_certificate_and_the_host_name_by_default() -> None:
    context = HandlerClient("https://app.internal/vod", 5.0).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert HandlerClient("http://127.0.0.1:1/vod", 5.0).ssl_context is None


def test_a_refused_connection_is_a_connection_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    answer = HandlerClient(f"http://127.0.0.1:{port}/vod", 2.0).post(b"{}", "key")
    assert answer.reason == "connection"
    assert answer.status is None
    assert answer.error is not None


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("", "/"),
        ("/", "/"),
        ("/vod", "/vod"),
        ("/vod/", "/vod"),
        ("/vod/0123abcd", "/vod/…"),
        ("/a/b/c", "/a/…"),
    ],
)
def test_logs_show_a_path_up_to_its_first_segment(path: str, shown: str) -> None:
    assert shown_path(path) == shown
