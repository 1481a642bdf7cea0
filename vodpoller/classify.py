"""Pure: every way a call to the VOD API can fail -> one `SourceError` (transient, fatal, or
rejected handles) with the code, the HTTP status and a short one-line reason."""

from __future__ import annotations

import re
from typing import Final

from vodpoller.errors import (
    FatalSourceError,
    HandlesRejectedError,
    SourceError,
    StoppedSourceError,
    TransientSourceError,
)
from vodpoller.exchange import STOPPED, UNDECODABLE, UNTRUSTED, ExchangeError, Reply

# Our codes for failures that carry none of the API's: the first two are the SDK's names.
NETWORK_ERROR: Final = "ClientNetworkError"  # no complete answer
HTTP_ERROR: Final = "ServerNetworkError"  # an HTTP status other than 200, no API error in it
UNREADABLE: Final = "UnreadableAnswer"  # an answer that is not the API's JSON
STOPPED_CODE: Final = "Stopped"  # a stop request cut the call short

MAX_LINE: Final = 300
MAX_DETAIL: Final = 160  # of the service's own message
MAX_GIST: Final = 80  # of a page's title or first line

# Worth another try: the service's hiccups, throttling, and everything that is not an answer.
_TRANSIENT_FAMILIES: Final = frozenset(
    {
        "InternalError",
        "RequestLimitExceeded",
        "ResourceUnavailable",
        "ResourceInsufficient",
        "ServiceUnavailable",
    }
)
_TRANSIENT_CODES: Final = frozenset(
    {"FailedOperation", NETWORK_ERROR, HTTP_ERROR, UNREADABLE, STOPPED_CODE}
)
# Statuses that say the endpoint or a proxy is wrong, not busy: someone must act.
_FATAL_STATUSES: Final = {
    301: "a redirect: check vod.endpoint and vod.scheme",
    302: "a redirect: check vod.endpoint and vod.scheme",
    303: "a redirect: check vod.endpoint and vod.scheme",
    307: "a redirect: check vod.endpoint and vod.scheme",
    308: "a redirect: check vod.endpoint and vod.scheme",
    401: "refused by a proxy or gateway: check HTTPS_PROXY and the network path",
    403: "refused by a proxy or gateway: check HTTPS_PROXY and the network path",
    404: "not the VOD API: check vod.endpoint",
    405: "not the VOD API: check vod.endpoint",
}
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SURROGATES: Final = re.compile("[\ud800-\udfff]")
_TITLE: Final = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TAG: Final = re.compile(r"<[^>]*>")


