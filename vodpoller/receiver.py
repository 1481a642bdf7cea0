"""Normal callback: VOD POSTs each event to `[receiver] path`, and the receiver stores it
through the same parse -> identity -> store path as pulled events (an event both pushed and
pulled is one row). It answers 200 only once the event is committed: VOD retries anything
else, so nothing is lost to a database that is down."""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

from vodpoller.classify import one_line
from vodpoller.config import ReceiverSettings, is_loopback
from vodpoller.envelope import Delivery, UnreadableError, read_pushed
from vodpoller.errors import StorageError, describe
from vodpoller.events import Event, parse_entry
from vodpoller.httpserve import LocalServer
from vodpoller.logs import get_logger
from vodpoller.metrics import Metrics
from vodpoller.store import Answer, EventStore, Reject

log = get_logger(__name__)

# A request gets this long in all to send its body (and each read of its head this long):
# a slow or stalled client cannot hold a thread for longer.
RECEIVE_TIMEOUT_SECONDS: Final = 10.0
# On shutdown, requests being stored get this long to answer before the store is closed.
CLOSE_WAIT_SECONDS: Final = 10.0
MAX_LOGGED_BODY: Final = 40  # characters of a refused body in its log line
MAX_CHUNK_LINE: Final = 1024
_READ_SIZE: Final = 65536
# A SubAppId after the path: a positive 64-bit integer, written plainly.
_SUB_APP_ID: Final = re.compile(r"[1-9][0-9]{0,18}")
MAX_SUB_APP_ID: Final = 2**63 - 1


@dataclass(frozen=True)
class Reply:
    """An answer to a callback POST and how it is counted (metrics.CALLBACK_OUTCOMES)."""

    status: int
    outcome: str
    body: dict[str, Any] = field(default_factory=dict)


class Refused(Exception):  # noqa: N818 (an answer to give, not a failure of ours)
    """A request turned away: the answer, the reason for the log, and the first characters
    of its body when that is what is wrong."""

    def __init__(self, reply: Reply, reason: str, prefix: str | None = None):
        super().__init__(reason)
        self.reply = reply
        self.reason = reason
        self.prefix = prefix


def route(target: str, path: str) -> tuple[bool, int | None]:
    """Whether a request target (path and query) is the receiver's, and which application it
    names: `path` itself is the primary application (None), `path/<SubAppId>` that one. The
    secret part is compared in constant time; a query string is ignored."""
    base = path.rstrip("/").encode()
    # http.server decodes the request line as Latin-1: encoding back gives the bytes sent.
    asked = target.split("?", 1)[0].encode("latin-1", "replace")
    if not hmac.compare_digest(asked[: len(base)], base):
        return False, None
    rest = asked[len(base) :].decode("latin-1")
    if rest in ("", "/"):
        return True, None
    number = rest[1:]
    if rest.startswith("/") and _SUB_APP_ID.fullmatch(number) and int(number) <= MAX_SUB_APP_ID:
        return True, int(number)
    return False, None


def entry_of(delivery: Delivery, sub_app_id: int | None) -> tuple[list[Event], list[Reject]]:
    """The pushed entry as an event, or as a reject when it cannot be one (as pulled ones)."""
    if delivery.entry is None:
        return [], [Reject(delivery.text, None, delivery.problem or "not an object")]
    try:
        return [parse_entry(delivery.entry, sub_app_id, delivery.text)], []
    except Exception as error:  # kept in vod_rejects, as a pulled entry would be
        log.error("a pushed entry could not be parsed", exc_info=error)
        reason = f"vodpoller could not parse it: {type(error).__name__}"
        return [], [Reject(delivery.text, None, reason)]


