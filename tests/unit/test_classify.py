"""`classify`: every failure of a call -> transient, fatal or rejected handles, with its code,
HTTP status, ambiguity and a short one-line message."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vodpoller import classify
from vodpoller.errors import (
    FatalSourceError,
    HandlesRejectedError,
    SourceError,
    StoppedSourceError,
    TransientSourceError,
)
from vodpoller.exchange import (
    NETWORK,
    STOPPED,
    TIMEOUT,
    UNDECODABLE,
    UNTRUSTED,
    ExchangeError,
    Reply,
)


def reply(
    status: int = 200,
    body: bytes = b"",
    content_type: str = "",
    *,
    location: str | None = None,
    complete: bool = True,
) -> Reply:
    return Reply(status, "Reason", content_type, location, body, complete)


@pytest.mark.parametrize(
    "code",
    [
        "InternalError",
        "InternalError.DbError",
        "RequestLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "RequestLimitExceeded.IPLimitExceeded",
        "ResourceUnavailable",
        "ResourceInsufficient.Cpu",
        "ServiceUnavailable",
        "FailedOperation",
    ],
)
@pytest.mark.parametrize("action", ["PullEvents", "ConfirmEvents"])
def test_the_services_hiccups_and_throttling_are_transient(code: str, action: str) -> None:
    error = classify.api_error(action, code, "boom", "req-1")
    assert type(error) is TransientSourceError
    assert (error.ambiguous, error.never_sent) == (False, False)


@pytest.mark.parametrize(
    "code",
    [
        "AuthFailure.SignatureFailure",
        "AuthFailure.SecretIdNotFound",
        "AuthFailure.SignatureExpire",
        "UnauthorizedOperation",
        "FailedOperation.InvalidVodUser",
        "ResourceNotFound.ServiceNotExist",
        "InvalidAction",
        "InternalErrorish",
        "SomethingNew",
    ],
)
@pytest.mark.parametrize("action", ["PullEvents", "ConfirmEvents"])
def test_credentials_permissions_and_unknown_codes_are_fatal(code: str, action: str) -> None:
    assert type(classify.api_error(action, code, "no", "req-1")) is FatalSourceError


@pytest.mark.parametrize(
    "code",
    [
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidParameter.EventHandles",
        "InvalidParameterValue.EventHandle",
        "RequestSizeLimitExceeded",
    ],
)
def test_a_parameter_error_to_a_confirm_means_rejected_handles(code: str) -> None:
    error = classify.api_error("ConfirmEvents", code, "EventHandle expired", "req-2")
    assert type(error) is HandlesRejectedError
    assert not isinstance(error, FatalSourceError | TransientSourceError)


@pytest.mark.parametrize(
    ("action", "code"),
    [
        ("ConfirmEvents", "InvalidParameterValue.SubAppId"),
        ("ConfirmEvents", "InvalidParameter.SubAppId"),
        ("PullEvents", "InvalidParameterValue"),
        ("PullEvents", "InvalidParameter"),
    ],
)
def test_a_wrong_sub_app_id_or_a_parameter_error_to_a_pull_is_fatal(action: str, code: str) -> None:
    assert type(classify.api_error(action, code, "x", None)) is FatalSourceError


def test_an_api_error_keeps_code_request_id_status_and_message() -> None:
    error = classify.api_error("PullEvents", "InternalError", "try later", "9f1c-req")
    assert (error.code, error.request_id, error.status) == ("InternalError", "9f1c-req", 200)
    assert str(error) == "PullEvents failed: InternalError: try later (RequestId 9f1c-req)"


def test_an_api_error_under_another_status_says_the_status() -> None:
    error = classify.api_error("PullEvents", "InternalError", "", None, status=500)
    assert str(error) == "PullEvents failed: HTTP 500, InternalError"
    assert error.status == 500


def test_a_huge_or_multiline_message_is_one_short_line() -> None:
    error = classify.api_error("PullEvents", "InternalError\n", "a\nb\r\tc " * 10_000, "r")
    text = str(error)
    assert text.startswith("PullEvents failed: InternalError: a b c a b c")
    assert text.endswith("… (RequestId r)")
    detail = text.removeprefix("PullEvents failed: InternalError: ").removesuffix(" (RequestId r)")
    assert len(detail) == 160


def test_no_line_is_longer_than_300_characters() -> None:
    error = classify.exchange_error(
        "PullEvents", ExchangeError("x" * 1000, kind=NETWORK, sent=True)
    )
    assert len(str(error)) == 300
    assert str(error).endswith("x…")


@given(st.text(), st.text(), st.one_of(st.none(), st.from_regex(r"[!-~]{1,128}", fullmatch=True)))
def test_every_api_error_message_is_one_bounded_printable_line(
    code: str, message: str, request_id: str | None
) -> None:
    text = str(classify.api_error("ConfirmEvents", code, message, request_id))
    assert len(text) <= classify.MAX_LINE
    assert not {unicodedata.category(char) for char in text} & {"Cc", "Cs", "Zl", "Zp"}
    text.encode("utf-8")  # no lone surrogates


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("a\x00b\x1fc\x7fd\x85e", 50, "a b c d e"),
        ("  spaced \n out  ", 50, "spaced out"),
        ("cut \ud83d", 50, "cut \ufffd"),
        ("abcdefghij", 5, "abcd…"),
        ("abcde", 5, "abcde"),
    ],
)
def test_one_line(text: str, limit: int, expected: str) -> None:
    assert classify.one_line(text, limit) == expected


# -- statuses and bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (reply(502), "with an empty body"),
        (reply(502, b"x" * 100, "text/plain"), "(text/plain, 100 bytes): xxxx"),
        (reply(502, b"x" * 3000, "text/html; charset=utf-8"), "(text/html, 3 kB): xxx"),
        (reply(502, b"a" * 1_600_000, ""), "(no Content-Type, 1.5 MB): aaa"),
        (reply(502, b"a" * 65536, "text/plain", complete=False), "(text/plain, more than 64 kB)"),
        (
            reply(502, b"<html><title>\n Bad &amp; <b>Gateway</b>\n</title><body>x", "text/html"),
            "(text/html, 55 bytes): Bad &amp; Gateway",
        ),
        (reply(502, b"<p>\n\n<b>First</b> line\nsecond", "text/html"), ": First line"),
        (reply(502, bytes(range(256)) * 4, "application/octet-stream"), "1 kB)"),
    ],
)
def test_a_body_is_described_by_type_size_and_gist(answer: Reply, said: str) -> None:
    described = classify.describe_body(answer)
    assert said in described
    assert len(described) <= 40 + 20 + classify.MAX_GIST


def test_binary_noise_has_no_gist() -> None:
    assert (
        classify.describe_body(reply(502, bytes(range(128, 256)) * 4, "x/y")) == "(x/y, 512 bytes)"
    )


@pytest.mark.parametrize("status", [400, 408, 429, 500, 502, 503, 504, 204, 206, 418, 599])
def test_other_statuses_are_transient_and_may_have_been_applied(status: int) -> None:
    error = classify.status_error("ConfirmEvents", reply(status))
    assert type(error) is TransientSourceError
    assert (error.code, error.status, error.ambiguous) == ("ServerNetworkError", status, True)
    assert str(error) == f"ConfirmEvents failed: HTTP {status} with an empty body"


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (301, "a redirect: check vod.endpoint and vod.scheme"),
        (308, "a redirect: check vod.endpoint and vod.scheme"),
        (401, "refused by a proxy or gateway: check HTTPS_PROXY and the network path"),
        (403, "refused by a proxy or gateway: check HTTPS_PROXY and the network path"),
        (404, "not the VOD API: check vod.endpoint"),
        (405, "not the VOD API: check vod.endpoint"),
    ],
)
def test_statuses_that_say_the_endpoint_or_a_proxy_is_wrong_are_fatal(
    status: int, advice: str
) -> None:
    error = classify.status_error("PullEvents", reply(status))
    assert type(error) is FatalSourceError
    assert str(error) == f"PullEvents failed: HTTP {status} with an empty body; {advice}"
    assert not error.ambiguous


def test_a_redirect_says_where_to() -> None:
    error = classify.status_error("PullEvents", reply(302, location="https://x.example/\n"))
    assert str(error) == (
        "PullEvents failed: HTTP 302 with an empty body; a redirect to https://x.example/: "
        "check vod.endpoint and vod.scheme"
    )


def test_an_unreadable_answer_says_why_and_what_came() -> None:
    page = reply(200, b"<title>Portal</title>", "text/html")
    error = classify.unreadable("PullEvents", "the answer is not JSON", page)
    assert type(error) is TransientSourceError
    assert (error.code, error.status, error.ambiguous) == ("UnreadableAnswer", 200, True)
    assert str(error) == (
        "PullEvents failed: unreadable answer, the answer is not JSON: "
        "HTTP 200 (text/html, 21 bytes): Portal"
    )


def test_an_unreadable_json_answer_does_not_quote_its_content() -> None:
    body = reply(200, b'{"Response": {"EventSet": "secret-ish"}}', "application/json")
    error = classify.unreadable("PullEvents", "EventSet is a string, not a list", body)
    assert "secret-ish" not in str(error)


# -- no answer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "sent", "expected"),
    [
        (NETWORK, False, (TransientSourceError, "ClientNetworkError", True, False)),
        (NETWORK, True, (TransientSourceError, "ClientNetworkError", False, True)),
        (TIMEOUT, True, (TransientSourceError, "ClientNetworkError", False, True)),
        (TIMEOUT, False, (TransientSourceError, "ClientNetworkError", True, False)),
        (UNDECODABLE, True, (TransientSourceError, "UnreadableAnswer", False, True)),
        (STOPPED, False, (StoppedSourceError, "Stopped", True, False)),
        (STOPPED, True, (StoppedSourceError, "Stopped", False, True)),
        (UNTRUSTED, False, (FatalSourceError, "ClientNetworkError", True, False)),
    ],
)
def test_no_answer_is_classified_by_what_happened_and_whether_the_request_left(
    kind: str, sent: bool, expected: tuple[type[SourceError], str, bool, bool]
) -> None:
    """expected: class, code, never_sent, ambiguous."""
    error = classify.exchange_error("ConfirmEvents", ExchangeError("why", kind=kind, sent=sent))
    assert (type(error), error.code, error.never_sent, error.ambiguous) == expected
    assert str(error) == "ConfirmEvents failed: why"


def test_a_credential_that_cannot_be_refreshed_never_sent_anything() -> None:
    error = classify.signing_error("PullEvents", "ClientNetworkError", "metadata\nunreachable")
    assert type(error) is TransientSourceError
    assert error.never_sent
    assert str(error) == (
        "PullEvents failed: could not sign the request: ClientNetworkError: metadata unreachable"
    )
    assert type(classify.signing_error("PullEvents", "ClientSideError", "no")) is FatalSourceError
