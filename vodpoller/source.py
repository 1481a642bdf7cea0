"""The VOD API behind a small interface: `pull(app) -> Batch` and `confirm(app, handles)`.
`VodEventSource` calls the official SDK; `LeaseQueueSource` serves the emulator's queue
in-process for tests that need no HTTP."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tencentcloud.common import credential as sdk_credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717.vod_client import VodClient

from vodpoller import __version__
from vodpoller.config import VodSettings, endpoint_host, is_loopback
from vodpoller.emulator.queue import LeaseQueue
from vodpoller.errors import (
    ConfigError,
    FatalSourceError,
    SourceError,
    TransientSourceError,
)
from vodpoller.ratelimit import TokenBucket

MAX_CONFIRM_HANDLES = 16
CREDENTIAL_CHAIN_TIMEOUT_SECONDS = 5.0

Entry = dict[str, Any]

# Codes worth another try: the network, throttling, the service's own hiccups, and answers
# the SDK could not read. Everything else needs someone to act (credentials, permissions, ...).
_TRANSIENT_CODES = frozenset(
    {
        "ClientNetworkError",
        "ServerNetworkError",
        "InternalError",
        "ServiceUnavailable",
        "ResourceUnavailable",
        "FailedOperation",
        "ClientError.MetadataError",
        "JSONDecodeError",
        "KeyError",
        "AttributeError",
    }
)
# What requests/urllib3 say when no connection was made, so no request reached the service.
_NOT_CONNECTED = ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError")
_TRANSIENT_PREFIXES = ("RequestLimitExceeded", "InternalError.", "ResourceUnavailable.")


class HandlesRejectedError(FatalSourceError):
    """ConfirmEvents refused handles as expired, unknown or already used; retrying won't help."""


@dataclass(frozen=True)
class Batch:
    """One `PullEvents` answer. The 30 s confirm budget starts at `answered_at` (monotonic)."""

    sub_app_id: int | None
    entries: tuple[Entry, ...] = ()
    answered_at: float = field(default_factory=time.monotonic)
    request_id: str | None = None

    def __len__(self) -> int:
        return len(self.entries)


class EventSource(Protocol):
    """Where events come from; each application is a separate queue."""

    def pull(self, sub_app_id: int | None) -> Batch: ...

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None: ...


def is_transient(code: str) -> bool:
    return code in _TRANSIENT_CODES or code.startswith(_TRANSIENT_PREFIXES)


def translate(error: TencentCloudSDKException, action: str) -> SourceError:
    """The SDK's exception as one of ours, keeping code and RequestId."""
    code = str(error.code)
    message = (
        error.message.decode("utf-8", "replace")
        if isinstance(error.message, bytes)
        else error.message
    )
    text = f"{action} failed: {code}: {message}"
    if error.requestId:
        text += f" (RequestId {error.requestId})"
    if is_transient(code):
        never_sent = code == "ClientNetworkError" and any(
            sign in str(message) for sign in _NOT_CONNECTED
        )
        return TransientSourceError(
            text, code=code, request_id=error.requestId, never_sent=never_sent
        )
    # The documented answer to an expired handle is a parameter error; a sub-code such as
    # InvalidParameterValue.SubAppId says something else and stays fatal.
    if action == "ConfirmEvents" and code == "InvalidParameterValue":
        return HandlesRejectedError(text, code=code, request_id=error.requestId)
    return FatalSourceError(text, code=code, request_id=error.requestId)


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


def _bypass_proxies_for_loopback(endpoint: str) -> None:
    """The SDK and requests honour HTTP(S)_PROXY; a loopback endpoint (the emulator) must never
    go through a proxy, so it joins NO_PROXY for this process. The SDK looks for the endpoint,
    port included, as a substring of NO_PROXY; requests for the host."""
    current = [
        h for h in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if h
    ]
    wanted = [h for h in (endpoint, "127.0.0.1", "localhost", "::1") if h not in current]
    if wanted:
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(current + wanted)


