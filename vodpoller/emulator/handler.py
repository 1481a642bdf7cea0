"""The emulator's HTTP front: the signed VOD API on `/`, the admin endpoints (`control.py`) on
`/_emulator/*`. Answers the way the real gateway does: HTTP 200, `Content-Type:
application/json` exactly, the error envelope, and a fresh `RequestId` every time; and breaks
answers on purpose when the fault plan says so."""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from vodpoller.emulator import answers, control, requesthead, signature, wire
from vodpoller.emulator.answers import JSON, Answer
from vodpoller.emulator.api import API_VERSION
from vodpoller.emulator.apierror import ApiError
from vodpoller.emulator.faults import Outcome, decide

if TYPE_CHECKING:
    from vodpoller.emulator.server import Emulator, EmulatorServer

# The emulator's one logger, named as before the handler had a module of its own.
log = logging.getLogger("vodpoller.emulator.server")

LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024

# Request ids need to be unique, not secret: no system call per request (see queue.py).
_request_id_bits = random.Random(os.urandom(32)).getrandbits


def _request_id() -> str:
    return str(uuid.UUID(int=_request_id_bits(128), version=4))


class _BodyError(Exception):
    """A request whose body cannot be read: an admin request gets `status`, an API request
    the error envelope with `code`. Either way the connection is closed after the answer,
    since the bytes that follow cannot be told apart from the next request."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # With Nagle and the client's delayed ACK a keep-alive answer can wait ~40 ms; answers go
    # out in one write anyway, but a broken one may take several.
    disable_nagle_algorithm = True
    server: EmulatorServer
    _answering = False  # an answer has begun going out: too late for another one
    _for_admin = False  # the request is for /_emulator/: errors as HTTP status, not envelope
    _body_left_unread = False  # refused before its body was read: drain it before closing
    header_map: dict[str, str]  # lower-cased names: the first value of each
    raw_requestline: bytes  # set by handle_one_request

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

    def parse_request(self) -> bool:
        """What the standard library's `parse_request` does, with the head read by
        `requesthead` instead of the email package (a third of the CPU of a request)."""
        self.command = ""  # no method yet
        self.request_version = "HTTP/1.0"  # errors below are answered with a status line
        self.close_connection = True
        if self.emulator.closing.is_set():
            # Stopped: a request on a connection kept alive from before gets no answer, as from
            # a service that went away (no new connection is accepted either).
            return False
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        if not self.requestline.split():
            return False
        try:
            line = requesthead.parse_request_line(self.requestline)
            self.request_version = line.version
            fields = requesthead.read_headers(self.rfile)
        except requesthead.HeadError as error:
            self.send_error(error.status, error.message)
            return False
        self.command, self.path = line.method, line.target
        self.close_connection = line.version != "HTTP/1.1"
        self.headers = http.client.HTTPMessage()
        self.header_map = {}
        for name, value in fields:
            self.headers.set_raw(name, value)
            self.header_map.setdefault(name.lower(), value)  # the first, as Message.get
        connection = self.header_map.get("connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expect = self.header_map.get("expect", "").lower()
        if expect == "100-continue" and line.version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        """Every request gets an answer, whatever goes wrong; only a fault that drops or
        breaks answers does otherwise, on purpose."""
        # One handler serves every request of a keep-alive connection: reset per request.
        self._answering = False
        self._for_admin = False
        try:
            self._route(method)
        except Exception:
            what = f"{method} {self.path!r} (X-TC-Action {self.header_map.get('x-tc-action')!r})"
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
                self.emulator.count_request(self.header_map.get("x-tc-action") or "(none)")
                self._send_response({"Error": {"Code": error.code, "Message": error.message}})
            return
        if admin:
            self._admin(method, url.path, parse_qs(url.query), body)
        else:
            self._api(method, url.path, url.query, body)

    def _read_body(self) -> bytes:
        if "transfer-encoding" in self.header_map:
            raise _BodyError(
                400,
                "InvalidParameter",
                "Transfer-Encoding is not supported; send the body with a Content-Length.",
            )
        text = self.header_map.get("content-length")
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
        headers = self.header_map
        action = headers.get("x-tc-action", "")
        self.emulator.count_request(action or "(none)")
        self._answer_api(signature.SignedRequest(method, path, query, headers, body), action)

    def _answer_api(self, request: signature.SignedRequest, action: str) -> None:
        emulator = self.emulator
        faults = emulator.faults.for_action(action)
        delay = (emulator.options.latency_ms + faults.latency_ms) / 1000
        outcome = Outcome.ANSWER
        try:
            self._authenticate(request)
            if not emulator.limiter.allow(action):
                emulator.count_throttled(action)
                raise ApiError(
                    "RequestLimitExceeded",
                    "Your current request times equals to `limit` ("
                    f"{emulator.options.rate_limit:g}/s) of the action `{action}`.",
                )
            outcome, injected = decide(faults, emulator.random(action))
            if injected is not None:
                raise injected
            if outcome is Outcome.HTTP_ERROR:
                self._pause(delay)
                self._write(answers.http_error(faults))
                return
            response = emulator.api.call(action, _parse_params(request.body))
        except ApiError as error:
            response = {"Error": {"Code": error.code, "Message": error.message}}
        self._pause(delay)
        # The work is done (events leased, confirm applied); what follows is the answer.
        if outcome is Outcome.DROP:
            self.close_connection = True
            return
        if outcome is Outcome.ANSWER or outcome is Outcome.API_ERROR:
            self._send_response(response)
            return
        self.close_connection = True
        response["RequestId"] = _request_id()
        self._answering = True
        answers.send_broken(
            self.wfile.write,
            Answer(200, wire.answer(response)),
            outcome,
            faults,
            emulator.closing,
        )

    def _send_response(self, response: dict[str, Any]) -> None:
        """HTTP 200 with `{"Response": {..., "RequestId"}}`, as the real gateway answers."""
        response["RequestId"] = _request_id()
        self._write(Answer(200, wire.answer(response), close=self.close_connection))

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
        endpoint = control.ROUTES.get((method, path))
        if endpoint is None:
            self._send(404, {"Error": f"no admin endpoint {method} {path}"})
            return
        try:
            document = json.loads(body) if body.strip() else None
        except ValueError as error:
            self._send(400, {"Error": f"the body is not JSON: {error}"})
            return
        except RecursionError:
            self._send(400, {"Error": "the body is nested too deeply to be read as JSON"})
            return
        try:
            self._send(200, endpoint(self.emulator, method, document, query))
        except control.AdminError as error:
            self._send(400, {"Error": str(error)})

    def _send(self, status: int, document: Any) -> None:
        payload = json.dumps(document, ensure_ascii=False).encode("utf-8")
        self._write(Answer(status, payload, close=self.close_connection))

    def _write(self, answer: Answer) -> None:
        self._answering = True
        self.log_request(answer.status, len(answer.body))
        answers.send(self.wfile.write, answer)


def _parse_params(body: bytes) -> dict[str, Any]:
    try:
        params = json.loads(body) if body else {}
    except (ValueError, RecursionError):
        raise ApiError("InvalidParameter", "The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise ApiError("InvalidParameter", "The request body must be a JSON object.")
    return params
