"""`signature.verify` on requests signed by the SDK's own signer and by the tests' signer."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.sign import Sign
from tencentcloud.vod.v20180717.vod_client import VodClient

from tests.conftest import tc3_headers
from vodpoller.emulator.apierror import ApiError
from vodpoller.emulator.signature import SignedRequest, verify

SECRET_ID = "AKIDunitTest"
SECRET_KEY = "unit-test-secret-key"
SECRETS = {SECRET_ID: SECRET_KEY}
HOST = "127.0.0.1:18181"
BODY = b'{"EventHandles": ["h1", "h2"], "SubAppId": 1500000001}'
NOW = 1_750_000_000  # 2025-06-15T15:06:40Z


def request_from(headers: dict[str, str], body: bytes = BODY) -> SignedRequest:
    return SignedRequest("POST", "/", "", {k.lower(): v for k, v in headers.items()}, body)


def signed(body: bytes = BODY, timestamp: int = NOW, **options: Any) -> SignedRequest:
    """A request signed by the tests' own signer (tests/conftest.py)."""
    options.setdefault("host", HOST)
    return request_from(
        tc3_headers(
            options.pop("secret_id", SECRET_ID),
            options.pop("secret_key", SECRET_KEY),
            body=body,
            timestamp=timestamp,
            **options,
        ),
        body,
    )


def sdk_signed(
    params: dict[str, Any], *, secret_key: str = SECRET_KEY, unsigned_payload: bool = False
) -> tuple[SignedRequest, int]:
    """A request built and signed by the SDK itself, exactly as `VodClient` sends it."""
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=HOST, protocol="http"))
    profile.unsignedPayload = unsigned_payload
    client = VodClient(credential.Credential(SECRET_ID, secret_key), "", profile)
    request = RequestInternal(HOST, "POST", "/", header={})
    client._build_req_inter("ConfirmEvents", params, request)
    headers = {str(k): str(v) for k, v in request.header.items()}
    return request_from(headers, request.data.encode()), int(headers["X-TC-Timestamp"])


def sign_with_sdk_hmac(date: str, service: str, timestamp: int) -> SignedRequest:
    """A request whose signature is the SDK's `Sign.sign_tc3` over the given scope."""
    headers = {"Content-Type": "application/json", "Host": HOST, "X-TC-Timestamp": str(timestamp)}
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:application/json\nhost:{HOST}\n",
            "content-type;host",
            hashlib.sha256(BODY).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{digest}"
    headers["Authorization"] = (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/{scope}, SignedHeaders=content-type;host, "
        f"Signature={Sign.sign_tc3(SECRET_KEY, date, service, string_to_sign)}"
    )
    return request_from(headers)


def failure(request: SignedRequest, now: float = NOW) -> str:
    with pytest.raises(ApiError) as caught:
        verify(request, SECRETS, now)
    return caught.value.code


# -- accepted ---------------------------------------------------------------------------


def test_request_signed_by_the_sdk_is_accepted() -> None:
    request, timestamp = sdk_signed({"EventHandles": ["h1", "h2"], "SubAppId": 1500000001})
    assert verify(request, SECRETS, timestamp) == SECRET_ID