class VodEventSource:
    """The real API through the SDK: raw JSON kept (`call_json`), one client per thread,
    no SDK retryer (the poller retries inside its own deadlines), region breaker off."""

    def __init__(self, vod: VodSettings, credential: Any, rate_limit_per_second: float = 100.0):
        if is_loopback(endpoint_host(vod.endpoint)):
            _bypass_proxies_for_loopback(vod.endpoint)
        self._vod = vod
        self._credential = credential
        self._local = threading.local()
        self._buckets = {
            action: TokenBucket(rate_limit_per_second)
            for action in ("PullEvents", "ConfirmEvents", "DescribeEventsState")
        }

    def _client(self) -> VodClient:
        client: VodClient | None = getattr(self._local, "client", None)
        if client is None:
            http = HttpProfile(
                endpoint=self._vod.endpoint,
                protocol=self._vod.scheme,
                reqTimeout=self._vod.request_timeout_seconds,
            )
            profile = ClientProfile(
                httpProfile=http,
                disable_region_breaker=True,
                request_client=f"vodpoller-{__version__}",
                retryer=None,
            )
            client = VodClient(self._credential, self._vod.region, profile)
            self._local.client = client
        return client

    def _call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        self._buckets[action].take()
        try:
            answer = self._client().call_json(action, params)
        except TencentCloudSDKException as error:
            raise translate(error, action) from error
        except (ValueError, TypeError, LookupError) as error:
            # call_json parses the body itself, outside the SDK's own error wrapping: a body
            # that is not JSON, or an error envelope without Response/RequestId (KeyError).
            raise TransientSourceError(f"{action} failed: unreadable answer: {error}") from error
        response = answer.get("Response") if isinstance(answer, dict) else None
        if not isinstance(response, dict):
            raise TransientSourceError(f"{action} failed: the answer has no Response object")
        if isinstance(response.get("Error"), dict):
            # The SDK reads errors only under an exact JSON content type; be stricter than it.
            body = response["Error"]
            raise translate(
                TencentCloudSDKException(
                    str(body.get("Code")), str(body.get("Message")), response.get("RequestId")
                ),
                action,
            )
        return response

    def _params(self, sub_app_id: int | None) -> dict[str, Any]:
        return {} if sub_app_id is None else {"SubAppId": sub_app_id}

    def pull(self, sub_app_id: int | None) -> Batch:
        try:
            response = self._call("PullEvents", self._params(sub_app_id))
        except FatalSourceError as error:
            # An empty long-poll most likely answers ResourceNotFound: no events, not a failure.
            if error.code == "ResourceNotFound":
                return Batch(sub_app_id, request_id=error.request_id)
            raise
        answered_at = time.monotonic()
        event_set = response.get("EventSet")
        if event_set is None:
            event_set = []
        if not isinstance(event_set, list):
            raise TransientSourceError(
                f"PullEvents answered EventSet of type {type(event_set).__name__}, not a list: "
                + json.dumps(event_set)[:200]
            )
        entries = tuple(e for e in event_set if isinstance(e, dict))
        if len(entries) != len(event_set):
            raise TransientSourceError(
                "PullEvents answered EventSet entries that are not objects; nothing was stored "
                "and those events will be delivered again"
            )
        return Batch(sub_app_id, entries, answered_at, response.get("RequestId"))

    def backlog(self, sub_app_id: int | None) -> int:
        """`DescribeEventsState`: about how many events wait (a gauge, not a reason to pull)."""
        response = self._call("DescribeEventsState", self._params(sub_app_id))
        count = response.get("CountOfEventsToPull")
        if isinstance(count, bool) or not isinstance(count, int):
            raise TransientSourceError(f"DescribeEventsState answered {count!r} as the count")
        return count

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        if not 0 < len(handles) <= MAX_CONFIRM_HANDLES:
            raise ValueError(
                f"confirm takes 1 to {MAX_CONFIRM_HANDLES} handles, not {len(handles)}"
            )
        self._call("ConfirmEvents", {"EventHandles": list(handles), **self._params(sub_app_id)})


class LeaseQueueSource:
    """The emulator's queue served in-process: the fake `EventSource` for tests."""

    def __init__(self, queue: LeaseQueue, max_events: int = 16, wait_seconds: float = 0.0):
        self.queue = queue
        self.max_events = max_events
        self.wait_seconds = wait_seconds

    def pull(self, sub_app_id: int | None) -> Batch:
        entries = self.queue.pull(sub_app_id, self.max_events, self.wait_seconds)
        return Batch(sub_app_id, tuple(entries))

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        outcome = self.queue.confirm(sub_app_id, handles)
        if outcome.rejected:
            raise HandlesRejectedError(
                f"ConfirmEvents refused {len(outcome.rejected)} handle(s)",
                code="InvalidParameterValue",
            )
