"""Synthetic events of mixed types for load tests: the samples with fresh ids in them."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

from vodpoller.emulator.queue import Entry
from vodpoller.emulator.samples import load_samples

# Keys whose values identify an event; fresh values make each generated event distinct.
_IDENTITY_KEYS = frozenset({"TaskId", "FileId", "CastId", "SessionId", "SessionContext"})


def _refresh_ids(value: Any, rng: random.Random) -> tuple[Any, bool]:
    if isinstance(value, dict):
        changed = False
        fresh: dict[str, Any] = {}
        for key, item in value.items():
            if key in _IDENTITY_KEYS and isinstance(item, str):
                fresh[key] = _fresh_id(key, item, rng)
                changed = True
            else:
                fresh[key], item_changed = _refresh_ids(item, rng)
                changed = changed or item_changed
        return fresh, changed
    if isinstance(value, list):
        items = [_refresh_ids(item, rng) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    return value, False


def _fresh_id(key: str, old: str, rng: random.Random) -> str:
    if key == "FileId":
        return str(rng.randrange(10**18, 10**19))
    head, sep, _ = old.rpartition("-")
    suffix = f"{rng.getrandbits(128):032x}"
    return f"{head}{sep}{suffix}" if sep else f"{old[:16]}-{suffix}"


def synthetic_events(rng: random.Random) -> Iterator[Entry]:
    """An endless stream of distinct events cycling through every sample type that has ids."""
    templates = [s for s in load_samples() if _refresh_ids(s, rng)[1]]
    for template in itertools.cycle(templates):
        event, _ = _refresh_ids(template, rng)
        yield event


def generate(count: int, rng: random.Random) -> list[Entry]:
    return list(itertools.islice(synthetic_events(rng), count))
