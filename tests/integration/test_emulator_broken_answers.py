"""Faults that do the work and then lose or break the answer (cut short, bad chunked framing,
a false Content-Encoding, stalled, trickled), HTTP errors of any status and body, and the
request head read by the emulator's own parser. Seen on a raw socket, byte for byte, and
through the real SDK where it shows what a consumer gets."""

from __future__ import annotations

import collections
import gzip
import json
import random
import socket
import threading
import time
import urllib.error
from typing import Any

import pytest
import requests
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from tests.conftest import EmulatorFactory, make_vod_client
from tests.rawhttp import Raw, exchange, signed_request
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.answers import HUGE_BODY_BYTES, TRICKLE_TICK_SECONDS
from vodpoller.emulator.faults import RATES, ActionFaults, Outcome, decide
from vodpoller.emulator.server import Emulator


def upload(file_id: str) -> dict[str, Any]:
    return {"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id}}


@pytest.fixture
def leased_one(emulator: Emulator, admin: EmulatorAdmin) -> EmulatorAdmin:
    """One event waiting: a PullEvents that does its work leases it."""
    admin.enqueue(upload("1"))
    return admin


def counts(admin: EmulatorAdmin) -> tuple[int, int, int]:
    stats = admin.stats()
    return stats["Queued"], stats["Leased"], stats["Confirmed"]


# -- the work done, then the answer broken ---------------------------------------------------


def test_truncated_answer_promises_more_than_it_sends_after_leasing(
    emulator: Emulator, leased_one: EmulatorAdmin
) -> None:
    leased_one.set_faults({"PullEvents": {"truncate_rate": 1}})
    raw = exchange(emulator, signed_request(emulator, "PullEvents", {}))
    assert raw.status == 200
    promised = int(raw.headers["content-length"])
    assert 0 < len(raw.body) < promised
    assert raw.body.startswith(b'{"Response": {"EventSet": [{"EventHandle": ')
    assert counts(leased_one) == (0, 1, 0)


def test_truncated_confirm_is_applied(emulator: Emulator, leased_one: EmulatorAdmin) -> None:
    [event] = make_vod_client(emulator).call_json("PullEvents", {})["Response"]["EventSet"]
    leased_one.set_faults({"ConfirmEvents": {"truncate_rate": 1}})
    params = {"EventHandles": [event["EventHandle"]]}
    raw = exchange(emulator, signed_request(emulator, "ConfirmEvents", params))
    assert len(raw.body) < int(raw.headers["content-length"])
    assert counts(leased_one) == (0, 0, 1)


def test_bad_chunked_answer_has_a_valid_chunk_then_a_malformed_one(
    emulator: Emulator, leased_one: EmulatorAdmin
) -> None:
    leased_one.set_faults({"PullEvents": {"bad_chunked_rate": 1}})
    raw = exchange(emulator, signed_request(emulator, "PullEvents", {}))
    assert raw.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in raw.headers
    size, _, rest = raw.body.partition(b"\r\n")
    first = rest[: int(size, 16)]
    assert first.startswith(b'{"Response": {"EventSet": [')
    assert rest[len(first) :] == b"\r\nzz\r\n"  # "zz" is no chunk size
    assert counts(leased_one) == (0, 1, 0)


def test_bad_encoding_answer_says_gzip_but_is_plain_json(
    emulator: Emulator, leased_one: EmulatorAdmin
) -> None:
    leased_one.set_faults({"PullEvents": {"bad_encoding_rate": 1}})
    raw = exchange(emulator, signed_request(emulator, "PullEvents", {}))
    assert raw.headers["content-encoding"] == "gzip"
    assert int(raw.headers["content-length"]) == len(raw.body)
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(raw.body)
    [event] = raw.document["Response"]["EventSet"]
    assert event["FileUploadEvent"] == {"FileId": "1"}
    assert counts(leased_one) == (0, 1, 0)


def test_stalled_answer_sends_part_then_holds_the_connection_then_closes(
    emulator: Emulator, leased_one: EmulatorAdmin
) -> None:
    leased_one.set_faults({"PullEvents": {"stall_rate": 1, "stall_ms": 700}})
    raw = exchange(emulator, signed_request(emulator, "PullEvents", {}))
    assert 0 < len(raw.body) < int(raw.headers["content-length"])
    assert raw.seconds >= 0.7
    assert counts(leased_one) == (0, 1, 0)


def test_stalled_answer_is_cut_short_when_the_emulator_stops(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory()
    EmulatorAdmin(emulator.url).set_faults(
        {"DescribeEventsState": {"stall_rate": 1, "stall_ms": 600_000}}
    )
    done = threading.Event()
    result: list[Raw] = []

    def ask() -> None:
        result.append(exchange(emulator, signed_request(emulator, "DescribeEventsState", {})))
        done.set()

    threading.Thread(target=ask, daemon=True).start()
    time.sleep(0.3)
    emulator.close()
    assert done.wait(30), "a stalled answer outlived the emulator"
    assert len(result[0].body) < int(result[0].headers["content-length"])


def test_trickled_answer_comes_whole_but_slowly(
    emulator: Emulator, leased_one: EmulatorAdmin
) -> None:
    rate = 1000
    leased_one.set_faults({"PullEvents": {"trickle_rate": 1, "trickle_bytes_per_second": rate}})
    raw = exchange(emulator, signed_request(emulator, "PullEvents", {}))
    assert int(raw.headers["content-length"]) == len(raw.body)
    [event] = raw.document["Response"]["EventSet"]
    assert event["FileUploadEvent"] == {"FileId": "1"}
    # A piece every TRICKLE_TICK_SECONDS, the first at once.
    assert raw.seconds >= 0.9 * (raw.size - rate * TRICKLE_TICK_SECONDS) / rate
    assert raw.pieces > 3
    assert counts(leased_one) == (0, 1, 0)


@pytest.mark.parametrize(
    ("fault", "escapes"),
    [
        ("truncate_rate", requests.exceptions.ChunkedEncodingError),
        ("bad_chunked_rate", requests.exceptions.ChunkedEncodingError),
        ("bad_encoding_rate", requests.exceptions.ContentDecodingError),
    ],
)
def test_what_the_sdk_raises_for_a_broken_answer(
    emulator: Emulator, leased_one: EmulatorAdmin, fault: str, escapes: type[Exception]
) -> None:
    """The SDK does not wrap errors met while reading the body: a consumer must."""
    leased_one.set_faults({"PullEvents": {fault: 1}})
    with pytest.raises(escapes):
        make_vod_client(emulator).call_json("PullEvents", {})
    assert counts(leased_one) == (0, 1, 0)


def test_stall_longer_than_the_sdk_read_timeout_escapes_as_a_connection_error(
    emulator: Emulator, leased_one: EmulatorAdmin
) -> None:
    leased_one.set_faults({"PullEvents": {"stall_rate": 1, "stall_ms": 5000}})
    with pytest.raises(requests.exceptions.ConnectionError, match="Read timed out"):
        make_vod_client(emulator, timeout=1).call_json("PullEvents", {})


def test_trickle_outlasts_the_sdk_read_timeout_without_tripping_it(
    emulator: Emulator, leased_one: EmulatorAdmin
) -> None:
    """Each read gets a few bytes in time: the request as a whole is never cut off."""
    leased_one.set_faults({"PullEvents": {"trickle_rate": 1, "trickle_bytes_per_second": 150}})
    started = time.monotonic()
    answer = make_vod_client(emulator, timeout=1).call_json("PullEvents", {})
    assert time.monotonic() - started > 1.2  # longer than the read timeout
    [event] = answer["Response"]["EventSet"]
    assert event["FileUploadEvent"] == {"FileId": "1"}


# -- HTTP errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type", "check"),
    [
        (502, "json", "application/json", lambda b: json.loads(b)["Error"].startswith("Bad")),
        (503, "empty", None, lambda b: b == b""),
        (504, "html", "text/html", lambda b: b"<title>504 Gateway Timeout</title>" in b),
        (500, "huge", "application/json", lambda b: len(b) == HUGE_BODY_BYTES and json.loads(b)),
        (599, "json", "application/json", lambda b: "injected" in json.loads(b)["Error"]),
        (200, "html", "text/html", lambda b: b"<h1>200 OK</h1>" in b),
    ],
)
def test_http_error_has_the_chosen_status_and_body_and_does_no_work(  # noqa: PLR0917
    emulator: Emulator,
    leased_one: EmulatorAdmin,
    status: int,
    body: str,
    content_type: str | None,
    check: Any,
) -> None:
    leased_one.set_faults(
        {"PullEvents": {"http_error_rate": 1, "http_error_status": status, "http_error_body": body}}
    )
    raw = exchange(emulator, signed_request(emulator, "PullEvents", {}, close=True))
    assert raw.status == status
    assert raw.headers.get("content-type") == content_type
    assert int(raw.headers["content-length"]) == len(raw.body)
    assert check(raw.body)
    assert counts(leased_one) == (1, 0, 0)


def test_default_http_error_is_the_502_it_always_was(emulator: Emulator) -> None:
    EmulatorAdmin(emulator.url).set_faults({"PullEvents": {"http_error_rate": 1}})
    raw = exchange(emulator, signed_request(emulator, "PullEvents", {}, close=True))
    assert (raw.status, raw.document) == (502, {"Error": "Bad Gateway (injected fault)"})


def test_an_empty_500_reaches_the_sdk_as_a_server_network_error(emulator: Emulator) -> None:
    EmulatorAdmin(emulator.url).set_faults(
        {"PullEvents": {"http_error_rate": 1, "http_error_status": 500, "http_error_body": "empty"}}
    )
    with pytest.raises(TencentCloudSDKException) as caught:
        make_vod_client(emulator).call_json("PullEvents", {})
    assert caught.value.code == "ServerNetworkError"


# -- the plan -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "mentioned"),
    [
        ({"truncate_rate": 0.5, "stall_rate": 0.3, "trickle_rate": 0.3}, "sum to at most 1"),
        ({"bad_chunked_rate": 0.6, "error_rate": 0.5}, "bad_chunked_rate"),
        ({"bad_encoding_rate": 1.5}, "bad_encoding_rate"),
        ({"http_error_status": 204}, "carries no body"),
        ({"http_error_status": 304}, "carries no body"),
        ({"http_error_status": 199}, "http_error_status"),
        ({"http_error_status": 600}, "http_error_status"),
        ({"http_error_status": "502"}, "http_error_status"),
        ({"http_error_status": 502.5}, "http_error_status"),
        ({"http_error_body": "xml"}, "http_error_body"),
        ({"stall_ms": -1}, "stall_ms"),
        ({"stall_ms": 600_001}, "stall_ms"),
        ({"trickle_bytes_per_second": 0}, "trickle_bytes_per_second"),
    ],
)
def test_bad_broken_answer_plan_is_refused_naming_the_problem(
    admin: EmulatorAdmin, plan: dict[str, Any], mentioned: str
) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        admin.set_faults({"PullEvents": plan})
    assert caught.value.code == 400
    assert mentioned in json.loads(caught.value.read())["Error"]
    assert admin.set_faults({"PullEvents": {"latency_ms": 1}})


