"""The emulator over HTTP, driven by the real Tencent Cloud SDK (and by raw requests where the
SDK cannot misbehave on purpose): leases, limits, long-polls, authentication, faults, admin."""

from __future__ import annotations

import collections
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from tencentcloud.common import abstract_client
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models
from tencentcloud.vod.v20180717.vod_client import VodClient

from tests.conftest import EmulatorFactory, make_vod_client, tc3_headers
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.faults import ActionFaults, Outcome, decide
from vodpoller.emulator.server import MAX_BODY_BYTES, Emulator, EmulatorOptions

APP_A = 1500000001
APP_B = 1500000002


def start(emulator_factory: EmulatorFactory, **options: Any) -> tuple[VodClient, EmulatorAdmin]:
    """An emulator with these options: an SDK client for it and its admin client."""
    emulator = emulator_factory(**options)
    return make_vod_client(emulator), EmulatorAdmin(emulator.url)


def upload(file_id: str) -> dict[str, Any]:
    return {"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id}}


def pull(vod: VodClient, sub_app_id: int | None = None) -> list[Any]:
    request = models.PullEventsRequest()
    request.SubAppId = sub_app_id
    events: list[Any] = vod.PullEvents(request).EventSet
    return events


def confirm(vod: VodClient, handles: list[str], sub_app_id: int | None = None) -> None:
    request = models.ConfirmEventsRequest()
    request.EventHandles = handles
    request.SubAppId = sub_app_id
    vod.ConfirmEvents(request)


def events_to_pull(vod: VodClient, sub_app_id: int | None = None) -> int:
    request = models.DescribeEventsStateRequest()
    request.SubAppId = sub_app_id
    count: int = vod.DescribeEventsState(request).CountOfEventsToPull
    return count


def sdk_error(call: Callable[[], object]) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as caught:
        call()
    return caught.value


def handles_of(events: list[Any]) -> list[str]:
    return [event.EventHandle for event in events]


def file_ids_of(events: list[Any]) -> list[str]:
    return [event.FileUploadEvent.FileId for event in events]


# -- raw HTTP, for what the SDK will not send -----------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str | None
    document: Any

    @property
    def error_code(self) -> str | None:
        error = self.document["Response"].get("Error")
        return None if error is None else str(error["Code"])


def send(
    emulator: Emulator,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float = 10,
) -> Answer:
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        payload = response.read()
        document = json.loads(payload) if payload else None
        return Answer(response.status, response.getheader("Content-Type"), document)
    finally:
        connection.close()


def signed_call(
    emulator: Emulator,
    action: str,
    params: Mapping[str, Any],
    *,
    timestamp: int | None = None,
    secret_id: str | None = None,
    secret_key: str | None = None,
    **options: Any,
) -> Answer:
    """A `POST /` signed by the tests' own signer; `options` go to `tc3_headers`."""
    body = json.dumps(params).encode()
    options.setdefault("host", emulator.endpoint)
    headers = tc3_headers(
        secret_id or emulator.options.secret_id,
        secret_key or emulator.options.secret_key,
        body=body,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        action=action,
        **options,
    )
    return send(emulator, "POST", "/", body, headers)


# -- leases -------------------------------------------------------------------------------


def test_pulled_and_confirmed_event_is_never_delivered_again(
    emulator_factory: EmulatorFactory,
) -> None:
    vod, admin = start(emulator_factory, lease_seconds=0.5, long_poll_seconds=1.0)
    admin.enqueue(upload("1"))
    [event] = pull(vod)
    assert admin.stats()["Leased"] == 1
    confirm(vod, [event.EventHandle])
    stats = admin.stats()
    assert (stats["Queued"], stats["Leased"], stats["Confirmed"]) == (0, 0, 1)
    # The long-poll outlasts the old lease: a confirmed event would be back by now.
    assert sdk_error(lambda: pull(vod)).code == "ResourceNotFound"
    assert admin.stats()["Redelivered"] == 0


def test_redelivered_event_gets_a_new_handle_and_the_old_one_is_refused(
    emulator_factory: EmulatorFactory,
) -> None:
    vod, admin = start(emulator_factory, lease_seconds=0.5, long_poll_seconds=3.0)
    admin.enqueue(upload("1"))
    [first] = pull(vod)
    started = time.monotonic()
    [again] = pull(vod)  # held by the long-poll until the lease runs out
    assert time.monotonic() - started < 2.5
    assert file_ids_of([again]) == ["1"]
    assert again.EventHandle != first.EventHandle
    assert admin.stats()["Redelivered"] == 1
    assert sdk_error(lambda: confirm(vod, [first.EventHandle])).code == "InvalidParameterValue"
    confirm(vod, [again.EventHandle])
    assert admin.stats()["Confirmed"] == 1


def test_backlog_of_40_comes_in_answers_of_at_most_16(admin: EmulatorAdmin, vod: VodClient) -> None:
    admin.enqueue([upload(str(i)) for i in range(40)])
    sizes: list[int] = []
    file_ids: list[str] = []
    while len(file_ids) < 40:
        events = pull(vod)
        sizes.append(len(events))
        file_ids += file_ids_of(events)
    assert sizes == [16, 16, 8]
    assert sorted(file_ids) == sorted(str(i) for i in range(40))


def test_max_events_option_caps_each_answer(emulator_factory: EmulatorFactory) -> None:
    vod, admin = start(emulator_factory, max_events=5)
    admin.enqueue([upload(str(i)) for i in range(12)])
    assert [len(pull(vod)) for _ in range(3)] == [5, 5, 2]


def test_confirming_17_handles_is_refused_and_confirms_nothing(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    admin.enqueue([upload(str(i)) for i in range(17)])
    handles = handles_of(pull(vod)) + handles_of(pull(vod))
    assert len(handles) == 17
    assert sdk_error(lambda: confirm(vod, handles)).code == "InvalidParameterValue"
    stats = admin.stats()
    assert (stats["Leased"], stats["Confirmed"]) == (17, 0)
    confirm(vod, handles[:16])
    confirm(vod, handles[16:])
    assert admin.stats()["Confirmed"] == 17


def test_expired_handle_is_refused_and_the_event_waits_again(
    emulator_factory: EmulatorFactory,
) -> None:
    vod, admin = start(emulator_factory, lease_seconds=0.2)
    admin.enqueue(upload("1"))
    [event] = pull(vod)
    time.sleep(0.3)  # one wait past the lease, not a polling loop
    assert sdk_error(lambda: confirm(vod, [event.EventHandle])).code == "InvalidParameterValue"
    stats = admin.stats()
    assert (stats["Queued"], stats["Leased"], stats["Confirmed"]) == (1, 0, 0)


def test_unknown_handle_is_refused(vod: VodClient) -> None:
    assert sdk_error(lambda: confirm(vod, ["no-such-handle"])).code == "InvalidParameterValue"


def test_confirm_mixing_a_live_and_an_unknown_handle_confirms_the_live_one(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    admin.enqueue(upload("1"))
    [event] = pull(vod)
    error = sdk_error(lambda: confirm(vod, [event.EventHandle, "no-such-handle"]))
    assert error.code == "InvalidParameterValue"
    assert "no-such-handle" in error.message
    stats = admin.stats()
    assert (stats["Leased"], stats["Confirmed"]) == (0, 1)


# -- long-poll ----------------------------------------------------------------------------


def test_long_poll_returns_as_soon_as_an_event_is_enqueued(
    emulator_factory: EmulatorFactory,
) -> None:
    vod, admin = start(emulator_factory, long_poll_seconds=5)
    enqueuer = threading.Timer(0.3, admin.enqueue, args=(upload("late"),))
    started = time.monotonic()
    enqueuer.start()
    try:
        events = pull(vod)
    finally:
        enqueuer.join()
    assert time.monotonic() - started < 2.5
    assert file_ids_of(events) == ["late"]


@pytest.mark.parametrize(
    ("empty_response", "expected"),
    [("null", None), ("list", [])],
)
def test_empty_long_poll_waits_then_answers_as_configured(
    emulator_factory: EmulatorFactory, empty_response: str, expected: list[Any] | None
) -> None:
    vod, _ = start(emulator_factory, long_poll_seconds=1.0, empty_response=empty_response)
    started = time.monotonic()
    answer = vod.call_json("PullEvents", {})
    elapsed = time.monotonic() - started
    assert "EventSet" in answer["Response"]
    assert answer["Response"]["EventSet"] == expected
    assert 0.95 <= elapsed < 3.0


def test_empty_long_poll_waits_then_answers_resource_not_found_by_default(
    emulator_factory: EmulatorFactory,
) -> None:
    vod, _ = start(emulator_factory, long_poll_seconds=1.0)
    started = time.monotonic()
    assert sdk_error(lambda: pull(vod)).code == "ResourceNotFound"
    assert 0.95 <= time.monotonic() - started < 3.0


# -- authentication and envelope -------------------------------------------------------------


def test_wrong_secret_key_fails_the_signature(emulator: Emulator) -> None:
    vod = make_vod_client(emulator, secret_key="not-the-key")
    assert sdk_error(lambda: pull(vod)).code == "AuthFailure.SignatureFailure"


def test_unknown_secret_id_is_not_found(emulator: Emulator) -> None:
    vod = make_vod_client(emulator, secret_id="AKIDnobodyKnows")
    assert sdk_error(lambda: pull(vod)).code == "AuthFailure.SecretIdNotFound"


@pytest.mark.parametrize("skew", [-400, 400])
def test_timestamp_more_than_300_seconds_off_is_expired(
    monkeypatch: pytest.MonkeyPatch, vod: VodClient, skew: int
) -> None:
    real_time = time.time
    # Only the SDK's clock moves; the emulator keeps the real one.
    monkeypatch.setattr(abstract_client, "time", SimpleNamespace(time=lambda: real_time() + skew))
    assert sdk_error(lambda: pull(vod)).code == "AuthFailure.SignatureExpire"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer abc", "TC3-HMAC-SHA256 Credential", "TC3-HMAC-SHA256 Signature=abc"],
)
def test_malformed_authorization_header_is_invalid(
    emulator: Emulator, authorization: str | None
) -> None:
    body = b"{}"
    headers = tc3_headers(
        emulator.options.secret_id,
        emulator.options.secret_key,
        host=emulator.endpoint,
        body=body,
        timestamp=int(time.time()),
    )
    if authorization is None:
        del headers["Authorization"]
    else:
        headers["Authorization"] = authorization
    answer = send(emulator, "POST", "/", body, headers)
    assert answer.error_code == "AuthFailure.InvalidAuthorization"


def test_wrong_api_version_is_no_such_version(vod: VodClient) -> None:
    vod._apiVersion = "2017-01-01"  # signed as the SDK signs, with another X-TC-Version
    assert sdk_error(lambda: pull(vod)).code == "NoSuchVersion"


def test_unknown_action_is_invalid(vod: VodClient) -> None:
    assert sdk_error(lambda: vod.call_json("DescribeMediaInfos", {})).code == "InvalidAction"


def test_signature_over_lower_cased_header_values_is_accepted(
    emulator: Emulator, admin: EmulatorAdmin
) -> None:
    admin.enqueue(upload("1"))
    # X-TC-Action's value has capitals, so the lower-cased signature differs from the raw one.
    answer = signed_call(
        emulator,
        "PullEvents",
        {},
        signed_headers=("content-type", "host", "x-tc-action"),
        lower_values=True,
    )
    assert answer.error_code is None
    assert [e["FileUploadEvent"]["FileId"] for e in answer.document["Response"]["EventSet"]] == [
        "1"
    ]


def test_host_with_a_scheme_as_tccli_sends_it_is_accepted(emulator: Emulator) -> None:
    answer = signed_call(emulator, "DescribeEventsState", {}, host=f"http://{emulator.endpoint}")
    assert answer.error_code is None
    assert answer.document["Response"]["CountOfEventsToPull"] == 0


def test_signature_over_another_host_is_refused(emulator: Emulator) -> None:
    body = b"{}"
    headers = tc3_headers(
        emulator.options.secret_id,
        emulator.options.secret_key,
        host="vod.tencentcloudapi.com",
        body=body,
        timestamp=int(time.time()),
    )
    headers["Host"] = emulator.endpoint
    answer = send(emulator, "POST", "/", body, headers)
    assert answer.error_code == "AuthFailure.SignatureFailure"


def test_every_error_answer_is_http_200_json_with_a_fresh_request_id(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory(long_poll_seconds=0)
    now = int(time.time())
    answers = {
        "AuthFailure.InvalidAuthorization": send(emulator, "POST", "/", b"{}", {}),
        "AuthFailure.SignatureFailure": signed_call(emulator, "PullEvents", {}, secret_key="x"),
        "AuthFailure.SecretIdNotFound": signed_call(emulator, "PullEvents", {}, secret_id="AKIDx"),
        "AuthFailure.SignatureExpire": signed_call(emulator, "PullEvents", {}, timestamp=now - 900),
        "NoSuchVersion": signed_call(emulator, "PullEvents", {}, version="2017-01-01"),
        "InvalidAction": signed_call(emulator, "DescribeMediaInfos", {}),
        "ResourceNotFound": signed_call(emulator, "PullEvents", {}),
        "InvalidParameterValue": signed_call(emulator, "ConfirmEvents", {"EventHandles": ["x"]}),
        "MissingParameter": signed_call(emulator, "ConfirmEvents", {}),
        "UnknownParameter": signed_call(emulator, "PullEvents", {"Surprise": 1}),
    }
    request_ids = []
    for code, answer in answers.items():
        assert (answer.status, answer.content_type, answer.error_code) == (
            200,
            "application/json",
            code,
        )
        assert answer.document["Response"]["Error"]["Message"]
        request_ids.append(answer.document["Response"]["RequestId"])
    assert all(request_ids)
    assert len(set(request_ids)) == len(request_ids)


def test_sdk_sees_a_distinct_request_id_on_every_error(vod: VodClient) -> None:
    ids = {sdk_error(lambda: confirm(vod, ["nope"])).requestId for _ in range(5)}
    assert len(ids) == 5
    assert None not in ids


# -- malformed input: always an answer, never a dropped connection ---------------------------


def test_timestamp_of_a_non_ascii_digit_is_answered_with_invalid_parameter(
    emulator: Emulator,
) -> None:
    body = b"{}"
    headers = tc3_headers(
        emulator.options.secret_id,
        emulator.options.secret_key,
        host=emulator.endpoint,
        body=body,
        timestamp=int(time.time()),
    )
    headers["X-TC-Timestamp"] = "\u00b2"  # "²": str.isdigit() says yes, int() says no
    answer = send(emulator, "POST", "/", body, headers)
    assert (answer.status, answer.content_type, answer.error_code) == (
        200,
        "application/json",
        "InvalidParameter",
    )


def test_non_ascii_signature_is_answered_with_signature_failure(emulator: Emulator) -> None:
    body = b"{}"
    headers = tc3_headers(
        emulator.options.secret_id,
        emulator.options.secret_key,
        host=emulator.endpoint,
        body=body,
        timestamp=int(time.time()),
    )
    authorization = headers["Authorization"]
    headers["Authorization"] = (
        authorization[: authorization.index("Signature=")] + "Signature=" + "\u00e9" * 64
    )
    answer = send(emulator, "POST", "/", body, headers)
    assert (answer.status, answer.error_code) == (200, "AuthFailure.SignatureFailure")


@pytest.mark.parametrize("length", ["abc", "-5", "1_0", "0x10", ""])
def test_api_request_with_a_bad_content_length_is_an_invalid_parameter(
    emulator: Emulator, length: str
) -> None:
    headers = tc3_headers(
        emulator.options.secret_id,
        emulator.options.secret_key,
        host=emulator.endpoint,
        body=b"{}",
        timestamp=int(time.time()),
    )
    headers["Content-Length"] = length
    answer = send(emulator, "POST", "/", b"{}", headers, timeout=3)
    assert (answer.status, answer.content_type, answer.error_code) == (
        200,
        "application/json",
        "InvalidParameter",
    )
    assert "Content-Length" in answer.document["Response"]["Error"]["Message"]
    assert answer.document["Response"]["RequestId"]


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_admin_request_with_a_bad_content_length_is_a_bad_request(
    emulator: Emulator, length: str
) -> None:
    answer = send(
        emulator, "POST", "/_emulator/generate", b'{"count": 1}', {"Content-Length": length}
    )
    assert (answer.status, answer.content_type) == (400, "application/json")
    assert "Content-Length" in answer.document["Error"]
    assert emulator.stats()["Queued"] == 0


def test_api_request_larger_than_the_limit_is_answered_and_the_connection_closed(
    emulator: Emulator,
) -> None:
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=3)
    try:
        connection.request(
            "POST", "/", body=b"{}", headers={"Content-Length": str(MAX_BODY_BYTES + 1)}
        )
        response = connection.getresponse()
        document = json.loads(response.read())
        assert (response.status, response.getheader("Connection")) == (200, "close")
    finally:
        connection.close()
    assert document["Response"]["Error"]["Code"] == "RequestSizeLimitExceeded"


def test_chunked_admin_body_is_refused_rather_than_misread(emulator: Emulator) -> None:
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=3)
    try:
        # An iterable body without a length: http.client sends it chunked.
        connection.request("POST", "/_emulator/generate", body=iter([b'{"count": 1}']))
        response = connection.getresponse()
        document = json.loads(response.read())
        assert (response.status, response.getheader("Connection")) == (400, "close")
    finally:
        connection.close()
    assert "Transfer-Encoding" in document["Error"]
    assert emulator.stats()["Queued"] == 0


def test_unexpected_exception_is_answered_with_internal_error_and_logged(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a bug in the emulator")

    monkeypatch.setattr(emulator.api, "call", broken)
    with caplog.at_level(logging.ERROR, logger="vodpoller.emulator.server"):
        answer = signed_call(emulator, "PullEvents", {})
    assert (answer.status, answer.content_type, answer.error_code) == (
        200,
        "application/json",
        "InternalError",
    )
    assert answer.document["Response"]["RequestId"]
    [record] = [r for r in caplog.records if r.name == "vodpoller.emulator.server"]
    assert record.exc_info is not None
    assert "a bug in the emulator" in str(record.exc_info[1])


def test_unexpected_exception_in_an_admin_endpoint_is_answered_with_http_500(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug in the stats")

    monkeypatch.setattr(emulator, "stats", broken)
    with caplog.at_level(logging.ERROR, logger="vodpoller.emulator.server"):
        answer = send(emulator, "GET", "/_emulator/stats", b"", {})
    assert (answer.status, answer.content_type) == (500, "application/json")
    assert answer.document["Error"]
    assert any(r.exc_info for r in caplog.records if r.name == "vodpoller.emulator.server")


# -- throttling ---------------------------------------------------------------------------


def test_burst_beyond_the_rate_limit_is_throttled_per_action(
    emulator_factory: EmulatorFactory,
) -> None:
    vod, admin = start(emulator_factory, rate_limit=5, long_poll_seconds=0)
    started = time.monotonic()
    codes = [sdk_error(lambda: pull(vod)).code for _ in range(15)]
    elapsed = time.monotonic() - started
    assert set(codes) == {"ResourceNotFound", "RequestLimitExceeded"}
    assert codes[:5] == ["ResourceNotFound"] * 5  # one second's worth of burst
    served = codes.count("ResourceNotFound")
    assert served <= 5 + 5 * elapsed + 1  # then 5 a second
    stats = admin.stats()
    assert stats["Throttled"] == codes.count("RequestLimitExceeded")
    assert events_to_pull(vod) == 0  # another action has its own budget
    assert stats["ThrottledByAction"] == {"PullEvents": stats["Throttled"]}


# -- faults -------------------------------------------------------------------------------


def test_error_rate_one_answers_one_of_the_error_codes(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    admin.set_faults(
        {"PullEvents": {"error_rate": 1, "error_codes": ["FailedOperation.InvalidVodUser"]}}
    )
    admin.enqueue(upload("1"))
    assert sdk_error(lambda: pull(vod)).code == "FailedOperation.InvalidVodUser"
    assert events_to_pull(vod) == 1  # other actions are unaffected, nothing was leased


def test_http_error_rate_one_gives_a_server_network_error(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    admin.set_faults({"DescribeEventsState": {"http_error_rate": 1}})
    assert sdk_error(lambda: events_to_pull(vod)).code == "ServerNetworkError"


def test_dropped_pull_leases_the_event_without_an_answer(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    admin.enqueue(upload("1"))
    admin.set_faults({"PullEvents": {"drop_rate": 1}})
    assert sdk_error(lambda: pull(vod)).code == "ClientNetworkError"
    stats = admin.stats()
    assert (stats["Queued"], stats["Leased"]) == (0, 1)


def test_dropped_confirm_still_confirms_the_event(admin: EmulatorAdmin, vod: VodClient) -> None:
    admin.enqueue(upload("1"))
    [event] = pull(vod)
    admin.set_faults({"ConfirmEvents": {"drop_rate": 1}})
    assert sdk_error(lambda: confirm(vod, [event.EventHandle])).code == "ClientNetworkError"
    stats = admin.stats()
    assert (stats["Leased"], stats["Confirmed"]) == (0, 1)


def test_fault_latency_delays_the_answer(admin: EmulatorAdmin, vod: VodClient) -> None:
    admin.set_faults({"DescribeEventsState": {"latency_ms": 300}})
    started = time.monotonic()
    events_to_pull(vod)
    assert time.monotonic() - started >= 0.3


def test_latency_option_delays_every_answer(emulator_factory: EmulatorFactory) -> None:
    vod, _ = start(emulator_factory, latency_ms=250)
    started = time.monotonic()
    events_to_pull(vod)
    assert time.monotonic() - started >= 0.25


def test_empty_plan_clears_the_faults(admin: EmulatorAdmin, vod: VodClient) -> None:
    admin.set_faults({"DescribeEventsState": {"error_rate": 1}})
    assert sdk_error(lambda: events_to_pull(vod)).code == "InternalError"
    assert admin.set_faults({}) == {"Faults": {}}
    assert events_to_pull(vod) == 0


@pytest.mark.parametrize(
    ("plan", "mentioned"),
    [
        ({"PullEvents": {"eror_rate": 0.5}}, "eror_rate"),
        ({"PullEvents": {"error_rate": 1.5}}, "error_rate"),
        ({"ConfirmEvents": {"drop_rate": -0.1}}, "drop_rate"),
        ([], "object"),
        ({"PullEvents": {"error_rate": 0.6, "drop_rate": 0.3, "http_error_rate": 0.2}}, "sum"),
        ({"PullEvnets": {"error_rate": 0.5}}, "PullEvnets"),
        ({"DescribeMediaInfos": {}}, "DescribeMediaInfos"),
        ({"PullEvents": {"error_rate": 1, "error_codes": []}}, "error_codes"),
    ],
)
def test_bad_fault_plan_is_refused_with_a_message(
    emulator: Emulator, admin: EmulatorAdmin, plan: Any, mentioned: str
) -> None:
    admin.set_faults({"PullEvents": {"latency_ms": 5}})
    answer = send(emulator, "POST", "/_emulator/faults", json.dumps(plan).encode(), {})
    assert answer.status == 400
    assert mentioned in answer.document["Error"]
    kept = send(emulator, "GET", "/_emulator/faults", b"", {})
    assert kept.document["Faults"]["PullEvents"]["latency_ms"] == 5


def test_fault_rates_that_sum_to_exactly_one_are_accepted(admin: EmulatorAdmin) -> None:
    plan = {"PullEvents": {"http_error_rate": 0.1, "error_rate": 0.2, "drop_rate": 0.7}}
    assert admin.set_faults(plan)["Faults"]["PullEvents"]["drop_rate"] == 0.7


def test_fault_outcomes_come_at_the_configured_rates() -> None:
    faults = ActionFaults(
        http_error_rate=0.1, error_rate=0.2, drop_rate=0.3, error_codes=("InternalError",)
    )
    rng = random.Random(20240615)
    draws = 20_000
    seen = collections.Counter(decide(faults, rng)[0] for _ in range(draws))
    expected = {
        Outcome.HTTP_ERROR: 0.1,
        Outcome.API_ERROR: 0.2,
        Outcome.DROP: 0.3,
        Outcome.ANSWER: 0.4,
    }
    for outcome, rate in expected.items():
        assert abs(seen[outcome] / draws - rate) <= 0.02, (outcome, seen[outcome] / draws)


def test_fault_rate_of_one_always_gives_that_outcome() -> None:
    rng = random.Random(1)
    for field, outcome in [
        ("http_error_rate", Outcome.HTTP_ERROR),
        ("error_rate", Outcome.API_ERROR),
        ("drop_rate", Outcome.DROP),
    ]:
        faults = ActionFaults.model_validate({field: 1.0})
        assert {decide(faults, rng)[0] for _ in range(200)} == {outcome}
    assert {decide(ActionFaults(), rng)[0] for _ in range(200)} == {Outcome.ANSWER}


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "mentioned"),
    [
        ({"max_events": 0}, "max_events"),
        ({"max_events": 17}, "max_events"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"lease_seconds": float("nan")}, "lease_seconds"),
        ({"long_poll_seconds": -1}, "long_poll_seconds"),
        ({"rate_limit": -1}, "rate_limit"),
        ({"latency_ms": -5}, "latency_ms"),
        ({"port": 70000}, "port"),
        ({"empty_response": "none"}, "empty_response"),
        ({"secret_key": ""}, "secret_key"),
    ],
)
def test_emulator_options_out_of_range_are_refused(options: dict[str, Any], mentioned: str) -> None:
    with pytest.raises(ValueError, match=mentioned):
        EmulatorOptions(**options)


def test_emulator_options_at_their_limits_are_accepted() -> None:
    EmulatorOptions(max_events=1, long_poll_seconds=0, rate_limit=0, lease_seconds=0.01)
    EmulatorOptions(max_events=16, port=65535)


# -- applications -------------------------------------------------------------------------


def test_sub_applications_are_kept_apart(admin: EmulatorAdmin, vod: VodClient) -> None:
    admin.enqueue([upload("a1"), upload("a2")], sub_app_id=APP_A)
    admin.enqueue(upload("b1"), sub_app_id=APP_B)
    admin.enqueue(upload("main"))
    from_a = pull(vod, APP_A)
    from_b = pull(vod, APP_B)
    assert sorted(file_ids_of(from_a)) == ["a1", "a2"]
    assert file_ids_of(from_b) == ["b1"]
    assert file_ids_of(pull(vod)) == ["main"]
    error = sdk_error(lambda: confirm(vod, handles_of(from_a), APP_B))
    assert error.code == "InvalidParameterValue"
    confirm(vod, handles_of(from_a), APP_A)
    assert admin.stats()["Applications"] == {
        str(APP_A): {"Queued": 0, "Leased": 0, "Confirmed": 2},
        str(APP_B): {"Queued": 0, "Leased": 1, "Confirmed": 0},
        "default": {"Queued": 0, "Leased": 1, "Confirmed": 0},
    }


def test_describe_events_state_counts_events_to_pull_per_application(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    admin.enqueue([upload(str(i)) for i in range(3)], sub_app_id=APP_A)
    admin.enqueue([upload(str(i)) for i in range(5)], sub_app_id=APP_B)
    assert (events_to_pull(vod, APP_A), events_to_pull(vod, APP_B), events_to_pull(vod)) == (
        3,
        5,
        0,
    )
    pull(vod, APP_A)
    assert (events_to_pull(vod, APP_A), events_to_pull(vod, APP_B)) == (0, 5)


def test_invalid_sub_app_id_is_refused(vod: VodClient) -> None:
    error = sdk_error(lambda: vod.call_json("PullEvents", {"SubAppId": -1}))
    assert error.code == "InvalidParameterValue.SubAppId"


# -- admin endpoints ----------------------------------------------------------------------


def test_admin_enqueues_one_entry_or_a_list(admin: EmulatorAdmin) -> None:
    assert admin.enqueue(upload("1")) == 1
    assert admin.enqueue([upload("2"), upload("3")]) == 2
    assert admin.stats()["Queued"] == 3


def test_admin_ignores_an_event_handle_in_the_body(admin: EmulatorAdmin, vod: VodClient) -> None:
    admin.enqueue({"EventHandle": "chosen-by-me", **upload("1")})
    [event] = pull(vod)
    assert event.EventHandle != "chosen-by-me"
    assert sdk_error(lambda: confirm(vod, ["chosen-by-me"])).code == "InvalidParameterValue"
    confirm(vod, [event.EventHandle])


def test_admin_generates_distinct_events_of_mixed_types(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    assert admin.generate(40) == 40
    raw: list[dict[str, Any]] = []
    while len(raw) < 40:
        raw += vod.call_json("PullEvents", {})["Response"]["EventSet"]
    bodies = {
        json.dumps({k: v for k, v in e.items() if k != "EventHandle"}, sort_keys=True) for e in raw
    }
    assert len(bodies) == 40
    assert len({event["EventType"] for event in raw}) > 1
    assert admin.generate(3, sub_app_id=APP_A) == 3
    assert events_to_pull(vod, APP_A) == 3


def test_unknown_admin_path_is_not_found(emulator: Emulator) -> None:
    answer = send(emulator, "GET", "/_emulator/nothing-here", b"", {})
    assert answer.status == 404
    assert answer.content_type == "application/json"
    assert "/_emulator/nothing-here" in answer.document["Error"]


@pytest.mark.parametrize("path", ["/_emulator/events", "/_emulator/generate", "/_emulator/faults"])
def test_admin_body_that_is_not_json_is_a_bad_request(emulator: Emulator, path: str) -> None:
    answer = send(emulator, "POST", path, b"{not json", {"Content-Type": "application/json"})
    assert answer.status == 400
    assert "JSON" in answer.document["Error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_emulator/events", b"[1, 2]"),
        ("/_emulator/events?sub_app_id=abc", b"{}"),
        ("/_emulator/generate", b'{"count": -1}'),
        ("/_emulator/generate", b'{"count": 1, "sub_app_id": 0}'),
    ],
)
def test_admin_request_with_bad_values_is_a_bad_request(
    emulator: Emulator, path: str, body: bytes
) -> None:
    answer = send(emulator, "POST", path, body, {})
    assert answer.status == 400
    assert answer.document["Error"]
    assert emulator.stats()["Queued"] == 0


def test_a_stopped_emulator_answers_nothing_on_a_connection_kept_alive(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory()
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    try:
        connection.request("GET", "/_emulator/stats")
        with connection.getresponse() as answer:
            assert answer.status == 200
            answer.read()
        emulator.close()
        connection.request("GET", "/_emulator/stats")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            connection.getresponse()
    finally:
        connection.close()


def test_with_a_seed_each_action_meets_the_same_faults_whatever_comes_in_between() -> None:
    quiet = Emulator(EmulatorOptions(port=0, seed=7))
    busy = Emulator(EmulatorOptions(port=0, seed=7))
    try:
        alone = [quiet.random("ConfirmEvents").random() for _ in range(5)]
        interleaved = []
        for _ in range(5):
            busy.random("PullEvents").random()  # pulls drawn between the confirms
            interleaved.append(busy.random("ConfirmEvents").random())
        other_seed = Emulator(EmulatorOptions(port=0, seed=8))
        try:
            different = [other_seed.random("ConfirmEvents").random() for _ in range(5)]
        finally:
            other_seed.close()
    finally:
        quiet.close()
        busy.close()

    assert interleaved == alone
    assert different != alone