def test_sdk_request_with_unsigned_payload_is_accepted() -> None:
    request, timestamp = sdk_signed({"EventHandles": ["h1"]}, unsigned_payload=True)
    assert request.headers["x-tc-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert verify(request, SECRETS, timestamp) == SECRET_ID


def test_request_signed_with_the_sdk_hmac_over_the_right_scope_is_accepted() -> None:
    assert verify(sign_with_sdk_hmac("2025-06-15", "vod", NOW), SECRETS, NOW) == SECRET_ID


def test_request_signed_by_the_independent_signer_is_accepted() -> None:
    assert verify(signed(), SECRETS, NOW) == SECRET_ID


def test_signature_over_lower_cased_header_values_is_accepted() -> None:
    # x-tc-action's value has capitals, so the lower-cased signature really differs.
    request = signed(signed_headers=("content-type", "host", "x-tc-action"), lower_values=True)
    assert verify(request, SECRETS, NOW) == SECRET_ID


def test_more_signed_headers_than_the_sdk_signs_are_accepted() -> None:
    request = signed(signed_headers=("content-type", "host", "x-tc-action", "x-tc-timestamp"))
    assert verify(request, SECRETS, NOW) == SECRET_ID


def test_host_with_a_scheme_as_tccli_sends_it_is_accepted() -> None:
    assert verify(signed(host=f"http://{HOST}"), SECRETS, NOW) == SECRET_ID


@pytest.mark.parametrize("skew", [-300, 300])
def test_timestamp_exactly_300_seconds_off_is_accepted(skew: int) -> None:
    assert verify(signed(), SECRETS, NOW + skew) == SECRET_ID


# -- refused ----------------------------------------------------------------------------


def test_sdk_request_signed_with_another_key_fails_the_signature() -> None:
    request, timestamp = sdk_signed({"EventHandles": ["h1"]}, secret_key="not-the-key")
    assert failure(request, timestamp) == "AuthFailure.SignatureFailure"


def test_body_changed_after_signing_fails_the_signature() -> None:
    request, timestamp = sdk_signed({"EventHandles": ["h1"]})
    body = json.dumps({"EventHandles": ["h2"]}).encode()
    tampered = SignedRequest(request.method, request.path, "", request.headers, body)
    assert failure(tampered, timestamp) == "AuthFailure.SignatureFailure"


def test_signature_over_values_neither_raw_nor_lower_cased_fails() -> None:
    request = signed(signed_headers=("content-type", "host", "x-tc-action"))
    headers = dict(request.headers, **{"x-tc-action": "ConfirmEvents"})
    assert failure(request_from(headers)) == "AuthFailure.SignatureFailure"


def test_wrong_secret_key_fails_the_signature() -> None:
    assert failure(signed(secret_key="wrong")) == "AuthFailure.SignatureFailure"


def test_unknown_secret_id_is_not_found() -> None:
    assert failure(signed(secret_id="AKIDnobody")) == "AuthFailure.SecretIdNotFound"


@pytest.mark.parametrize("skew", [-301, 301, 86_400])
def test_timestamp_more_than_300_seconds_off_is_expired(skew: int) -> None:
    assert failure(signed(), NOW + skew) == "AuthFailure.SignatureExpire"


@pytest.mark.parametrize("date", ["2025-06-14", "2025-06-16"])
def test_scope_date_other_than_the_timestamps_utc_date_fails(date: str) -> None:
    assert failure(signed(date=date)) == "AuthFailure.SignatureFailure"
    assert failure(sign_with_sdk_hmac(date, "vod", NOW)) == "AuthFailure.SignatureFailure"


def test_scope_of_another_service_fails() -> None:
    assert failure(signed(service="cvm")) == "AuthFailure.SignatureFailure"
    assert failure(sign_with_sdk_hmac("2025-06-15", "cvm", NOW)) == "AuthFailure.SignatureFailure"


def test_scope_with_another_terminator_fails() -> None:
    request = signed()
    auth = request.headers["authorization"].replace("/tc3_request", "/tc2_request")
    assert failure(request_from(dict(request.headers, authorization=auth))) == (
        "AuthFailure.SignatureFailure"
    )


def test_signed_headers_lacking_host_fail() -> None:
    assert failure(signed(signed_headers=("content-type",))) == "AuthFailure.SignatureFailure"


def test_signed_headers_lacking_content_type_fail() -> None:
    assert failure(signed(signed_headers=("host",))) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer abc",
        "HmacSHA256 Credential=x",
        "TC3-HMAC-SHA256 nonsense",
        "TC3-HMAC-SHA256 Credential=AKIDunitTest/2025-06-15/vod/tc3_request, Signature=ab",
        "TC3-HMAC-SHA256 Credential=AKIDunitTest/vod/tc3_request, SignedHeaders=host, Signature=a",
    ],
)
def test_malformed_authorization_is_invalid(authorization: str | None) -> None:
    headers = dict(signed().headers)
    if authorization is None:
        del headers["authorization"]
    else:
        headers["authorization"] = authorization
    assert failure(request_from(headers)) == "AuthFailure.InvalidAuthorization"


def test_missing_timestamp_is_a_missing_parameter() -> None:
    headers = dict(signed().headers)
    del headers["x-tc-timestamp"]
    assert failure(request_from(headers)) == "MissingParameter"


def test_timestamp_that_is_not_a_number_is_an_invalid_parameter() -> None:
    headers = dict(signed().headers, **{"x-tc-timestamp": "yesterday"})
    assert failure(request_from(headers)) == "InvalidParameter"


# "²" passes str.isdigit() but not int(); Arabic-Indic digits pass both, yet are no timestamp.
@pytest.mark.parametrize(
    "timestamp",
    ["²", "\u0661\u0667\u0665\u0660000000", "+1750000000", " 1750000000"],
    ids=["superscript-two", "arabic-indic", "plus-sign", "leading-space"],
)
def test_timestamp_of_other_than_ascii_digits_is_an_invalid_parameter(timestamp: str) -> None:
    headers = dict(signed().headers, **{"x-tc-timestamp": timestamp})
    assert failure(request_from(headers)) == "InvalidParameter"


@pytest.mark.parametrize("digits", [30, 400, 5000])
def test_timestamp_too_large_for_a_float_is_expired(digits: int) -> None:
    headers = dict(signed().headers, **{"x-tc-timestamp": "9" * digits})
    # The server's clock is a float: float - int overflows past ~309 digits.
    assert failure(request_from(headers), NOW + 0.5) == "AuthFailure.SignatureExpire"


@pytest.mark.parametrize(
    "given",
    ["\u00e9" * 64, "\u7b7e\u540d", "", "A" * 64],
    ids=["latin-1", "cjk", "empty", "upper-case-hex"],
)
def test_signature_that_is_not_lower_case_hex_fails_the_signature(given: str) -> None:
    request = signed()
    authorization = request.headers["authorization"]
    forged = authorization[: authorization.index("Signature=")] + "Signature=" + given
    assert failure(request_from(dict(request.headers, authorization=forged))) == (
        "AuthFailure.SignatureFailure"
    )


def test_verification_uses_the_given_time_not_the_clock() -> None:
    fresh = signed(timestamp=int(time.time()))
    assert failure(fresh, NOW) == "AuthFailure.SignatureExpire"
