"""The VOD API behind a small interface: `pull(app) -> Batch` and `confirm(app, handles)`.
`VodEventSource` signs with the official SDK and sends through `exchange` (one deadline for
the whole request); `LeaseQueueSource` serves the emulator's queue in-process for tests."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import certifi
from tencentcloud.common import credential as sdk_credential
from tencentcloud.common.abstract_client import AbstractClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from vodpoller import __version__, classify, proxy
from vodpoller.config import VodSettings, endpoint_host
from vodpoller.emulator.queue import LeaseQueue
from vodpoller.envelope import Answer, Delivery, UnreadableError, delivery_of, read_answer
from vodpoller.errors import (
    ConfigError,
    FatalSourceError,
    HandlesRejectedError,
    TransientSourceError,
)
from vodpoller.exchange import ExchangeError, HttpClient, Reply, Target
from vodpoller.ratelimit import TokenBucket

__all__ = ["Batch", "Delivery", "EventSource", "HandlesRejectedError", "VodEventSource"]

MAX_CONFIRM_HANDLES: Final = 16
CREDENTIAL_CHAIN_TIMEOUT_SECONDS: Final = 5.0
# 16 events of a few kB each make a normal answer; anything near this is hostile or broken.
MAX_ANSWER_BYTES: Final = 32 * 1024 * 1024
MAX_ERROR_BODY_BYTES: Final = 64 * 1024  # of an error page: enough to say what it was

Entry = dict[str, Any]


@dataclass(frozen=True)
class Batch:
    """One `PullEvents` answer, every entry as received (`deliveries`, in order).

    `sent_at` (monotonic): when the pull went out; the service leases the events from about
    then, so the 30 s confirm budget counts from here. `answered_at`: when the answer was read.
    """

    sub_app_id: int | None
    deliveries: tuple[Delivery, ...] = ()
    sent_at: float = field(default_factory=time.monotonic)
    answered_at: float = field(default_factory=time.monotonic)
    request_id: str | None = None

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The entries that are fine, parsed."""
        return tuple(d.entry for d in self.deliveries if d.entry is not None)

    @property
    def rejects(self) -> tuple[Delivery, ...]:
        """The entries with a problem: keep their text, confirm their handle if they have one."""
        return tuple(d for d in self.deliveries if d.problem is not None)

    def __len__(self) -> int:
        return len(self.deliveries)


class EventSource(Protocol):
    """Where events come from; each application is a separate queue."""

    def pull(self, sub_app_id: int | None) -> Batch: ...

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None: ...


def resolve_credential(vod: VodSettings) -> Any:
    """Static keys from the settings, else the SDK's chain (profile file, CVM role, TKE OIDC)."""
    if vod.secret_id is not None and vod.secret_key is not None:
        try:
            return sdk_credential.Credential(
                vod.secret_id.get_secret_value(),
                vod.secret_key.get_secret_value(),
                vod.token.get_secret_value() if vod.token else None,
            )
        except TencentCloudSDKException as error:
            raise ConfigError(f"vod.secret_id/secret_key: {error.message}") from None
    return _credential_from_chain()


def _credential_from_chain() -> Any:
    found: list[Any] = []
    failed: list[BaseException] = []

    def look() -> None:
        try:
            found.append(sdk_credential.DefaultCredentialProvider().get_credentials())
        except (TencentCloudSDKException, OSError) as error:
            # With nothing configured the SDK raises OSError("TKE_REGION not exist").
            failed.append(error)

    # The CVM metadata lookup has no timeout of its own; do not let it hang the start.
    worker = threading.Thread(target=look, name="credential-chain", daemon=True)
    worker.start()
    worker.join(CREDENTIAL_CHAIN_TIMEOUT_SECONDS)
    if found:
        return found[0]
    raise ConfigError(
        "no Tencent Cloud credentials found: set TENCENTCLOUD_SECRET_ID and "
        "TENCENTCLOUD_SECRET_KEY, or vod.secret_id and vod.secret_key in the configuration, "
        "or [default] in ~/.tencentcloud/credentials, or run on a CVM with a role"
    )