def test_plan_at_its_limits_is_accepted(admin: EmulatorAdmin) -> None:
    plan = {**dict.fromkeys(RATES, 0.125), "stall_ms": 600_000, "http_error_status": 200}
    shown = admin.set_faults({"PullEvents": plan})["Faults"]["PullEvents"]
    assert {name: shown[name] for name in RATES} == dict.fromkeys(RATES, 0.125)


def test_every_outcome_comes_at_its_configured_rate() -> None:
    rates = dict(zip(RATES, (0.05, 0.1, 0.05, 0.1, 0.15, 0.1, 0.05, 0.1), strict=True))
    faults = ActionFaults.model_validate(rates)
    rng = random.Random(20240616)
    draws = 40_000
    seen = collections.Counter(decide(faults, rng)[0] for _ in range(draws))
    expected = {RATES[name]: rate for name, rate in rates.items()}
    expected[Outcome.ANSWER] = 1 - sum(rates.values())
    for outcome, rate in expected.items():
        assert abs(seen[outcome] / draws - rate) <= 0.01, (outcome, seen[outcome] / draws)


@pytest.mark.parametrize("name", list(RATES))
def test_a_rate_of_one_always_gives_its_outcome(name: str) -> None:
    rng = random.Random(2)
    faults = ActionFaults.model_validate({name: 1.0})
    assert {decide(faults, rng)[0] for _ in range(100)} == {RATES[name]}


