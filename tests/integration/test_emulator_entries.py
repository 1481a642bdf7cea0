"""What the emulator delivers: entries in the shape in force when they are leased (`null` keys
a later VOD release adds, the official example's every-field shape), copies of identical
content as distinct events, and never an entry it cannot serve."""

from __future__ import annotations

import json
import socket
import urllib.error
from typing import Any

import pytest
from tencentcloud.vod.v20180717 import models
from tencentcloud.vod.v20180717.vod_client import VodClient

from tests.conftest import EmulatorFactory, make_vod_client
from tests.rawhttp import exchange, signed_request
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.samples import load_samples
from vodpoller.emulator.server import Emulator
from vodpoller.emulator.shape import OFFICIAL_FIELDS

CAST = {"EventType": "MediaCastStatusChanged", "MediaCastStatusChangedEvent": {"CastId": "c1"}}


def pull_raw(vod: VodClient, sub_app_id: int | None = None) -> list[dict[str, Any]]:
    """The entries as sent, through the SDK's raw JSON call (its models drop unknown keys)."""
    params = {} if sub_app_id is None else {"SubAppId": sub_app_id}
    events: list[dict[str, Any]] = vod.call_json("PullEvents", params)["Response"]["EventSet"]
    return events


def confirm(vod: VodClient, events: list[dict[str, Any]]) -> None:
    vod.call_json("ConfirmEvents", {"EventHandles": [e["EventHandle"] for e in events]})


def refused(call: Any) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as caught:
        call()
    return caught.value.code, str(json.loads(caught.value.read())["Error"])


# -- the shape ----------------------------------------------------------------------------


