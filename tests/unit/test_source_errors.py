"""`source.py`: how SDK errors are sorted into transient, fatal and rejected handles."""

from __future__ import annotations

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from vodpoller.errors import FatalSourceError, TransientSourceError
from vodpoller.source import HandlesRejectedError, is_transient, translate

# -- translating SDK errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "ClientNetworkError",
        "ServerNetworkError",
        "InternalError",
        "InternalError.DbError",
        "RequestLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "ResourceUnavailable",
    ],
)
@pytest.mark.parametrize("action", ["PullEvents", "ConfirmEvents"])
def test_network_throttling_and_server_errors_are_transient(code: str, action: str) -> None:
    error = translate(TencentCloudSDKException(code, "boom", "req-1"), action)
    assert type(error) is TransientSourceError
    assert is_transient(code)


@pytest.mark.parametrize(
    "code",
    [
        "AuthFailure.SignatureFailure",
        "AuthFailure.SecretIdNotFound",
        "AuthFailure.SignatureExpire",
        "InvalidParameter",
        "UnauthorizedOperation",
        "FailedOperation.InvalidVodUser",
        "InvalidAction",
    ],
)
@pytest.mark.parametrize("action", ["PullEvents", "ConfirmEvents"])
def test_credential_permission_and_parameter_errors_are_fatal(code: str, action: str) -> None:
    error = translate(TencentCloudSDKException(code, "no", "req-1"), action)
    assert type(error) is FatalSourceError
    assert not is_transient(code)


def test_invalid_parameter_value_on_confirm_means_rejected_handles() -> None:
    error = translate(
        TencentCloudSDKException("InvalidParameterValue", "EventHandle expired", "req-2"),
        "ConfirmEvents",
    )
    assert type(error) is HandlesRejectedError
    assert isinstance(error, FatalSourceError)


def test_invalid_parameter_value_on_pull_is_fatal_not_rejected_handles() -> None:
    error = translate(TencentCloudSDKException("InvalidParameterValue", "x", None), "PullEvents")
    assert type(error) is FatalSourceError


def test_translation_keeps_the_code_the_request_id_and_the_message() -> None:
    error = translate(
        TencentCloudSDKException("InternalError", "try later", "9f1c-req"), "PullEvents"
    )
    assert (error.code, error.request_id) == ("InternalError", "9f1c-req")
    assert str(error) == "PullEvents failed: InternalError: try later (RequestId 9f1c-req)"


def test_a_bytes_message_is_decoded() -> None:
    error = translate(
        TencentCloudSDKException("ClientNetworkError", "连接超时".encode(), None), "PullEvents"
    )
    assert str(error) == "PullEvents failed: ClientNetworkError: 连接超时"


def test_an_undecodable_bytes_message_does_not_break_the_translation() -> None:
    error = translate(TencentCloudSDKException("InternalError", b"\xff\xfe oops", None), "X")
    assert "oops" in str(error)
    assert "b'" not in str(error)


@pytest.mark.parametrize(
    ("message", "never_sent"),
    [
        ("HTTPConnectionPool(...): Max retries exceeded (Caused by NewConnectionError(...))", True),
        ("HTTPConnectionPool(...): (Caused by ConnectTimeoutError(...))", True),
        ("HTTPConnectionPool(...): Read timed out. (read timeout=10)", False),
        ("('Connection aborted.', RemoteDisconnected('Remote end closed connection'))", False),
    ],
)
def test_a_network_error_says_whether_the_request_can_have_reached_the_service(
    message: str, never_sent: bool
) -> None:
    error = translate(TencentCloudSDKException("ClientNetworkError", message), "ConfirmEvents")

    assert isinstance(error, TransientSourceError)
    assert error.never_sent is never_sent
