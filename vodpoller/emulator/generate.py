"""Synthetic events of mixed types for load tests: the samples with fresh ids in them. Each
sample is encoded once with placeholders where its ids go; an event is then the sample's text
with fresh ids spliced in, so that a backlog of 100,000 takes a second, not a minute."""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from vodpoller.emulator import wire
from vodpoller.emulator.samples import load_samples
from vodpoller.emulator.wire import Encoded, Entry

# Keys whose values identify an event; fresh values make each generated event distinct.
_IDENTITY_KEYS = frozenset({"TaskId", "FileId", "CastId", "SessionId", "SessionContext"})
_PLACEHOLDER = "\x00vodpoller-id-{}\x00"  # no sample holds a NUL


@dataclass(frozen=True)
class _Template:
    encoded: Encoded  # with a placeholder for every id
    pieces: tuple[bytes, ...]  # the text around the placeholders, one more than the ids
    ids: tuple[tuple[str, str], ...]  # (key, value in the sample), in the order of the text
    placeholder_bytes: tuple[int, ...]  # each placeholder's length in the text
    before_payload: tuple[bool, ...]  # each placeholder lies before the payload's end


def _with_placeholders(value: Any, ids: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        fresh: dict[str, Any] = {}
        for key, item in value.items():
            if key in _IDENTITY_KEYS and isinstance(item, str):
                fresh[key] = _PLACEHOLDER.format(len(ids))
                ids.append((key, item))
            else:
                fresh[key] = _with_placeholders(item, ids)
        return fresh
    if isinstance(value, list):
        return [_with_placeholders(item, ids) for item in value]
    return value


def _template(sample: Entry) -> _Template | None:
    ids: list[tuple[str, str]] = []
    encoded = wire.encode(_with_placeholders(sample, ids))
    if not ids:
        return None
    text = encoded.text
    marks = sorted(
        (text.index(json.dumps(_PLACEHOLDER.format(n)).encode()), n) for n in range(len(ids))
    )
    pieces: list[bytes] = []
    lengths: list[int] = []
    start = 0
    for offset, n in marks:
        length = len(json.dumps(_PLACEHOLDER.format(n)).encode())
        pieces.append(text[start:offset])
        lengths.append(length)
        start = offset + length
    pieces.append(text[start:])
    return _Template(
        encoded,
        tuple(pieces),
        tuple(ids[n] for _, n in marks),
        tuple(lengths),
        tuple(offset < encoded.payload_end for offset, _ in marks),
    )


@functools.cache
def _templates() -> tuple[_Template, ...]:
    """One per sample type that has ids to make fresh."""
    return tuple(t for t in map(_template, load_samples()) if t is not None)


def _fresh_id(key: str, old: str, rng: random.Random) -> str:
    if key == "FileId":
        return str(rng.randrange(10**18, 10**19))
    head, sep, _ = old.rpartition("-")
    suffix = f"{rng.getrandbits(128):032x}"
    return f"{head}{sep}{suffix}" if sep else f"{old[:16]}-{suffix}"


def _event(template: _Template, rng: random.Random) -> Encoded:
    parts = [template.pieces[0]]
    shift = 0
    for (key, old), piece, length, before in zip(
        template.ids,
        template.pieces[1:],
        template.placeholder_bytes,
        template.before_payload,
        strict=True,
    ):
        quoted = json.dumps(_fresh_id(key, old, rng), ensure_ascii=False).encode("utf-8")
        parts += (quoted, piece)
        if before:
            shift += len(quoted) - length
    encoded = template.encoded
    payload_end = encoded.payload_end + shift if encoded.payload_end else 0
    return replace(encoded, text=b"".join(parts), payload_end=payload_end)


def synthetic_events(rng: random.Random) -> Iterator[Encoded]:
    """An endless stream of distinct events cycling through every sample type that has ids."""
    for template in itertools.cycle(_templates()):
        yield _event(template, rng)


def generate_encoded(count: int, rng: random.Random) -> list[Encoded]:
    return list(itertools.islice(synthetic_events(rng), count))


def generate(count: int, rng: random.Random) -> list[Entry]:
    return [wire.decode(event) for event in generate_encoded(count, rng)]
