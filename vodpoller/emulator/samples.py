"""Sample `EventSet` entries, one per known event type, kept as JSON files in `samples/`."""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources

from vodpoller.emulator.queue import Entry


@functools.cache
def _load() -> tuple[Entry, ...]:
    folder = resources.files("vodpoller.emulator") / "samples"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    return tuple(json.loads(f.read_text(encoding="utf-8")) for f in files)


def load_samples() -> list[Entry]:
    """A fresh copy of every sample, in file-name order."""
    return copy.deepcopy(list(_load()))
