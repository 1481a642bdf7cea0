"""Raw HTTP against the emulator, for what the SDK cannot show: every byte it sent on a
connection until it closed it, and signed requests with any body."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from tests.conftest import tc3_headers
from vodpoller.emulator.server import Emulator


@dataclass(frozen=True)
class Raw:
    """Everything the emulator sent on one connection until it closed it."""

    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    size: int  # bytes in all, head included
    pieces: int  # how many reads it took
    seconds: float  # from the request sent to the connection closed

    @property
    def document(self) -> Any:
        return json.loads(self.body)


def exchange(emulator: Emulator, request: bytes, *, timeout: float = 20) -> Raw:
    """Send raw bytes, read until the emulator closes the connection."""
    with socket.create_connection((emulator.host, emulator.port), timeout=timeout) as sock:
        sock.sendall(request)
        started = time.monotonic()
        pieces: list[bytes] = []
        while data := sock.recv(65536):
            pieces.append(data)
        seconds = time.monotonic() - started
    received = b"".join(pieces)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Raw(int(status_line.split()[1]), headers, body, len(received), len(pieces), seconds)


def signed_request(
    emulator: Emulator,
    action: str,
    params: dict[str, Any] | None = None,
    *,
    body: bytes | None = None,
    close: bool = False,
) -> bytes:
    """A `POST /` signed for the emulator, with `params` as JSON or a `body` as it is."""
    body = json.dumps(params or {}).encode() if body is None else body
    headers = tc3_headers(
        emulator.options.secret_id,
        emulator.options.secret_key,
        host=emulator.endpoint,
        body=body,
        timestamp=int(time.time()),
        action=action,
    )
    headers["Content-Length"] = str(len(body))
    if close:
        headers["Connection"] = "close"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST / HTTP/1.1\r\n{head}\r\n".encode() + body