class Receiver:
    """The HTTP endpoint; port 0 picks a free one. Each POST is stored in a transaction of
    its own, straight from its request thread."""

    def __init__(self, store: EventStore, settings: ReceiverSettings, metrics: Metrics):
        address = settings.address
        if address is None:
            raise ValueError("the receiver is off: [receiver] listen is empty")
        host, port = address
        self.store = store
        self.path = settings.path
        self.max_body_bytes = settings.max_body_bytes
        self.metrics = metrics
        self.host = host
        self._in_flight = 0
        self._idle = threading.Condition()
        self._failing = False
        self._closing = False
        self._local = LocalServer("receiver", host, port, _handler(self))

    @property
    def port(self) -> int:
        return self._local.port

    @property
    def url(self) -> str:
        """Scheme, host and port: the path holds the secret and is never shown."""
        return self._local.url

    def start(self) -> Receiver:
        self._local.start()
        shown = self.path.rstrip("/").rsplit("/", 1)[0]
        log.info("receiver listening", url=f"{self.url}{shown}/<token>")
        if not is_loopback(self.host):
            log.warning(
                "the receiver is reachable from other hosts, over plain HTTP", host=self.host
            )
        return self

    def close(self) -> None:
        """Stop taking requests; let those being stored answer (at most CLOSE_WAIT_SECONDS)."""
        self._local.stop_taking()
        with self._idle:
            self._closing = True
            self._idle.wait_for(lambda: self._in_flight == 0, CLOSE_WAIT_SECONDS)
        self._local.close()

    # -- one request ---------------------------------------------------------------------

    def store_body(self, body: bytes, sub_app_id: int | None) -> Reply:
        """Parse, then store in one transaction; 200 only once it is committed."""
        try:
            delivery = read_pushed(body)
        except UnreadableError as error:
            prefix = one_line(
                body[: MAX_LOGGED_BODY + 1].decode("utf-8", "replace"), MAX_LOGGED_BODY
            )
            reply = Reply(400, "refused_body", {"error": str(error)})
            raise Refused(reply, str(error), prefix) from None
        events, rejects = entry_of(delivery, sub_app_id)
        answer = Answer(events, datetime.now(UTC), sub_app_id, rejects, pushed=True)
        with self._idle:
            if self._closing:  # the store is about to close: VOD sends it again
                return Reply(503, "failed", {"error": "shutting down: send it again"})
            self._in_flight += 1
        try:
            (result,) = self.store.save_answers([answer], holder=None)
        except StorageError as error:
            self.metrics.storage_error()
            self._failed(error)
            return Reply(503, "failed", {"error": "the event could not be stored: send it again"})
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
        self._recovered()
        if rejects or result.refused:
            log.warning(
                "pushed entry quarantined in vod_rejects",
                sub_app_id=sub_app_id,
                reason=rejects[0].reason if rejects else "the database refused it",
            )
            return Reply(200, "rejected", {"kept": "vod_rejects"})
        row_id = result.row_ids[0]
        if result.stored:
            log.debug("pushed event stored", sub_app_id=sub_app_id, row=row_id)
            return Reply(200, "stored", {"row": row_id})
        log.debug("pushed event found its row", sub_app_id=sub_app_id, row=row_id)
        return Reply(200, "duplicate", {"row": row_id})

    def _failed(self, error: StorageError) -> None:
        # One line per streak: VOD retries every failed push, a line each would flood.
        with self._idle:
            first, self._failing = not self._failing, True
        if first:
            log.warning(
                "pushed events cannot be stored; answering 503 so that VOD sends them again",
                error=describe(error),
            )

    def _recovered(self) -> None:
        with self._idle:
            was, self._failing = self._failing, False
        if was:
            log.info("pushed events are stored again")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "vodpoller"
        timeout = RECEIVE_TIMEOUT_SECONDS  # the socket's, for every read of the request

        def do_POST(self) -> None:
            matched, sub_app_id = route(self.path, receiver.path)
            try:
                if not matched:
                    raise Refused(Reply(403, "refused_token", {"error": "forbidden"}), "wrong path")
                body = self._body()
                reply = receiver.store_body(body, sub_app_id)
            except Refused as refused:
                self._refused(refused)
                return
            except OSError as error:  # the client stalled or went away: nobody to answer
                receiver.metrics.callback("refused_body")
                log.warning("callback refused: the body did not arrive", error=type(error).__name__)
                self.close_connection = True
                return
            receiver.metrics.callback(reply.outcome)
            self._answer(reply)

        def _other(self) -> None:
            matched, _ = route(self.path, receiver.path)
            if not matched:
                self._refused(
                    Refused(Reply(403, "refused_token", {"error": "forbidden"}), "wrong path")
                )
                return
            reply = Reply(405, "refused_method", {"error": "only POST"})
            self._refused(Refused(reply, f"method {one_line(self.command, 20)}"), allow=True)

        do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other  # noqa: N815

        def _body(self) -> bytes:
            deadline = time.monotonic() + RECEIVE_TIMEOUT_SECONDS
            encoding = self.headers.get("Transfer-Encoding")
            length = self.headers.get("Content-Length")
            if encoding is not None:
                if encoding.strip().lower() != "chunked":
                    raise _bad_body(f"Transfer-Encoding {one_line(encoding, 40)!r} is not chunked")
                return self._chunked(deadline)
            if length is None:
                return b""  # RFC 9112 6.3: a request without either has no body
            if not length.strip().isdigit():
                raise _bad_body("Content-Length is not a number")
            size = int(length)
            if size > receiver.max_body_bytes:
                raise _too_large(f"Content-Length {size}")
            body = self._read(size, deadline)
            if len(body) < size:
                raise _bad_body(f"the body ended after {len(body)} of {size} bytes")
            self.connection.settimeout(RECEIVE_TIMEOUT_SECONDS)  # for the answer
            return body

        def _chunked(self, deadline: float) -> bytes:
            parts: list[bytes] = []
            total = 0
            while True:
                line = self._line(deadline)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _bad_body("a broken chunked encoding") from None
                if size == 0:
                    while self._line(deadline).strip():  # trailers, up to the empty line
                        pass
                    self.connection.settimeout(RECEIVE_TIMEOUT_SECONDS)  # for the answer
                    return b"".join(parts)
                total += size
                if total > receiver.max_body_bytes:
                    raise _too_large(f"more than {receiver.max_body_bytes} bytes (chunked)")
                chunk = self._read(size, deadline)
                if len(chunk) < size:
                    raise _bad_body("the chunked body ended early")
                parts.append(chunk)
                self._line(deadline)  # the CRLF after the chunk

        def _line(self, deadline: float) -> bytes:
            self._pace(deadline)
            line = self.rfile.readline(MAX_CHUNK_LINE)
            if not line.endswith(b"\n"):
                raise _bad_body("a broken chunked encoding")
            return line

        def _read(self, size: int, deadline: float) -> bytes:
            parts: list[bytes] = []
            left = size
            while left:
                self._pace(deadline)
                part = self.rfile.read1(min(left, _READ_SIZE))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            return b"".join(parts)

        def _pace(self, deadline: float) -> None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the body took too long")
            self.connection.settimeout(left)

        def _refused(self, refused: Refused, *, allow: bool = False) -> None:
            reply = refused.reply
            receiver.metrics.callback(reply.outcome)
            fields: dict[str, Any] = {"status": reply.status, "reason": refused.reason}
            if refused.prefix is not None:
                fields["body_prefix"] = refused.prefix
            log.warning("callback refused", client=self.client_address[0], **fields)
            # The body may be left unread (413): the connection cannot serve another request.
            self.close_connection = True
            self._answer(reply, allow=allow)

        def _answer(self, reply: Reply, *, allow: bool = False) -> None:
            body = json.dumps(reply.body).encode() + b"\n"
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if allow:
                self.send_header("Allow", "POST")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # its request line holds the token; refusals get a line of their own above

    return Handler


def _bad_body(reason: str) -> Refused:
    return Refused(Reply(400, "refused_body", {"error": reason}), reason)


def _too_large(what: str) -> Refused:
    reason = f"the body is over max_body_bytes: {what}"
    return Refused(Reply(413, "refused_size", {"error": reason}), reason)


@contextlib.contextmanager
def serving(
    settings: ReceiverSettings, store: EventStore, metrics: Metrics
) -> Iterator[Receiver | None]:
    """The receiver for the length of the block when `[receiver] listen` is set; None
    otherwise. Closed before the block's store is."""
    if settings.address is None:
        yield None
        return
    receiver = Receiver(store, settings, metrics).start()
    try:
        yield receiver
    finally:
        receiver.close()
