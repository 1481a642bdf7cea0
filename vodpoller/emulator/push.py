"""Normal callback, as VOD sends it (`POST /_emulator/push`): one HTTP POST per event to the
user's URL, the entry without `EventHandle` as a JSON body, retried with a short back-off
while the answer is not 2xx or does not come."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

BACKOFF_SECONDS = 0.1  # before the first retry; doubled for each next one
MAX_BACKOFF_SECONDS = 1.0
MAX_RETRIES = 10
MAX_TIMEOUT_MS = 60_000
MAX_ERROR_CHARS = 200


Poster = Callable[["Target", bytes, float], int]


@dataclass(frozen=True)
class Target:
    """A checked callback URL: http only, with a host."""

    host: str
    port: int
    path: str  # with its query

    @classmethod
    def parse(cls, url: Any) -> Target:
        """`ValueError` with a readable message for anything but http://host[:port][/path]."""
        if not isinstance(url, str) or not url:
            raise ValueError("url must be the callback's http:// URL")
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"url must start with http:// (the emulator sends no TLS): {url!r}")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"url has a bad port: {url!r}") from None
        if not parts.hostname:
            raise ValueError(f"url has no host: {url!r}")
        if any(c in url for c in "\r\n\t ") or parts.fragment:
            raise ValueError(f"url must not hold whitespace or a #fragment: {url!r}")
        return cls(parts.hostname, port, _path(parts))


def _path(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


@dataclass(frozen=True)
class Attempted:
    """One event's pushes: the last status (None when no answer came), how many tries."""

    status: int | None
    attempts: int
    error: str | None = None

    @property
    def pushed(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"Status": self.status, "Attempts": self.attempts}
        if self.error is not None:
            result["Error"] = self.error
        return result


def post_once(target: Target, body: bytes, timeout: float) -> int:
    """POST one event; its HTTP status, or `OSError`/`HTTPException` when none came."""
    connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": "vodpoller-emulator"},
        )
        answer = connection.getresponse()
        answer.read()  # the whole answer, so that the handler is not cut off mid-write
        return answer.status
    finally:
        connection.close()


def push(
    target: Target,
    body: bytes,
    *,
    retries: int,
    timeout: float,
    stopping: threading.Event,
    post: Poster = post_once,
) -> Attempted:
    """Push one event until it is answered 2xx, at most `retries` times more."""
    status: int | None = None
    error: str | None = None
    for attempt in range(retries + 1):
        if attempt and stopping.wait(
            min(BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        ):
            return Attempted(status, attempt, error or "the emulator is stopping")
        try:
            status, error = post(target, body, timeout), None
        except (OSError, http.client.HTTPException) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        if status is not None and 200 <= status < 300:
            return Attempted(status, attempt + 1)
    return Attempted(status, retries + 1, error)


def summary(results: Sequence[Attempted]) -> dict[str, Any]:
    return {
        "Pushed": sum(r.pushed for r in results),
        "Failed": sum(not r.pushed for r in results),
        "Attempts": sum(r.attempts for r in results),
        "Results": [r.to_json() for r in results],
    }
