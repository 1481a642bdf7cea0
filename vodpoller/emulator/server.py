"""The emulator's HTTP front: the signed VOD API on `/`, unsigned admin endpoints on
`/_emulator/*`. Answers the way the real gateway does: HTTP 200, `Content-Type:
application/json` exactly, the error envelope, and a fresh `RequestId` every time."""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vodpoller.emulator import signature
from vodpoller.emulator.api import (
    API_VERSION,
    EMPTY_RESPONSES,
    MAX_PULL_EVENTS,
    ApiSettings,
    VodApi,
)
from vodpoller.emulator.apierror import ApiError
from vodpoller.emulator.faults import FaultPlan, Outcome, decide
from vodpoller.emulator.generate import generate
from vodpoller.emulator.queue import AppId, LeaseQueue
from vodpoller.emulator.ratelimit import RateLimiter
from vodpoller.emulator.samples import load_samples

log = logging.getLogger(__name__)

# The emulator's well-known test pair, printed at start; never a real credential.
DEFAULT_SECRET_ID = "AKIDvodpollerEmulator"  # noqa: S105
DEFAULT_SECRET_KEY = "vodpoller-emulator-secret-key"  # noqa: S105
JSON = "application/json"
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class EmulatorOptions:
    """Checked on construction (`ValueError`), as the command line checks its options."""

    host: str = "127.0.0.1"
    port: int = 8750
    secret_id: str = DEFAULT_SECRET_ID
    secret_key: str = DEFAULT_SECRET_KEY
    lease_seconds: float = 30.0
    long_poll_seconds: float = 5.0
    max_events: int = MAX_PULL_EVENTS
    rate_limit: float = 100.0
    latency_ms: float = 0.0
    samples: bool = False
    empty_response: str = "error"
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = [
            problem
            for problem in (
                _integer_problem("port", self.port, 0, 65535),
                _integer_problem("max_events", self.max_events, 1, MAX_PULL_EVENTS),
                _number_problem("lease_seconds", self.lease_seconds, above=0),
                _number_problem("long_poll_seconds", self.long_poll_seconds, at_least=0),
                _number_problem("rate_limit", self.rate_limit, at_least=0),
                _number_problem("latency_ms", self.latency_ms, at_least=0),
            )
            if problem is not None
        ]
        if not self.secret_id or not self.secret_key:
            problems.append("secret_id and secret_key must not be empty")
        if self.empty_response not in EMPTY_RESPONSES:
            problems.append(
                f"empty_response must be one of {', '.join(EMPTY_RESPONSES)}, "
                f"not {self.empty_response!r}"
            )
        if problems:
            raise ValueError("bad emulator options: " + "; ".join(problems))


