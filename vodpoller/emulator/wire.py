"""An entry on the wire: encoded once, when it is enqueued, so that an entry that cannot be
served is refused then (a lone surrogate, nesting too deep for the encoder); rendered for each
delivery by joining bytes, with its handle and in the current shape, which cannot fail."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vodpoller.emulator.shape import PLAIN, Shape
from vodpoller.eventtypes import PAYLOAD_FIELD_BY_TYPE

Entry = dict[str, Any]


class UnservableError(ValueError):
    """An entry that could not be sent as JSON in UTF-8."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """An entry without its `EventHandle`: `text` is exactly
    `json.dumps(entry, ensure_ascii=False).encode("utf-8")`."""

    text: bytes
    keys: tuple[str, ...]
    # Where the payload object ends in `text` (just past its "}"); 0 when there is none.
    payload_end: int = 0
    payload_keys: tuple[str, ...] = ()


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def payload_key(entry: Mapping[str, Any]) -> str | None:
    """The key of the payload object: the one the EventType table names when it holds an
    object, else the one object-valued key; None when there is none or more than one."""
    event_type = entry.get("EventType")
    named = PAYLOAD_FIELD_BY_TYPE.get(event_type) if isinstance(event_type, str) else None
    if named is not None and isinstance(entry.get(named), dict):
        return named
    objects = [key for key, value in entry.items() if isinstance(value, dict)]
    return objects[0] if len(objects) == 1 else None


def encode(entry: Mapping[str, Any]) -> Encoded:
    """Encode an entry (any `EventHandle` left out) or raise `UnservableError`.

    Each member is encoded on its own and the text joined exactly as `json.dumps` joins it,
    so that the payload object's place in the text is known."""
    try:
        return _encode(entry)
    except UnicodeEncodeError as error:
        bad = error.object[error.start : error.end]
        raise UnservableError(
            f"it holds a lone surrogate ({bad.encode('unicode_escape').decode()}), which "
            "UTF-8 cannot carry"
        ) from None
    except RecursionError:
        raise UnservableError("it is nested too deeply to be encoded") from None
    except (TypeError, ValueError) as error:  # not from JSON: a caller's own objects
        raise UnservableError(f"it is not JSON: {error}") from None


def encoded(event: Mapping[str, Any] | Encoded) -> Encoded:
    """An event as the queue holds it, ready to render."""
    return event if isinstance(event, Encoded) else encode(event)


def _encode(entry: Mapping[str, Any]) -> Encoded:
    payload = payload_key(entry)
    members: list[bytes] = []
    payload_end = 0
    offset = 1  # the "{"
    for key, value in entry.items():
        if key == "EventHandle":
            continue
        if not isinstance(key, str):
            raise TypeError(f"keys must be strings, not {key!r}")
        member = _json(key) + b": " + _json(value)
        if members:
            offset += 2  # ", "
        members.append(member)
        offset += len(member)
        if key == payload:
            payload_end = offset
    # Interned: the same few key names recur in every event held.
    keys = tuple(sys.intern(key) for key in entry if key != "EventHandle")
    payload_keys = (
        tuple(sys.intern(str(key)) for key in entry[payload]) if payload is not None else ()
    )
    return Encoded(b"{" + b", ".join(members) + b"}", keys, payload_end, payload_keys)


def render(encoded: Encoded, shape: Shape = PLAIN, handle: str | None = None) -> bytes:
    """The entry as sent: its `EventHandle` first when given, then its members, with the
    shape's `null` keys added (inside the payload object, then at the end)."""
    text = encoded.text
    inner = text[1:-1]
    if not shape.plain:
        payload_nulls = shape.payload_nulls(encoded.payload_keys) if encoded.payload_end else []
        if payload_nulls:
            close = encoded.payload_end - 1  # the payload's "}"
            added = b", ".join(_json(key) + b": null" for key in payload_nulls)
            comma = b", " if encoded.payload_keys else b""
            inner = text[1:close] + comma + added + text[close:-1]
        top_nulls = shape.top_level_nulls(encoded.keys)
        if top_nulls:
            added = b", ".join(_json(key) + b": null" for key in top_nulls)
            inner = inner + b", " + added if inner else added
    if handle is not None:
        # The queue's handles are hexadecimal: nothing to escape, no encoder call needed.
        quoted = f'"{handle}"'.encode() if handle.isascii() and handle.isalnum() else _json(handle)
        head = b'"EventHandle": ' + quoted
        inner = head + b", " + inner if inner else head
    return b"{" + inner + b"}"


def decode(encoded: Encoded) -> Entry:
    entry: Entry = json.loads(encoded.text)
    return entry


def answer(response: Mapping[str, Any]) -> bytes:
    """`{"Response": {..., "RequestId"}}` as the API answers it; an `EventSet` of rendered
    entries (bytes) is spliced in as it is, everything else encoded here."""
    events = response.get("EventSet")
    if not (isinstance(events, Sequence) and events and isinstance(events[0], bytes)):
        return _json({"Response": response})
    rest = _json({key: value for key, value in response.items() if key != "EventSet"})
    tail = b", " + rest[1:] if rest != b"{}" else b"}"
    return b'{"Response": {"EventSet": [' + b", ".join(events) + b"]" + tail + b"}"
