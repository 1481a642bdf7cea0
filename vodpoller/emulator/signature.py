"""TC3-HMAC-SHA256 verification as the real API gateway does it (PROTOCOL.md §1), written here
with hashlib/hmac so that a bug in the SDK's signer cannot hide behind the same bug in ours."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from vodpoller.emulator.apierror import ApiError

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "vod"
TERMINATOR = "tc3_request"
MAX_CLOCK_SKEW_SECONDS = 300
MAX_TIMESTAMP_DIGITS = 12  # seconds up to the year 33658; any longer one is far off the clock
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs of an HTTP request. Header names are lower-cased, values raw."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


# Derived once a day per key rather than three HMACs on every request.
@functools.lru_cache(maxsize=64)
def signing_key(secret_key: str, date: str, service: str = SERVICE) -> bytes:
    k_date = _hmac(("TC3" + secret_key).encode("utf-8"), date)
    k_service = _hmac(k_date, service)
    return _hmac(k_service, TERMINATOR)


def canonical_request(
    request: SignedRequest, signed_headers: list[str], *, lower_values: bool
) -> str:
    header_lines = ""
    for name in signed_headers:
        value = request.headers.get(name, "").strip()
        header_lines += f"{name}:{value.lower() if lower_values else value}\n"
    if request.headers.get("x-tc-content-sha256") == UNSIGNED_PAYLOAD:
        payload = UNSIGNED_PAYLOAD.encode()
    elif request.method == "GET":
        payload = b""
    else:
        payload = request.body
    return "\n".join(
        [
            request.method,
            request.path or "/",
            request.query if request.method == "GET" else "",
            header_lines,
            ";".join(signed_headers),
            hashlib.sha256(payload).hexdigest(),
        ]
    )


def signature(secret_key: str, date: str, timestamp: str, canonical: str) -> str:
    scope = f"{date}/{SERVICE}/{TERMINATOR}"
    string_to_sign = "\n".join(
        [ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    key = signing_key(secret_key, date)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _parse_authorization(value: str) -> dict[str, str]:
    if not value.startswith(ALGORITHM + " "):
        raise ApiError(
            "AuthFailure.InvalidAuthorization",
            f"Authorization header must start with '{ALGORITHM} '.",
        )
    fields: dict[str, str] = {}
    for part in value[len(ALGORITHM) + 1 :].split(","):
        name, sep, field_value = part.strip().partition("=")
        if not sep:
            raise ApiError(
                "AuthFailure.InvalidAuthorization", f"Malformed Authorization field {part!r}."
            )
        fields[name] = field_value
    missing = {"Credential", "SignedHeaders", "Signature"} - fields.keys()
    if missing:
        raise ApiError(
            "AuthFailure.InvalidAuthorization",
            f"Authorization lacks {', '.join(sorted(missing))}.",
        )
    return fields


def verify(request: SignedRequest, secrets: Mapping[str, str], now: float) -> str:
    """Check the request's signature; return the SecretId that signed it or raise `ApiError`."""
    fields = _parse_authorization(request.headers.get("authorization", ""))
    credential = fields["Credential"].split("/")
    if len(credential) != 4:
        raise ApiError(
            "AuthFailure.InvalidAuthorization",
            "Credential must be SecretId/Date/Service/tc3_request.",
        )
    secret_id, date, service, terminator = credential

    timestamp = request.headers.get("x-tc-timestamp", "")
    if not timestamp:
        raise ApiError("MissingParameter", "The request is missing the X-TC-Timestamp header.")
    # isascii(): "²" and other Unicode digits pass isdigit() but are no timestamp (int() may
    # even raise). The length cap keeps int() and float arithmetic on huge values away.
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise ApiError("InvalidParameter", "X-TC-Timestamp must be an integer of seconds.")
    if len(timestamp) > MAX_TIMESTAMP_DIGITS or abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise ApiError(
            "AuthFailure.SignatureExpire", "The signature is expired, please request again."
        )
    utc_date = datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d")
    if service != SERVICE or terminator != TERMINATOR or date != utc_date:
        raise ApiError(
            "AuthFailure.SignatureFailure",
            "The credential scope must be <UTC date of X-TC-Timestamp>/vod/tc3_request.",
        )
    secret_key = secrets.get(secret_id)
    if secret_key is None:
        raise ApiError("AuthFailure.SecretIdNotFound", "The SecretId is not found.")

    signed_headers = fields["SignedHeaders"].split(";")
    if not {"content-type", "host"} <= set(signed_headers):
        raise ApiError(
            "AuthFailure.SignatureFailure", "SignedHeaders must include content-type and host."
        )
    # Bytes: compare_digest refuses str with non-ASCII characters (TypeError).
    given = fields["Signature"].encode("utf-8", "replace")
    for lower_values in (False, True):
        canonical = canonical_request(request, signed_headers, lower_values=lower_values)
        expected = signature(secret_key, date, timestamp, canonical).encode("ascii")
        if hmac.compare_digest(expected, given):
            return secret_id
    raise ApiError(
        "AuthFailure.SignatureFailure",
        "The provided credentials could not be validated. Please check your signature is correct.",
    )