# -- the request head -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /_emulator/stats HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
        (b"GET /_emulator/stats HTTP/1.1\r\n : starts with a space\r\n\r\n", 400),
        (b"GET /_emulator/stats HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /_emulator/stats HTTX/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /_emulator/stats HTTP/1.x\r\nHost: x\r\n\r\n", 400),
        (b"GET /_emulator/stats\r\n\r\n", 400),
        (b"GET /_emulator/stats HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET /_emulator/stats HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_request_head_is_answered_with_a_status_and_closed(
    emulator: Emulator, head: bytes, status: int
) -> None:
    raw = exchange(emulator, head)
    assert raw.status == status


def test_request_head_with_a_folded_header_and_http_1_0_is_served_then_closed(
    emulator: Emulator,
) -> None:
    head = b"GET /_emulator/stats HTTP/1.0\r\nHost: x\r\nX-Folded: one\r\n two\r\n\r\n"
    raw = exchange(emulator, head)  # returns: HTTP/1.0 closes after the answer
    assert raw.status == 200
    assert raw.document["Queued"] == 0


def test_expect_100_continue_is_answered_before_the_body_is_sent(emulator: Emulator) -> None:
    body = b'{"EventType": "X"}'
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as sock:
        sock.sendall(
            b"POST /_emulator/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert EmulatorAdmin(emulator.url).stats()["Queued"] == 1
