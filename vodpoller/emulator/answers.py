"""How an answer goes out on the socket: whole, in one write, or broken on purpose after the
work was done (cut short, bad chunked framing, a false Content-Encoding, stalled, trickled),
and the bodies of injected HTTP errors."""

from __future__ import annotations

import email.utils
import http
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vodpoller.emulator.faults import ActionFaults, Outcome

JSON = "application/json"
HUGE_BODY_BYTES = 1024 * 1024
TRICKLE_TICK_SECONDS = 0.05

Write = Callable[[bytes], object]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str | None = JSON
    close: bool = False  # say "Connection: close" (the handler closes after it)

    def head(self, *, framing: Sequence[tuple[str, str]] | None = None) -> bytes:
        """The status line and headers; `framing` replaces `Content-Length`."""
        lines = [
            f"HTTP/1.1 {self.status} {_reason(self.status)}",
            "Server: vodpoller-emulator",
            f"Date: {email.utils.formatdate(usegmt=True)}",
        ]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}")
        for name, value in framing or [("Content-Length", str(len(self.body)))]:
            lines.append(f"{name}: {value}")
        if self.close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Injected"


def http_error(faults: ActionFaults) -> Answer:
    """The answer of an `http_error_rate` fault: its status and one of four bodies, as a
    gateway in front of the API might send them."""
    status = faults.http_error_status
    title = f"{status} {_reason(status)}"
    kind = faults.http_error_body
    if kind == "empty":
        return Answer(status, b"", None)
    if kind == "html":
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return Answer(status, page.encode("ascii"), "text/html")
    head = f'{{"Error": "{_reason(status)} (injected fault)'.encode("ascii")
    if kind == "huge":
        filler = b" " + b"x" * (HUGE_BODY_BYTES - len(head) - 3)
        return Answer(status, head + filler + b'"}')
    return Answer(status, head + b'"}')


def send(write: Write, answer: Answer) -> None:
    """The whole answer in one write: headers and body in one segment."""
    write(answer.head() + answer.body)


def send_broken(
    write: Write, answer: Answer, outcome: Outcome, faults: ActionFaults, closing: threading.Event
) -> None:
    """Send `answer` broken the way `outcome` says; the caller then closes the connection.
    `closing` cuts a stall or a trickle short when the emulator stops."""
    half = len(answer.body) // 2  # less than the whole, for any body of one byte or more
    if outcome is Outcome.TRUNCATE:
        write(answer.head() + answer.body[:half])
    elif outcome is Outcome.BAD_CHUNKED:
        first = answer.body[:half]
        chunked = answer.head(framing=[("Transfer-Encoding", "chunked")])
        # A valid chunk, then a size line that is not hexadecimal.
        write(chunked + f"{len(first):x}\r\n".encode() + first + b"\r\nzz\r\n")
    elif outcome is Outcome.BAD_ENCODING:
        # The body is the plain JSON; the header says it is gzip.
        framing = [("Content-Encoding", "gzip"), ("Content-Length", str(len(answer.body)))]
        write(answer.head(framing=framing) + answer.body)
    elif outcome is Outcome.STALL:
        write(answer.head() + answer.body[:half])
        closing.wait(faults.stall_ms / 1000)
    elif outcome is Outcome.TRICKLE:
        _trickle(write, answer.head() + answer.body, faults.trickle_bytes_per_second, closing)
    else:
        raise ValueError(f"not a broken answer: {outcome}")


def _trickle(write: Write, data: bytes, rate: float, closing: threading.Event) -> None:
    """`data` at about `rate` bytes a second: a piece per tick, at least one byte a piece."""
    tick = max(TRICKLE_TICK_SECONDS, 1 / rate)
    piece = max(1, int(rate * tick))
    started = time.monotonic()
    for sent, offset in enumerate(range(0, len(data), piece)):
        # Paced against the start, so that the time writing takes is not added per piece.
        if closing.wait(max(0.0, started + sent * tick - time.monotonic())):
            return
        write(data[offset : offset + piece])
