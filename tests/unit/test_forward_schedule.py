"""The forwarder's pure parts: the backoff schedule, how long a claim lasts, the failure streak,
the body and the status classes, and what the client makes of its URL."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

import pytest

from vodpoller import __version__, rawjson
from vodpoller.forwarder import (
    CLAIM_MARGIN_SECONDS,
    FailureStreak,
    claim_seconds,
    retry_delay,
)
from vodpoller.forwardsend import (
    KEY_HEADER,
    HandlerClient,
    callback_body,
    shown_path,
    status_answer,
)


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


@pytest.mark.parametrize("status", [300, 404, 503])
def test_a_failure_keeps_the_status_it_came_with(status: int) -> None:
    assert status_answer(status).status == status


@pytest.mark.parametrize(
    ("url", "safe_url", "target"),
    [
        ("https://app.internal/vod", "https://app.internal/vod", "/vod"),
        ("http://app.internal:8080", "http://app.internal:8080/", "/"),
        ("http://[::1]:8080/vod/cb?x=1", "http://[::1]:8080/vod/…", "/vod/cb?x=1"),
        ("http://app.internal/vod?", "http://app.internal/vod", "/vod"),
    ],
)
def test_the_url_shown_is_scheme_host_port_and_the_first_segment_of_the_path(
    url: str, safe_url: str, target: str
) -> None:
    client = HandlerClient(url, 5.0)
    assert (client.safe_url, client.target) == (safe_url, target)


@pytest.mark.parametrize("url", ["ftp://app.internal/vod", "http:///vod", "app.internal/vod"])
def test_a_url_that_is_not_http_with_a_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"^not an http\(s\) URL: "):
        HandlerClient(url, 5.0)


class Recorded(NamedTuple):
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@contextmanager
def handler(status: int = 200) -> Iterator[tuple[str, list[Recorded]]]:
    """A real HTTP handler on a free local port that records each request it is sent."""
    seen: list[Recorded] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(Recorded("POST", self.path, dict(self.headers.items()), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_post_carries_the_body_its_key_and_json_headers() -> None:
    with handler() as (url, seen):
        client = HandlerClient(f"{url}/vod/cb?tenant=7", 5.0)
        answer = client.post(b'{"EventType":"NewFileUpload"}', "key-1")
        client.close()

    assert (answer.delivered, answer.status) == (True, 200)
    [request] = seen
    assert (request.target, request.body) == ("/vod/cb?tenant=7", b'{"EventType":"NewFileUpload"}')
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"vodpoller/{__version__}"
    assert request.headers[KEY_HEADER] == "key-1"
    assert "Authorization" not in request.headers


@pytest.mark.parametrize(
    ("credentials", "pair"),
    [("app:s3cr%40t@", b"app:s3cr@t"), ("app@", b"app:"), ("app:@", b"app:")],
)
def test_a_user_in_the_url_is_basic_authentication(credentials: str, pair: bytes) -> None:
    with handler() as (url, seen):
        client = HandlerClient(url.replace("//", f"//{credentials}", 1) + "/vod", 5.0)
        client.post(b"{}", "key")
        client.close()

    [request] = seen
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(pair).decode()


def test_a_non_2xx_answer_is_a_failure_with_its_status() -> None:
    with handler(status=503) as (url, seen):
        client = HandlerClient(f"{url}/vod", 5.0)
        answer = client.post(b"{}", "key")
        client.close()

    assert (answer.reason, answer.status, answer.error) == ("5xx", 503, None)
    assert len(seen) == 1  # a failure answered is not sent again at once


def test_a_handler_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts the connection (the kernel does), never answers
        client = HandlerClient(f"http://127.0.0.1:{silent.getsockname()[1]}/vod", 0.2)
        answer = client.post(b"{}", "key")
        client.close()

    assert (answer.reason, answer.status) == ("timeout", None)
    assert str(answer.error).startswith("TimeoutError: ")
