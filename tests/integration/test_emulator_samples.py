"""`--samples`: one event of every known type, delivered intact to the real SDK."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models

from tests.conftest import EmulatorFactory, make_vod_client
from vodpoller.emulator.samples import load_samples

SAMPLES = load_samples()


def without_none(value: Any) -> Any:
    """The JSON value with every null member left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(item) for item in value]
    return value


def as_plain_json(model: Any) -> Any:
    return without_none(json.loads(model.to_json_string()))


def parse_event(entry: dict[str, Any]) -> Any:
    """The entry through the SDK's own model; any field the model lacks warns, and fails."""
    event = models.EventContent()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        event._deserialize(entry)
    return event


def test_samples_hold_one_entry_per_event_type() -> None:
    types = [sample["EventType"] for sample in SAMPLES]
    assert types
    assert len(types) == len(set(types))
    assert not any("EventHandle" in sample for sample in SAMPLES)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["EventType"] for s in SAMPLES])
def test_sample_parses_into_the_sdk_model_without_losing_a_field(sample: dict[str, Any]) -> None:
    entry = {"EventHandle": "h", **sample}
    assert as_plain_json(parse_event(entry)) == without_none(entry)


def test_plain_sdk_pull_loop_returns_every_sample_type_intact(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory(samples=True, long_poll_seconds=0.2)
    vod = make_vod_client(emulator)
    delivered: list[Any] = []
    while True:
        try:
            events = vod.PullEvents(models.PullEventsRequest()).EventSet
        except TencentCloudSDKException as error:
            if error.code != "ResourceNotFound":
                raise
            break
        delivered += events
        confirm = models.ConfirmEventsRequest()
        confirm.EventHandles = [event.EventHandle for event in events]
        vod.ConfirmEvents(confirm)

    by_type = {sample["EventType"]: without_none(sample) for sample in SAMPLES}
    assert sorted(event.EventType for event in delivered) == sorted(by_type)
    for event in delivered:
        received = as_plain_json(event)
        assert received.pop("EventHandle")
        assert received == by_type[event.EventType], event.EventType