def _integer_problem(name: str, value: int, low: int, high: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{name} must be an integer from {low} to {high}, not {value!r}"
    return None


def _number_problem(
    name: str, value: float, *, above: float | None = None, at_least: float | None = None
) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"{name} must be a finite number, not {value!r}"
    if above is not None and not value > above:
        return f"{name} must be more than {above:g}, not {value!r}"
    if at_least is not None and not value >= at_least:
        return f"{name} must be at least {at_least:g}, not {value!r}"
    return None


class AdminError(Exception):
    """A bad admin request: HTTP 400 with `{"Error": message}`."""


class _BodyError(Exception):
    """A request whose body cannot be read: an admin request gets `status`, an API request
    the error envelope with `code`. Either way the connection is closed after the answer,
    since the bytes that follow cannot be told apart from the next request."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Emulator:
    """The emulator's state and its HTTP server; a context manager that serves in a thread."""

    def __init__(self, options: EmulatorOptions | None = None):
        self.options = options or EmulatorOptions()
        self.queue = LeaseQueue(self.options.lease_seconds)
        self.api = VodApi(
            self.queue,
            ApiSettings(
                long_poll_seconds=self.options.long_poll_seconds,
                max_events=self.options.max_events,
                empty_response=self.options.empty_response,
            ),
        )
        self.secrets = {self.options.secret_id: self.options.secret_key}
        self.limiter = RateLimiter(self.options.rate_limit)
        self.faults = FaultPlan()
        self._rng = random.Random(self.options.seed)
        self._rng_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()
        self.throttled = 0
        self._thread: threading.Thread | None = None
        self.server = _Server((self.options.host, self.options.port), _Handler, self)
        if self.options.samples:
            self.queue.enqueue(None, load_samples())

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def endpoint(self) -> str:
        """`host:port`, what `HttpProfile(endpoint=...)` and `vod.endpoint` want."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.05)

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.serve_forever, name="vod-emulator", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def random(self) -> random.Random:
        """A private generator: callers hold no lock, so each gets its own seeded child."""
        with self._rng_lock:
            return random.Random(self._rng.getrandbits(64))

    def count_request(self, action: str) -> None:
        with self._counts_lock:
            self.requests[action] += 1

    def count_throttled(self) -> None:
        with self._counts_lock:
            self.throttled += 1

    def stats(self) -> dict[str, Any]:
        counts = self.queue.counts()
        with self._counts_lock:
            requests = dict(self.requests)
            throttled = self.throttled
        return {
            "Queued": sum(c.queued for c in counts.values()),
            "Leased": sum(c.leased for c in counts.values()),
            "Confirmed": sum(c.confirmed for c in counts.values()),
            "Redelivered": self.queue.redelivered,
            "Throttled": throttled,
            "Requests": requests,
            "Applications": {
                _app_name(app): {"Queued": c.queued, "Leased": c.leased, "Confirmed": c.confirmed}
                for app, c in counts.items()
            },
        }


def _app_name(app: AppId) -> str:
    return "default" if app is None else str(app)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        emulator: Emulator,
    ):
        self.emulator = emulator
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle and the client's delayed ACK every
    # keep-alive answer would wait ~40 ms for the second one.
    disable_nagle_algorithm = True
    server: _Server
    _answering = False  # an answer has begun going out: too late for another one
    _for_admin = False  # the request is for /_emulator/: errors as HTTP status, not envelope
    _body_left_unread = False  # refused before its body was read: drain it before closing

    def finish(self) -> None:
        super().finish()
        if self._body_left_unread:
            self._drain_before_close()

    def _drain_before_close(self) -> None:
        """Closing a socket with unread input sends a reset, which can destroy the answer just
        written before the client reads it: say we are done, then read what is left, briefly."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        """Every request gets an answer, whatever goes wrong; only a `drop_rate` fault drops
        one, on purpose."""
        # One handler serves every request of a keep-alive connection: reset per request.
        self._answering = False
        self._for_admin = False
        try:
            self._route(method)
        except Exception:
            what = f"{method} {self.path!r} (X-TC-Action {self.headers.get('X-TC-Action')!r})"
            self.close_connection = True  # the request may be half read
            if self._answering:
                # The answer was already going out: the client went away, most likely.
                log.debug("could not finish the answer to %s", what, exc_info=True)
            else:
                log.exception("unexpected error serving %s; answered an internal error", what)
                self._answer_internal_error(what)

    def _answer_internal_error(self, what: str) -> None:
        """A bug: InternalError in the envelope, or HTTP 500 for an admin request."""
        try:
            if self._for_admin:
                self._send(500, {"Error": "the emulator failed unexpectedly; see its log"})
            else:
                self._send_response(
                    {
                        "Error": {
                            "Code": "InternalError",
                            "Message": "The emulator failed unexpectedly; see its log.",
                        }
                    }
                )
        except OSError:
            log.debug("could not answer %s", what, exc_info=True)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        admin = self._for_admin = url.path.startswith("/_emulator/")
        try:
            body = self._read_body()
        except _BodyError as error:
            self.close_connection = True
            self._body_left_unread = True
            if admin:
                self._send(error.status, {"Error": error.message})
            else:
                self.emulator.count_request(self.headers.get("X-TC-Action") or "(none)")
                self._send_response({"Error": {"Code": error.code, "Message": error.message}})
            return
        if admin:
            self._admin(method, url.path, parse_qs(url.query), body)
        else:
            self._api(method, url.path, url.query, body)

    def _read_body(self) -> bytes:
        if "Transfer-Encoding" in self.headers:
            raise _BodyError(
                400,
                "InvalidParameter",
                "Transfer-Encoding is not supported; send the body with a Content-Length.",
            )
        text = self.headers.get("Content-Length")
        if text is None:
            return b""
        text = text.strip()
        # Digits only: int() would also take "-5" (then read() waits for EOF), "1_0" or "+1".
        if not (text.isascii() and text.isdigit()):
            raise _BodyError(
                400,
                "InvalidParameter",
                f"Content-Length must be a non-negative integer, not {text!r}.",
            )
        if len(text) > len(str(MAX_BODY_BYTES)) or int(text) > MAX_BODY_BYTES:
            raise _BodyError(
                413,
                "RequestSizeLimitExceeded",
                f"The request body is larger than {MAX_BODY_BYTES} bytes.",
            )
        length = int(text)
        return self.rfile.read(length) if length else b""

    # -- the signed API ------------------------------------------------------------------

    def _api(self, method: str, path: str, query: str, body: bytes) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        action = headers.get("x-tc-action", "")
        self.emulator.count_request(action or "(none)")
        self._answer_api(signature.SignedRequest(method, path, query, headers, body), action)

    def _answer_api(self, request: signature.SignedRequest, action: str) -> None:
        faults = self.emulator.faults.for_action(action)
        delay = (self.emulator.options.latency_ms + faults.latency_ms) / 1000
        outcome = Outcome.ANSWER
        try:
            self._authenticate(request)
            if not self.emulator.limiter.allow(action):
                self.emulator.count_throttled()
                raise ApiError(
                    "RequestLimitExceeded",
                    "Your current request times equals to `limit` ("
                    f"{self.emulator.options.rate_limit:g}/s) of the action `{action}`.",
                )
            outcome, injected = decide(faults, self.emulator.random())
            if injected is not None:
                raise injected
            if outcome is Outcome.HTTP_ERROR:
                self._pause(delay)
                self._send(502, {"Error": "Bad Gateway (injected fault)"})
                return
            response = self.emulator.api.call(action, _parse_params(request.body))
        except ApiError as error:
            response = {"Error": {"Code": error.code, "Message": error.message}}
        self._pause(delay)
        if outcome is Outcome.DROP:
            # The work is done (events leased, confirm applied); the answer is lost.
            self.close_connection = True
            return
        self._send_response(response)

    def _send_response(self, response: dict[str, Any]) -> None:
        """HTTP 200 with `{"Response": {..., "RequestId"}}`, as the real gateway answers."""
        response["RequestId"] = str(uuid.uuid4())
        self._send(200, {"Response": response})

    def _authenticate(self, request: signature.SignedRequest) -> None:
        signature.verify(request, self.emulator.secrets, time.time())
        headers = request.headers
        version = headers.get("x-tc-version", "")
        if version != API_VERSION:
            raise ApiError(
                "NoSuchVersion", f"The API version `{version}` does not exist; use {API_VERSION}."
            )
        if not headers.get("x-tc-action"):
            raise ApiError("MissingParameter", "The request is missing the X-TC-Action header.")
        if headers["x-tc-action"] not in self.emulator.api.actions:
            raise ApiError(
                "InvalidAction",
                f"The action `{headers['x-tc-action']}` is not supported by the emulator.",
            )
        if request.method != "POST" or headers.get("content-type") != JSON:
            raise ApiError(
                "InvalidParameter",
                "The emulator serves POST with Content-Type: application/json only.",
            )

    @staticmethod
    def _pause(seconds: float) -> None:
        """Latency is added after the work, as a network would add it to the answer."""
        if seconds > 0:
            time.sleep(seconds)

    # -- admin ---------------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        routes = {
            ("POST", "/_emulator/events"): self._admin_events,
            ("POST", "/_emulator/generate"): self._admin_generate,
            ("GET", "/_emulator/stats"): self._admin_stats,
            ("POST", "/_emulator/faults"): self._admin_faults,
            ("GET", "/_emulator/faults"): self._admin_faults,
        }
        handler = routes.get((method, path))
        if handler is None:
            self._send(404, {"Error": f"no admin endpoint {method} {path}"})
            return
        try:
            document = json.loads(body) if body.strip() else None
        except ValueError as error:
            self._send(400, {"Error": f"the body is not JSON: {error}"})
            return
        try:
            self._send(200, handler(document, query))
        except AdminError as error:
            self._send(400, {"Error": str(error)})

    def _admin_events(self, document: Any, query: dict[str, list[str]]) -> dict[str, Any]:
        entries = document if isinstance(document, list) else [document]
        if not all(isinstance(entry, dict) for entry in entries):
            raise AdminError("the body must be one EventSet entry (an object) or a list of them")
        app = _app_from(query.get("sub_app_id", [None])[0])
        return {"Enqueued": self.emulator.queue.enqueue(app, entries)}

    def _admin_generate(self, document: Any, _query: dict[str, list[str]]) -> dict[str, Any]:
        if not isinstance(document, dict):
            raise AdminError('the body must be {"count": n, "sub_app_id": N?}')
        count = document.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise AdminError("count must be a non-negative integer")
        app = _app_from(document.get("sub_app_id"))
        events = generate(count, self.emulator.random())
        return {"Enqueued": self.emulator.queue.enqueue(app, events)}

    def _admin_stats(self, _document: Any, _query: dict[str, list[str]]) -> dict[str, Any]:
        return self.emulator.stats()

    def _admin_faults(self, document: Any, _query: dict[str, list[str]]) -> dict[str, Any]:
        if self.command == "POST":
            try:
                self.emulator.faults = FaultPlan.parse(
                    {} if document is None else document, actions=self.emulator.api.actions
                )
            except ValueError as error:
                raise AdminError(str(error)) from None
        return {"Faults": self.emulator.faults.model_dump()["actions"]}

    def _send(self, status: int, document: Any) -> None:
        payload = json.dumps(document, ensure_ascii=False).encode("utf-8")
        self._answering = True
        self.send_response(status)
        self.send_header("Content-Type", JSON)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


def _parse_params(body: bytes) -> dict[str, Any]:
    try:
        params = json.loads(body) if body else {}
    except ValueError:
        raise ApiError("InvalidParameter", "The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise ApiError("InvalidParameter", "The request body must be a JSON object.")
    return params


def _app_from(value: Any) -> AppId:
    if value is None or value == "":
        return None
    try:
        app = int(value)
    except (TypeError, ValueError):
        raise AdminError(f"sub_app_id must be an integer, not {value!r}") from None
    if app <= 0:
        raise AdminError("sub_app_id must be positive")
    return app
