"""Pure parts of the emulator's HTTP: reading a request head, and pushing one event with
retries and back-off (the HTTP round trip itself is tested in tests/integration)."""

from __future__ import annotations

import http.client
import io
import threading

import pytest

from vodpoller.emulator import push
from vodpoller.emulator.requesthead import HeadError, parse_request_line, read_headers

# -- request head ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "method", "target", "version"),
    [
        ("POST / HTTP/1.1", "POST", "/", "HTTP/1.1"),
        ("GET /_emulator/stats?x=1 HTTP/1.0", "GET", "/_emulator/stats?x=1", "HTTP/1.0"),
        ("GET //evil.example/x HTTP/1.1", "GET", "/evil.example/x", "HTTP/1.1"),
        ("GET / HTTP/1.01", "GET", "/", "HTTP/1.1"),
    ],
)
def test_request_line_is_read(line: str, method: str, target: str, version: str) -> None:
    parsed = parse_request_line(line)
    assert (parsed.method, parsed.target, parsed.version) == (method, target, version)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("GET /", 400),
        ("GET / HTTP/1.1 extra", 400),
        ("GET / HTTP/1", 400),
        ("GET / HTTP/one.1", 400),
        ("GET / HTTP/1.²", 400),
        ("GET / HTTP/12345678901.1", 400),
        ("GET / HTTP/2.0", 505),
        ("GET / HTTP/0.9", 505),
    ],
)
def test_bad_request_line_is_a_head_error(line: str, status: int) -> None:
    with pytest.raises(HeadError) as caught:
        parse_request_line(line)
    assert caught.value.status == status


def test_headers_are_read_up_to_the_blank_line_with_folded_lines_joined() -> None:
    stream = io.BytesIO(b"Host: x\r\nX-A:  spaced  \r\nX-B: one\r\n\ttwo\r\nEmpty:\r\n\r\nbody")
    assert read_headers(stream) == [
        ("Host", "x"),
        ("X-A", "spaced"),
        ("X-B", "one two"),
        ("Empty", ""),
    ]
    assert stream.read() == b"body"


def test_headers_end_at_the_end_of_the_stream_or_a_bare_newline() -> None:
    assert read_headers(io.BytesIO(b"Host: x\r\n")) == [("Host", "x")]
    assert read_headers(io.BytesIO(b"Host: x\n\nrest")) == [("Host", "x")]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"no colon\r\n\r\n", 400),
        (b": no name\r\n\r\n", 400),
        (b"Name : space before the colon\r\n\r\n", 400),
        (b" folded first\r\n\r\n", 400),
        (b"X: " + b"a" * 65536 + b"\r\n\r\n", 431),
        (b"X: a\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_bad_headers_are_a_head_error(head: bytes, status: int) -> None:
    with pytest.raises(HeadError) as caught:
        read_headers(io.BytesIO(head))
    assert caught.value.status == status


def test_exactly_the_most_headers_are_accepted() -> None:
    assert len(read_headers(io.BytesIO(b"X: a\r\n" * 100 + b"\r\n"))) == 100


# -- push ---------------------------------------------------------------------------------


class RecordingStop(threading.Event):
    """A stop flag that records how long each back-off would have waited."""

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return self.stop_after is not None and len(self.waits) >= self.stop_after


TARGET = push.Target("127.0.0.1", 1, "/")


def answers(*outcomes: int | Exception) -> push.Poster:
    sequence = iter(outcomes)

    def post(_target: push.Target, _body: bytes, _timeout: float) -> int:
        outcome = next(sequence)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return post


def test_back_off_doubles_from_a_tenth_of_a_second_up_to_one() -> None:
    stop = RecordingStop()
    result = push.push(TARGET, b"{}", retries=6, timeout=1, stopping=stop, post=answers(*[500] * 7))
    assert stop.waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert (result.status, result.attempts, result.pushed) == (500, 7, False)


def test_first_2xx_ends_the_retries() -> None:
    stop = RecordingStop()
    post = answers(ConnectionResetError("reset"), http.client.BadStatusLine("x"), 299, 500)
    result = push.push(TARGET, b"{}", retries=5, timeout=1, stopping=stop, post=post)
    assert (result.status, result.attempts, result.pushed, result.error) == (299, 3, True, None)
    assert len(stop.waits) == 2


@pytest.mark.parametrize("status", [199, 300, 404])
def test_only_2xx_is_pushed(status: int) -> None:
    result = push.push(
        TARGET, b"{}", retries=0, timeout=1, stopping=RecordingStop(), post=answers(status)
    )
    assert not result.pushed
    assert push.summary([result])["Failed"] == 1


def test_the_last_error_is_reported_and_cut_short() -> None:
    post = answers(500, OSError("x" * 1000))
    result = push.push(TARGET, b"{}", retries=1, timeout=1, stopping=RecordingStop(), post=post)
    assert result.status is None
    assert result.error is not None
    assert result.error.startswith("OSError: xxx")
    assert len(result.error) == push.MAX_ERROR_CHARS


def test_a_stopping_emulator_ends_the_retries() -> None:
    stop = RecordingStop(stop_after=1)
    result = push.push(TARGET, b"{}", retries=5, timeout=1, stopping=stop, post=answers(500, 200))
    assert (result.status, result.attempts, result.pushed) == (500, 1, False)
    assert result.error == "the emulator is stopping"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:8760/vod/cb?t=1", push.Target("127.0.0.1", 8760, "/vod/cb?t=1")),
        ("http://localhost", push.Target("localhost", 80, "/")),
        ("http://[::1]:9/x", push.Target("::1", 9, "/x")),
    ],
)
def test_callback_url_is_read(url: str, target: push.Target) -> None:
    assert push.Target.parse(url) == target


@pytest.mark.parametrize("url", [None, "", "https://h/", "h:80/x", "http://h/#frag", "http://h/\n"])
def test_bad_callback_url_is_refused(url: object) -> None:
    with pytest.raises(ValueError, match="url"):
        push.Target.parse(url)
