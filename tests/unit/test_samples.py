"""The emulator's sample events against the SDK's `EventContent` model and the EventType table."""

from __future__ import annotations

import json
import warnings
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import pytest
from tencentcloud.common.abstract_model import AbstractModel
from tencentcloud.vod.v20180717.models import EventContent

from vodpoller.eventtypes import PAYLOAD_FIELD_BY_TYPE, PAYLOAD_FIELDS

_NOT_PAYLOAD = frozenset({"EventHandle", "EventType"})


def _sample_files() -> list[Traversable]:
    folder = resources.files("vodpoller.emulator") / "samples"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)


def _load(file: Traversable) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return entry


def _stem(file: Traversable) -> str:
    return file.name.removesuffix(".json")


def _sdk_payload_fields() -> set[str]:
    """Every attribute of a fresh `EventContent` except the handle and the type."""
    names = {name.removeprefix("_") for name in vars(EventContent())}
    return names - _NOT_PAYLOAD - {"headers"}


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


SAMPLES = _sample_files()
SAMPLE_IDS = [_stem(f) for f in SAMPLES]


def test_the_sdk_event_content_still_has_37_payload_fields() -> None:
    assert len(_sdk_payload_fields()) == 37


def test_the_type_table_covers_exactly_the_sdk_payload_fields() -> None:
    assert set(PAYLOAD_FIELD_BY_TYPE.values()) == _sdk_payload_fields()
    assert _sdk_payload_fields() == PAYLOAD_FIELDS
    assert len(PAYLOAD_FIELD_BY_TYPE) == len(PAYLOAD_FIELDS)


def test_there_is_exactly_one_sample_per_sdk_payload_field() -> None:
    fields = [PAYLOAD_FIELD_BY_TYPE[_load(f)["EventType"]] for f in SAMPLES]
    assert sorted(fields) == sorted(_sdk_payload_fields())


def test_each_sample_file_is_named_after_its_event_type() -> None:
    assert [_load(f)["EventType"] for f in SAMPLES] == SAMPLE_IDS


@pytest.mark.parametrize("file", SAMPLES, ids=SAMPLE_IDS)
def test_the_event_type_points_at_the_one_non_null_payload_key(file: Traversable) -> None:
    entry = _load(file)
    assert "EventHandle" not in entry
    non_null = [k for k, v in entry.items() if k not in _NOT_PAYLOAD and v is not None]
    assert non_null == [PAYLOAD_FIELD_BY_TYPE[entry["EventType"]]]
    assert set(entry) - _NOT_PAYLOAD <= PAYLOAD_FIELDS


@pytest.mark.parametrize("file", SAMPLES, ids=SAMPLE_IDS)
def test_the_sdk_parses_the_sample_without_warnings_or_losing_anything(
    file: Traversable,
) -> None:
    entry = _load(file)
    model = EventContent()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._deserialize(entry)
    payload = getattr(model, PAYLOAD_FIELD_BY_TYPE[entry["EventType"]])
    assert isinstance(payload, AbstractModel)
    assert _strip_none(json.loads(model.to_json_string())) == _strip_none(entry)


def test_at_least_ten_samples_carry_all_37_payload_keys() -> None:
    full = [f for f in SAMPLES if set(_load(f)) - _NOT_PAYLOAD == _sdk_payload_fields()]
    assert len(full) >= 10


@pytest.mark.parametrize("file", SAMPLES, ids=SAMPLE_IDS)
def test_the_sample_is_pretty_printed_with_two_spaces_and_a_final_newline(
    file: Traversable,
) -> None:
    text = file.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
