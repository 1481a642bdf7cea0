"""The daemon's own HTTP endpoints (metrics, the callback receiver) each on a thread of its
own: IPv4 or IPv6 by the host, port 0 for a free one, and a close that ends the thread."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vodpoller.errors import ConfigError
from vodpoller.logs import get_logger

log = get_logger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client does not hold up the daemon's exit
    what = "http"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client gone before its answer: one log line, not socketserver's traceback.
        error = sys.exc_info()[1]
        log.warning(
            f"{self.what} connection failed",
            client=client_address[0] if client_address else None,
            error=type(error).__name__,
        )


class _Server6(_Server):
    address_family = socket.AF_INET6


class LocalServer:
    """A threaded HTTP server for `handler` on (host, port); `what` names it in messages and
    in its thread's name."""

    def __init__(
        self, what: str, host: str, port: int, handler: type[BaseHTTPRequestHandler]
    ) -> None:
        server_class = _Server6 if ":" in host else _Server
        try:
            self.server: _Server = server_class((host, port), handler)
        except OSError as error:
            raise ConfigError(f"{what}: cannot listen on {host}:{port}: {error}") from error
        self.server.what = what
        self.host = host
        self._thread = threading.Thread(target=self.server.serve_forever, name=what, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """Scheme, host and port, without a path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop_taking(self) -> None:
        """Accept no more requests; those in progress go on."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join()

    def close(self) -> None:
        self.stop_taking()
        self.server.server_close()