def one_line(text: str, limit: int = MAX_DETAIL) -> str:
    """`text` on one line of at most `limit` characters, printable and encodable."""
    text = " ".join(_UNPRINTABLE.sub(" ", _SURROGATES.sub("\ufffd", text)).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def is_transient(code: str) -> bool:
    return code in _TRANSIENT_CODES or code.split(".", 1)[0] in _TRANSIENT_FAMILIES


def rejects_handles(action: str, code: str) -> bool:
    """ConfirmEvents says the handles are no good: expired, unknown, malformed. The docs say
    only "a parameter error (4000)" for a handle older than 30 s, so any InvalidParameter* or
    InvalidParameterValue* counts, and a request too large (overlong handles), but not a
    wrong SubAppId: that is the configuration's fault."""
    family = code.split(".", 1)[0]
    return (
        action == "ConfirmEvents"
        and (
            family in ("InvalidParameter", "InvalidParameterValue")
            or code.startswith("RequestSize")
        )
        and not code.endswith(".SubAppId")
    )


def _line(action: str, text: str, request_id: str | None = None) -> str:
    suffix = f" (RequestId {request_id})" if request_id else ""
    return one_line(f"{action} failed: {text}", MAX_LINE - len(suffix)) + suffix


def api_error(
    action: str, code: str, message: str, request_id: str | None, status: int = 200
) -> SourceError:
    """The API's own error answer."""
    code = one_line(code, 64) or "(empty)"
    text = f"{code}: {one_line(message)}" if message.strip() else code
    if status != 200:
        text = f"HTTP {status}, {text}"
    line = _line(action, text, request_id)
    if rejects_handles(action, code):
        return HandlesRejectedError(line, code=code, request_id=request_id, status=status)
    if is_transient(code):
        return TransientSourceError(line, code=code, request_id=request_id, status=status)
    return FatalSourceError(line, code=code, request_id=request_id, status=status)


def _size(count: int, complete: bool) -> str:
    if count < 1024:
        text = f"{count} bytes"
    elif count < 1024 * 1024:
        text = f"{round(count / 1024)} kB"
    else:
        text = f"{count / (1024 * 1024):.1f} MB"
    return text if complete else f"more than {text}"


def _gist(body: bytes) -> str:
    """A page's title, else its first line of text; nothing for binary noise."""
    text = body[:65536].decode("utf-8", "replace")
    if text.count("\ufffd") > len(text) // 10:
        return ""
    title = _TITLE.search(text)
    if title:
        return one_line(_TAG.sub(" ", title.group(1)), MAX_GIST)
    for line in _TAG.sub(" ", text).splitlines():
        if line.strip():
            return one_line(line, MAX_GIST)
    return ""


def describe_body(reply: Reply, *, gist: bool = True) -> str:
    """'with an empty body', or '(text/html, 3 kB): 502 Bad Gateway'."""
    if not reply.body:
        return "with an empty body"
    content_type = one_line(reply.content_type.split(";")[0], 40) or "no Content-Type"
    text = f"({content_type}, {_size(len(reply.body), reply.complete)})"
    detail = _gist(reply.body) if gist else ""
    return f"{text}: {detail}" if detail else text


def status_error(action: str, reply: Reply) -> SourceError:
    """An HTTP status other than 200 whose body holds no API error."""
    what = f"HTTP {reply.status} {describe_body(reply)}"
    advice = _FATAL_STATUSES.get(reply.status)
    if advice is not None:
        if reply.location and 300 <= reply.status < 400:
            advice = f"a redirect to {one_line(reply.location, 100)}: {advice.split(': ', 1)[1]}"
        return FatalSourceError(
            _line(action, f"{what}; {advice}"), code=HTTP_ERROR, status=reply.status
        )
    # A gateway's error may come after the service acted: the outcome is unknown.
    return TransientSourceError(
        _line(action, what), code=HTTP_ERROR, status=reply.status, ambiguous=True
    )


def unreadable(action: str, reason: str, reply: Reply) -> TransientSourceError:
    """An answer that is not the API's JSON: the service may have acted on the request."""
    body = describe_body(reply, gist="json" not in reply.content_type.lower())
    text = f"unreadable answer, {reason}: HTTP {reply.status} {body}"
    return TransientSourceError(
        _line(action, text), code=UNREADABLE, status=reply.status, ambiguous=True
    )


def exchange_error(action: str, error: ExchangeError) -> SourceError:
    """No usable answer at all."""
    line = _line(action, error.reason)
    if error.kind == STOPPED:
        return StoppedSourceError(
            line, code=STOPPED_CODE, never_sent=not error.sent, ambiguous=error.sent
        )
    if error.kind == UNTRUSTED:  # fails before the request goes out; retrying will not help
        return FatalSourceError(line, code=NETWORK_ERROR, never_sent=True)
    code = UNREADABLE if error.kind == UNDECODABLE else NETWORK_ERROR
    return TransientSourceError(
        line, code=code, status=error.status, never_sent=not error.sent, ambiguous=error.sent
    )


def signing_error(action: str, code: str, message: str) -> SourceError:
    """The request could not be built (credentials from the SDK's chain failed to refresh):
    it never left."""
    line = _line(action, f"could not sign the request: {code}: {one_line(message)}")
    kind = TransientSourceError if is_transient(code) else FatalSourceError
    return kind(line, code=code, never_sent=True)


# What someone has to do about a fatal error, by code family (the first part of the code).
_REMEDIES: Final = {
    "AuthFailure": (
        "check the credentials: TENCENTCLOUD_SECRET_ID/TENCENTCLOUD_SECRET_KEY, vod.secret_id/"
        "vod.secret_key or the credential files (`vodpoller check` says which are used)"
    ),
    "UnauthorizedOperation": (
        "grant the key's CAM user or role vod:PullEvents and vod:ConfirmEvents on these "
        "applications"
    ),
    "FailedOperation": "activate VOD for this account (FailedOperation.InvalidVodUser)",
    "ResourceNotFound": "activate VOD for this account (ResourceNotFound.ServiceNotExist)",
    "InvalidAction": "vod.endpoint does not serve the VOD API: check it",
    "NoSuchVersion": "vod.endpoint does not serve the VOD API: check it",
    "UnsupportedRegion": "check vod.region",
    "ServerNetworkError": "check vod.endpoint, vod.scheme and any proxy (HTTPS_PROXY)",
}


def remedy(error: SourceError) -> str:
    """One line on what to fix for a fatal error."""
    code = error.code or ""
    if code.endswith(".SubAppId"):
        return "check vod.sub_app_ids: VOD does not know one of them (or the account's default)"
    family = code.split(".", 1)[0]
    if family in _REMEDIES:
        return _REMEDIES[family]
    if error.status in _FATAL_STATUSES:
        return _FATAL_STATUSES[error.status]
    return "see the error; `vodpoller check` probes the configuration, credentials and API"