def _target(vod: VodSettings, tls: ssl.SSLContext | None) -> Target:
    host = endpoint_host(vod.endpoint)
    rest = vod.endpoint[len(host) :].lstrip(":")
    port = int(rest) if rest else (443 if vod.scheme == "https" else 80)
    try:
        through = proxy.from_environment(host)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if vod.scheme == "http":
        return Target(host, port, None, through)
    return Target(host, port, tls or ssl.create_default_context(cafile=certifi.where()), through)


@dataclass
class _Caller:
    """What one thread calls with: the SDK client signs (it is not thread-safe), `http` sends."""

    signer: _VodSigner
    http: HttpClient


class _VodSigner(AbstractClient):  # type: ignore[misc]  # the SDK has no type hints
    """The SDK's client for VOD as far as signing goes: what `VodClient` sets, without
    importing the VOD models behind it (17 MB of memory this daemon never uses)."""

    _apiVersion = "2018-07-17"  # noqa: N815 (the name the SDK reads)
    _endpoint = "vod.tencentcloudapi.com"
    _service = "vod"


class VodEventSource:
    """The real API. The SDK signs each request (TC3-HMAC-SHA256, its credential chain);
    `exchange` sends it under one deadline for the whole request, `request_timeout_seconds`,
    which a set `stop` event also cuts short; `envelope` reads the answer, keeping every entry
    as received; `classify` turns every failure into a `SourceError`. Thread-safe: each
    thread has its own signer and connection. `close()` when done."""

    def __init__(
        self,
        vod: VodSettings,
        credential: Any,
        rate_limit_per_second: float = 100.0,
        *,
        stop: threading.Event | None = None,
        tls: ssl.SSLContext | None = None,
        request_timeout_seconds: float | None = None,
    ):
        self._vod = vod
        self._credential = credential
        self._target = _target(vod, tls)
        self._seconds = request_timeout_seconds or vod.request_timeout_seconds
        self._stop = stop
        self._callers: dict[threading.Thread, _Caller] = {}
        self._lock = threading.Lock()
        # PullEvents and ConfirmEvents are paced by the poller (pacing.py), which adapts to
        # throttling; the backlog gauge's calls are few and paced here.
        self._buckets = {"DescribeEventsState": TokenBucket(rate_limit_per_second)}

    def _caller(self) -> _Caller:
        thread = threading.current_thread()
        with self._lock:
            caller = self._callers.get(thread)
            if caller is None:
                for gone in [t for t in self._callers if not t.is_alive()]:
                    self._callers.pop(gone).http.close()
                profile = ClientProfile(
                    httpProfile=HttpProfile(endpoint=self._vod.endpoint, protocol=self._vod.scheme),
                    disable_region_breaker=True,
                    request_client=f"vodpoller-{__version__}",
                )
                signer = _VodSigner(self._credential, self._vod.region, profile)
                caller = self._callers[thread] = _Caller(signer, HttpClient(self._target))
            return caller

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            callers, self._callers = list(self._callers.values()), {}
        for caller in callers:
            caller.http.close()

    def _send(self, action: str, params: dict[str, Any]) -> tuple[Reply, float, float]:
        """Sign and send; the answer with when the request went out and when it was read."""
        bucket = self._buckets.get(action)
        if bucket is not None:
            bucket.take()
        caller = self._caller()
        request = RequestInternal(
            self._vod.endpoint, "POST", "/", header={"X-TC-TraceId": str(uuid.uuid4())}
        )
        try:
            # The SDK's own builder (a private method): its headers, JSON body and signature.
            caller.signer._build_req_inter(action, params, request)
        except TencentCloudSDKException as error:
            raise classify.signing_error(action, str(error.code), _text(error.message)) from error
        except OSError as error:  # a credential provider that could not refresh
            raise classify.signing_error(action, type(error).__name__, str(error)) from error
        sent_at = time.monotonic()
        try:
            reply = caller.http.post(
                request.header,
                request.data.encode("utf-8"),
                seconds=self._seconds,
                # A stop cuts a long poll short; a confirm goes on: what is stored must be
                # confirmed on the way out (its own deadline still bounds it).
                stop=None if action == "ConfirmEvents" else self._stop,
                max_body=MAX_ANSWER_BYTES,
                max_error_body=MAX_ERROR_BODY_BYTES,
            )
        except ExchangeError as error:
            raise classify.exchange_error(action, error) from error
        return reply, sent_at, time.monotonic()

    def _answer(self, action: str, reply: Reply) -> Answer:
        """The Response of a successful answer; every other answer raises its `SourceError`."""
        if reply.status == 200 and not reply.complete:
            raise classify.unreadable(
                action, f"longer than {MAX_ANSWER_BYTES // (1024 * 1024)} MB", reply
            )
        try:
            answer = read_answer(reply.body)
        except UnreadableError as error:
            if reply.status != 200:
                raise classify.status_error(action, reply) from None
            raise classify.unreadable(action, str(error), reply) from None
        if answer.error_code is not None:
            raise classify.api_error(
                action, answer.error_code, answer.error_message, answer.request_id, reply.status
            )
        if reply.status != 200:
            raise classify.status_error(action, reply)
        return answer

    def _call(self, action: str, params: dict[str, Any]) -> Answer:
        reply, _sent_at, _answered_at = self._send(action, params)
        return self._answer(action, reply)

    @staticmethod
    def _params(sub_app_id: int | None) -> dict[str, Any]:
        return {} if sub_app_id is None else {"SubAppId": sub_app_id}

    def pull(self, sub_app_id: int | None) -> Batch:
        reply, sent_at, answered_at = self._send("PullEvents", self._params(sub_app_id))
        try:
            answer = self._answer("PullEvents", reply)
        except FatalSourceError as error:
            # An empty long-poll most likely answers ResourceNotFound: no events, not a failure.
            if error.code == "ResourceNotFound":
                return Batch(sub_app_id, (), sent_at, answered_at, error.request_id)
            raise
        return Batch(sub_app_id, answer.event_set or (), sent_at, answered_at, answer.request_id)

    def backlog(self, sub_app_id: int | None) -> int:
        """`DescribeEventsState`: about how many events wait (a gauge, not a reason to pull)."""
        answer = self._call("DescribeEventsState", self._params(sub_app_id))
        count = answer.fields.get("CountOfEventsToPull")
        if isinstance(count, bool) or not isinstance(count, int):
            raise TransientSourceError(
                "DescribeEventsState failed: unreadable answer, CountOfEventsToPull is "
                + classify.one_line(repr(count), 40),
                code=classify.UNREADABLE,
                request_id=answer.request_id,
            )
        return count

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        """Confirm handles exactly as `pull` gave them. `HandlesRejectedError`: they are gone."""
        if not 0 < len(handles) <= MAX_CONFIRM_HANDLES:
            raise ValueError(
                f"confirm takes 1 to {MAX_CONFIRM_HANDLES} handles, not {len(handles)}"
            )
        if not all(isinstance(handle, str) and handle for handle in handles):
            raise ValueError("a handle to confirm must be a non-empty string")
        self._call("ConfirmEvents", {"EventHandles": list(handles), **self._params(sub_app_id)})


def _text(message: Any) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)


class LeaseQueueSource:
    """The emulator's queue served in-process: the fake `EventSource` for tests."""

    def __init__(self, queue: LeaseQueue, max_events: int = 16, wait_seconds: float = 0.0):
        self.queue = queue
        self.max_events = max_events
        self.wait_seconds = wait_seconds

    def pull(self, sub_app_id: int | None) -> Batch:
        sent_at = time.monotonic()
        entries = self.queue.pull(sub_app_id, self.max_events, self.wait_seconds)
        return Batch(sub_app_id, tuple(delivery_of(entry) for entry in entries), sent_at)

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        outcome = self.queue.confirm(sub_app_id, handles)
        if outcome.rejected:
            raise HandlesRejectedError(
                f"ConfirmEvents refused {len(outcome.rejected)} handle(s)",
                code="InvalidParameterValue",
            )
