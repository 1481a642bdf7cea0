"""One POST of a stored event to the user's handler (`[forward] url`), in VOD's normal-callback
form, and what came of it. http.client: one kept-alive connection per sending thread, the
request timeout on every socket operation, certificates verified, redirects not followed."""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from vodpoller import __version__, rawjson

KEY_HEADER: Final = "X-Vodpoller-Event-Key"
# Enough of an answer to see it whole when it is short; a longer one closes the connection.
MAX_ANSWER_BYTES: Final = 65_536
# What a kept-alive connection the handler closed while it was idle fails with.
_STALE: Final = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


def callback_body(payload: Mapping[str, Any]) -> bytes:
    """What VOD's normal callback POSTs: the stored entry without its `EventHandle` (pulled
    entries carry one, pushed ones never did), numbers written back as they came."""
    return rawjson.dumps({k: v for k, v in payload.items() if k != "EventHandle"}).encode()


@dataclass(frozen=True)
class Answer:
    """What came of one POST: `reason` None when the handler answered 2xx; else the status
    class (`3xx`, `4xx`, `5xx`), `timeout` or `connection`."""

    reason: str | None
    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.reason is None


def status_answer(status: int) -> Answer:
    """2xx is delivered; anything else (a redirect too: it is not followed) is a failure."""
    return Answer(None, status) if 200 <= status < 300 else Answer(f"{status // 100}xx", status)


def shown_path(path: str) -> str:
    """A path as logs may show it: its first segment; the rest (where handlers often keep a
    secret token, as vodpoller's own receiver does) as `…`."""
    first, _, rest = path.lstrip("/").partition("/")
    return f"/{first}" + ("/…" if rest else "")


class HandlerClient:
    """POSTs to one URL from any number of threads, each with its own connection. A user and
    password in the URL become Basic authentication (app.secrets_of keeps the password out of
    the log); `safe_url` is the URL without them, its query and most of its path."""

    def __init__(
        self, url: str, timeout: float, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.https else None)
        shown_host = f"[{self.host}]" if ":" in self.host else self.host
        shown_port = f":{self.port}" if self.port else ""
        self.safe_url = f"{parts.scheme}://{shown_host}{shown_port}{shown_path(parts.path)}"
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vodpoller/{__version__}",
        }
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def post(self, body: bytes, key: str) -> Answer:
        """POST `body` with the event's dedup key in `X-Vodpoller-Event-Key`."""
        headers = {**self._headers, KEY_HEADER: key}
        reused = getattr(self._local, "connection", None) is not None
        answer = self._attempt(body, headers, stale_retried=reused)
        if answer is None:
            # Most likely the handler closed the kept-alive connection while it was idle: once
            # more on a new one (should the request have reached it, the key absorbs the copy).
            answer = self._attempt(body, headers, stale_retried=False)
        return answer or Answer("connection")

    def _attempt(
        self, body: bytes, headers: Mapping[str, str], *, stale_retried: bool
    ) -> Answer | None:
        """One exchange; None for a stale kept-alive connection when `stale_retried`."""
        try:
            return self._exchange(body, headers)
        except _STALE as error:
            if stale_retried:
                self._drop()
                return None
            return self._failed("connection", error)
        except TimeoutError as error:
            return self._failed("timeout", error)
        except (OSError, http.client.HTTPException) as error:
            return self._failed("connection", error)

    def _exchange(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        connection = self._connection()
        connection.request("POST", self.target, body=body, headers=dict(headers))
        response = connection.getresponse()
        response.read(MAX_ANSWER_BYTES)
        if not response.isclosed() or response.will_close:
            self._drop()  # an answer too long to read whole, or the handler closes it
        return status_answer(response.status)

    def _failed(self, reason: str, error: BaseException) -> Answer:
        self._drop()
        return Answer(reason, None, f"{type(error).__name__}: {error}"[:300])

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self.https:
                connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    def close(self) -> None:
        """Close every thread's connection (the threads have ended)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
