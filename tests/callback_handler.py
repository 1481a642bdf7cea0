"""A user's normal-callback handler for the forwarder's tests: a real threaded HTTP server on
loopback that records every POST and answers as the test says (a status, a sleep past the
client's timeout, a dropped connection); it can be stopped and started again on its port."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY_HEADER = "X-Vodpoller-Event-Key"


@dataclass(frozen=True)
class Reply:
    """How to answer one POST: `status`, after `sleep` seconds; `drop` closes the connection
    without an answer."""

    status: int = 200
    sleep: float = 0.0
    drop: bool = False
    location: str | None = None


@dataclass(frozen=True)
class Received:
    key: str | None
    body: Any
    headers: dict[str, str]
    reply: Reply
    path: str


class CallbackHandler:
    """`url` takes POSTs; `received` holds every one, `delivered` the keys answered 2xx."""

    def __init__(self, reply: Callable[[Received], Reply] | None = None, port: int = 0):
        self.reply = reply or (lambda _: Reply())
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.sending: Counter[str] = Counter()  # requests of each key being answered now
        self.most_at_once: Counter[str] = Counter()  # the most of each key at one moment
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/vod/callback"

    def start(self) -> CallbackHandler:
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_class(self))
        server.daemon_threads = True
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until `start` again on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[str]:
        """The key of every POST answered 2xx, in order, repeats included."""
        with self.lock:
            return [
                r.key
                for r in self.received
                if r.key is not None and not r.reply.drop and 200 <= r.reply.status < 300
            ]

    def keys(self) -> list[str]:
        """The key of every POST received, whatever the answer."""
        with self.lock:
            return [r.key for r in self.received if r.key is not None]

    def __enter__(self) -> CallbackHandler:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _handler_class(owner: CallbackHandler) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real application server
        disable_nagle_algorithm = True  # as servers do: no 40 ms stall per answer

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            key = self.headers.get(KEY_HEADER)
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = raw
            probe = Received(key, body, dict(self.headers.items()), Reply(), self.path)
            reply = owner.reply(probe)
            received = Received(key, body, probe.headers, reply, self.path)
            with owner.lock:
                owner.received.append(received)
                if key is not None:
                    owner.sending[key] += 1
                    owner.most_at_once[key] = max(owner.most_at_once[key], owner.sending[key])
            try:
                if reply.sleep:
                    time.sleep(reply.sleep)
                if reply.drop:
                    self.close_connection = True
                    return
                answer = b"" if reply.status in (204, 304) else b'{"ok": true}'
                self.send_response(reply.status)
                if reply.location:
                    self.send_header("Location", reply.location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting: an answer too late
            finally:
                with owner.lock:
                    if key is not None:
                        owner.sending[key] -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
