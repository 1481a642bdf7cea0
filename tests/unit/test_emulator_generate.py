"""Generated events: the samples with fresh ids, spliced into each sample's encoded text."""

from __future__ import annotations

import json
import random
from typing import Any

from vodpoller.emulator import wire
from vodpoller.emulator.generate import generate, generate_encoded
from vodpoller.emulator.samples import load_samples
from vodpoller.emulator.shape import Shape

IDENTITY_KEYS = {"TaskId", "FileId", "CastId", "SessionId", "SessionContext"}


def without_ids(value: Any) -> Any:
    """The value with every identity string blanked, at any depth."""
    if isinstance(value, dict):
        return {
            k: "<id>" if k in IDENTITY_KEYS and isinstance(v, str) else without_ids(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_ids(item) for item in value]
    return value


def ids_of(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k in IDENTITY_KEYS and isinstance(v, str)]
        return found + [i for v in value.values() for i in ids_of(v)]
    if isinstance(value, list):
        return [i for item in value for i in ids_of(item)]
    return []


def test_generated_events_are_the_samples_with_fresh_ids() -> None:
    samples = [s for s in load_samples() if ids_of(s)]
    events = generate(2 * len(samples), random.Random(7))
    assert [without_ids(e) for e in events] == [without_ids(s) for s in samples * 2]
    every_id = [i for e in events for i in ids_of(e)]
    assert len(every_id) == len(set(every_id))  # all fresh, none repeated
    assert not set(every_id) & {i for s in samples for i in ids_of(s)}


def test_generated_text_is_what_encoding_the_event_gives() -> None:
    """The spliced text, and where its payload ends, match a plain encode of the same event:
    so shapes put their null keys in the right place."""
    shape = Shape(null_keys=("Top",), payload_null_keys=("Inside",))
    for event in generate_encoded(80, random.Random(8)):
        entry = wire.decode(event)
        assert wire.encode(entry) == event
        shaped = json.loads(wire.render(event, shape))
        payload = wire.payload_key(entry)
        assert payload is not None
        assert shaped[payload]["Inside"] is None
        assert shaped["Top"] is None


def test_the_same_seed_gives_the_same_events() -> None:
    assert generate_encoded(40, random.Random(3)) == generate_encoded(40, random.Random(3))
    assert generate_encoded(40, random.Random(3)) != generate_encoded(40, random.Random(4))