def test_shape_adds_null_keys_at_the_top_and_inside_the_payload(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    admin.enqueue(CAST)
    shown = admin.set_shape(null_keys=["NewTopLevelKey"], payload_null_keys=["NewPayloadKey"])
    assert shown == {
        "null_keys": ["NewTopLevelKey"],
        "payload_null_keys": ["NewPayloadKey"],
        "official": False,
    }
    assert admin.shape() == shown
    [event] = pull_raw(vod)
    assert event == {
        "EventHandle": event["EventHandle"],
        "EventType": "MediaCastStatusChanged",
        "MediaCastStatusChangedEvent": {"CastId": "c1", "NewPayloadKey": None},
        "NewTopLevelKey": None,
    }


def test_leased_event_keeps_its_content_and_its_redelivery_has_the_new_shape(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory(lease_seconds=0.3, long_poll_seconds=2)
    vod, admin = make_vod_client(emulator), EmulatorAdmin(emulator.url)
    admin.enqueue(CAST)
    [first] = pull_raw(vod)
    admin.set_shape(null_keys=["NewTopLevelKey"], payload_null_keys=["NewPayloadKey"])
    assert first == {"EventHandle": first["EventHandle"], **CAST}  # sent before the change
    [again] = pull_raw(vod)  # the long poll outlasts the lease
    assert again["EventHandle"] != first["EventHandle"]
    assert again["NewTopLevelKey"] is None
    assert again["MediaCastStatusChangedEvent"] == {"CastId": "c1", "NewPayloadKey": None}
    assert admin.stats()["Redelivered"] == 1
    confirm(vod, [again])
    assert admin.stats()["Confirmed"] == 1


def test_empty_shape_resets_to_entries_as_enqueued(admin: EmulatorAdmin, vod: VodClient) -> None:
    admin.set_shape(null_keys=["A"], official=True)
    plain = {"null_keys": [], "payload_null_keys": [], "official": False}
    assert admin._call("POST", "/_emulator/shape", {})["Shape"] == plain
    admin.enqueue(CAST)
    [event] = pull_raw(vod)
    assert event == {"EventHandle": event["EventHandle"], **CAST}


def test_official_shape_carries_every_payload_field_null_where_it_does_not_apply(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory(samples=True)
    vod, admin = make_vod_client(emulator), EmulatorAdmin(emulator.url)
    admin.set_shape(official=True)
    samples = {sample["EventType"]: sample for sample in load_samples()}
    delivered: list[dict[str, Any]] = []
    while len(delivered) < len(samples):
        events = pull_raw(vod)
        confirm(vod, events)
        delivered += events
    for event in delivered:
        sample = samples[event["EventType"]]
        assert set(OFFICIAL_FIELDS) <= set(event)
        assert {k: v for k, v in event.items() if k in sample} == sample
        added = set(event) - set(sample) - {"EventHandle"}
        assert all(event[key] is None for key in added)
    # The SDK's own model reads the official shape: its payload is the one that is not null.
    model = models.EventContent()
    model._deserialize(delivered[0])
    assert model.EventType == delivered[0]["EventType"]


def test_shape_keeps_keys_the_entry_already_has(admin: EmulatorAdmin, vod: VodClient) -> None:
    entry = {
        "EventType": "FileDeleted",
        "FileDeleteEvent": {"FileIdSet": ["f"], "Extra": 1},
        "Extra": "kept",
    }
    admin.enqueue(entry)
    admin.set_shape(null_keys=["Extra"], payload_null_keys=["Extra"], official=True)
    [event] = pull_raw(vod)
    assert event["Extra"] == "kept"
    assert event["FileDeleteEvent"] == {"FileIdSet": ["f"], "Extra": 1}


@pytest.mark.parametrize(
    ("document", "mentioned"),
    [
        ([], "JSON object"),
        ({"null_key": ["A"]}, "null_key"),
        ({"null_keys": "A"}, "list"),
        ({"null_keys": [1]}, "null_keys"),
        ({"null_keys": [""]}, "empty"),
        ({"null_keys": ["EventHandle"]}, "EventHandle"),
        ({"payload_null_keys": ["\ud800"]}, "lone surrogate"),
        ({"official": "yes"}, "official"),
        ({"official": 1}, "official"),
    ],
)
def test_bad_shape_is_refused_and_the_old_one_stays(
    admin: EmulatorAdmin, document: Any, mentioned: str
) -> None:
    admin.set_shape(null_keys=["Kept"])
    status, message = refused(lambda: admin._call("POST", "/_emulator/shape", document))
    assert status == 400
    assert mentioned in message
    assert admin.shape()["null_keys"] == ["Kept"]


# -- identity ------------------------------------------------------------------------------


def test_identical_entries_enqueued_are_distinct_events(
    admin: EmulatorAdmin, vod: VodClient
) -> None:
    """Working, Stopped, Working: the second Working is a new event with the same content."""
    working = {
        "EventType": "MediaCastStatusChanged",
        "MediaCastStatusChangedEvent": {"Status": "W"},
    }
    admin.enqueue([working, working])
    events = pull_raw(vod)
    assert len(events) == 2
    assert events[0]["EventHandle"] != events[1]["EventHandle"]
    assert [{k: v for k, v in e.items() if k != "EventHandle"} for e in events] == [working] * 2
    confirm(vod, events)
    assert admin.stats()["Confirmed"] == 2


# -- what cannot be served is never accepted ------------------------------------------------


def nested(depth: int) -> str:
    """An entry's text with a value `depth` lists deep, built as text: no recursion here."""
    return '{"EventType": "Deep", "Deep": ' + "[" * depth + "]" * depth + "}"


def post_events(emulator: Emulator, text: str) -> tuple[int, dict[str, Any]]:
    body = text.encode("utf-8")
    with socket.create_connection((emulator.host, emulator.port), timeout=30) as sock:
        sock.sendall(
            b"POST /_emulator/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.parametrize(
    "text",
    [
        '{"EventType": "X", "Note": "cut emoji \\ud83d"}',
        '{"EventType": "X", "X": {"\\udc00": 1}}',
        '[{"EventType": "Fine"}, {"EventType": "X", "Deep": [["\\ud800"]]}]',
    ],
)
def test_entry_with_a_lone_surrogate_is_refused_and_nothing_is_enqueued(
    emulator: Emulator, admin: EmulatorAdmin, vod: VodClient, text: str
) -> None:
    status, answer = post_events(emulator, text)
    assert status == 400
    assert "cannot be served" in answer["Error"]
    assert "lone surrogate" in answer["Error"]
    assert admin.stats()["Queued"] == 0
    admin.enqueue({"EventType": "After"})
    assert [e["EventType"] for e in pull_raw(vod)] == ["After"]  # the emulator serves on


def test_refusal_names_the_entry_of_a_list(emulator: Emulator) -> None:
    status, answer = post_events(emulator, '[{"A": 1}, {"A": 2}, {"A": "\\udfff"}]')
    assert status == 400
    assert answer["Error"].startswith("entry 2 cannot be served")


def test_a_well_formed_surrogate_pair_is_served(admin: EmulatorAdmin, vod: VodClient) -> None:
    emulator_text = '{"EventType": "X", "Note": "\\ud83d\\ude00"}'
    admin._call("POST", "/_emulator/events", json.loads(emulator_text))
    [event] = pull_raw(vod)
    assert event["Note"] == "\U0001f600"


def test_deep_entries_are_accepted_up_to_where_they_can_be_read_and_then_served(
    emulator: Emulator,
) -> None:
    """The boundary: find the deepest entry accepted, pull it, and get it intact."""
    accepted, refused_at = 1, 200_000
    assert post_events(emulator, nested(accepted))[0] == 200
    status, answer = post_events(emulator, nested(refused_at))
    assert status == 400
    assert "deep" in answer["Error"]
    while refused_at - accepted > 1:
        middle = (accepted + refused_at) // 2
        if post_events(emulator, nested(middle))[0] == 200:
            accepted = middle
        else:
            refused_at = middle
    assert accepted > 500  # a few hundred levels are accepted, as JSON allows
    admin = EmulatorAdmin(emulator.url)
    assert admin.stats()["Queued"] > 1  # every probe that was accepted waits, nothing else
    body = b""
    expected = ("[" * accepted + "]" * accepted).encode()
    for _ in range(100):
        raw = _signed_pull(emulator)
        body += raw
        if expected in raw:
            break
    assert expected in body, "the deepest accepted entry was not served intact"


def _signed_pull(emulator: Emulator) -> bytes:
    """One PullEvents answer as raw bytes: the SDK would parse it, at the test's own depth."""
    raw = exchange(emulator, signed_request(emulator, "PullEvents", close=True))
    assert raw.status == 200
    return raw.body


def test_api_request_nested_too_deeply_is_an_invalid_parameter(emulator: Emulator) -> None:
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    raw = exchange(emulator, signed_request(emulator, "PullEvents", body=deep, close=True))
    assert raw.document["Response"]["Error"]["Code"] == "InvalidParameter"
