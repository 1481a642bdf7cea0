"""Reading an HTTP/1.x request head (request line and headers) without the email package,
which the standard library's server uses and which cost a third of the emulator's CPU per
request. Strict where the emulator needs it to be: anything odd is a `HeadError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

MAX_LINE_BYTES = 65536  # as http.client
MAX_HEADERS = 100  # as http.client


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class HeadError(Exception):
    """A request head that cannot be read: answer `status` with `message`, then close."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestLine:
    method: str
    target: str
    version: str  # "HTTP/1.0" or "HTTP/1.1"


def parse_request_line(line: str) -> RequestLine:
    """`METHOD TARGET HTTP/1.x`, CRLF already stripped."""
    words = line.split()
    if len(words) != 3:
        raise HeadError(400, f"Bad request syntax ({line!r})")
    method, target, version = words
    major, dot, minor = version.removeprefix("HTTP/").partition(".")
    if not (
        version.startswith("HTTP/")
        and dot
        and major.isascii()
        and major.isdigit()
        and minor.isascii()
        and minor.isdigit()
        and len(major) <= 10
        and len(minor) <= 10
    ):
        raise HeadError(400, f"Bad request version ({version!r})")
    if int(major) != 1:
        raise HeadError(505, f"Invalid HTTP version ({version.removeprefix('HTTP/')})")
    # As the standard library: a target starting "//" would read as a host to some clients.
    if target.startswith("//"):
        target = "/" + target.lstrip("/")
    return RequestLine(method, target, "HTTP/1.1" if int(minor) >= 1 else "HTTP/1.0")


def read_headers(rfile: _Lines) -> list[tuple[str, str]]:
    """The header fields up to the blank line, names as sent, values stripped. A folded
    line (starting with a space or tab) continues the field before it."""
    fields: list[tuple[str, str]] = []
    while True:
        raw = rfile.readline(MAX_LINE_BYTES + 1)
        if len(raw) > MAX_LINE_BYTES:
            raise HeadError(431, "Line too long")
        if raw in (b"\r\n", b"\n", b""):
            return fields
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HeadError(400, f"Malformed header line ({line[:100]!r})")
        if len(fields) >= MAX_HEADERS:
            raise HeadError(431, "Too many headers")
        fields.append((name, value.strip()))
