"""Pure: one `EventSet` entry -> an `Event` with the typed columns, the raw entry and the keys
of its content. Tolerant by design: unknown types, odd shapes and missing fields are kept.
Which row an event lands in (a new one, or the one it is a redelivery of) is `identity.py`'s."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from vodpoller.eventtypes import PAYLOAD_FIELD_BY_TYPE

# The typed columns are conveniences for queries; the whole entry is in `payload`. Values
# longer than their column are cut to fit rather than refused.
SHORT_TEXT: Final = 255
LONG_TEXT: Final = 4096
BIGINT_MIN: Final = -(2**63)
BIGINT_MAX: Final = 2**63 - 1
_NOT_PAYLOAD: Final = frozenset({"EventHandle", "EventType"})
# Text no database can hold: lone UTF-16 surrogates (a cut emoji, `json.loads` lets them
# through) and NUL (PostgreSQL refuses it in text and JSONB).
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
REPLACEMENT: Final = "\ufffd"


# The columns copied out of the payload, in the table's order.
PAYLOAD_COLUMNS: Final = (
    "task_id",
    "file_id",
    "status",
    "err_code",
    "message",
    "file_url",
    "session_context",
    "session_id",
)


@dataclass(frozen=True)
class Event:
    # What the event says, null keys aside: equal for a redelivery, and for another event that
    # happens to say exactly the same thing (identity.py tells the two apart).
    content_key: str
    # The 0.1 recipe (null keys included): the dedup_key of the first row of some content, so
    # that daemons of both versions recognise each other's rows during an upgrade.
    legacy_key: str
    sub_app_id: int | None
    event_type: str
    event_handle: str
    payload: dict[str, Any]
    task_id: str | None = None
    file_id: str | None = None
    status: str | None = None
    err_code: int | None = None
    message: str | None = None
    file_url: str | None = None
    session_context: str | None = None
    session_id: str | None = None


def storable(value: Any) -> Any:
    """The value with unstorable characters in every string (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, Mapping):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, non-ASCII kept: the same bytes for the same event, always."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def without_nulls(value: Any) -> Any:
    """The value with every object key whose value is null left out, at any depth: VOD lists
    every payload key of every type, null where it does not apply, so a release that adds a
    type adds a null key to every entry; absent and null mean the same thing. Nulls inside
    lists keep their place."""
    if isinstance(value, Mapping):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def _sha256_hex(sub_app_id: int | None, canonical: str) -> str:
    prefix = "" if sub_app_id is None else str(sub_app_id)
    return hashlib.sha256(f"{prefix}:{canonical}".encode()).hexdigest()


def _body(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "EventHandle"}


def content_key(entry: Mapping[str, Any], sub_app_id: int | None) -> str:
    """SHA-256 hex over `<sub_app_id or empty>:` + the canonical entry without `EventHandle`
    and without null keys."""
    return _sha256_hex(sub_app_id, canonical_json(without_nulls(_body(storable(entry)))))


def legacy_key(entry: Mapping[str, Any], sub_app_id: int | None) -> str:
    """The 0.1 dedup key: as `content_key`, but null keys included."""
    return _sha256_hex(sub_app_id, canonical_json(_body(storable(entry))))


def find_payload(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The payload object: by the EventType table, else the one non-null object-valued key."""
    field = PAYLOAD_FIELD_BY_TYPE.get(str(entry.get("EventType")))
    if field is not None and isinstance(entry.get(field), Mapping):
        payload: Mapping[str, Any] = entry[field]
        return payload
    objects = [v for k, v in entry.items() if k not in _NOT_PAYLOAD and isinstance(v, Mapping)]
    return objects[0] if len(objects) == 1 else None


def _text(value: Any, limit: int) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    if isinstance(value, bool):
        value = str(value).lower()
    return str(value)[:limit]


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            return None
    # The column is a BIGINT; anything beyond stays in the payload only.
    if number is None or not BIGINT_MIN <= number <= BIGINT_MAX:
        return None
    return number


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _media_basic_info(container: Mapping[str, Any]) -> Mapping[str, Any]:
    info = _object(container.get("MediaBasicInfo"))
    # A documentation sample nests a MediaBasicInfo inside MediaBasicInfo: accept both shapes.
    return _object(info.get("MediaBasicInfo")) or info


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def parse_entry(entry: Mapping[str, Any], sub_app_id: int | None) -> Event:
    """Build the record for one entry of a `PullEvents` answer."""
    entry = storable(entry)
    payload = find_payload(entry) or {}
    output = _object(payload.get("Output"))
    body = _body(entry)  # `entry` is storable already
    return Event(
        content_key=_sha256_hex(sub_app_id, canonical_json(without_nulls(body))),
        legacy_key=_sha256_hex(sub_app_id, canonical_json(body)),
        sub_app_id=sub_app_id,
        event_type=_text(entry.get("EventType"), SHORT_TEXT) or "",
        event_handle=_text(entry.get("EventHandle"), LONG_TEXT) or "",
        payload=dict(entry),
        task_id=_text(payload.get("TaskId"), SHORT_TEXT),
        file_id=_text(_first(payload.get("FileId"), output.get("FileId")), SHORT_TEXT),
        status=_text(payload.get("Status"), SHORT_TEXT),
        err_code=_integer(payload.get("ErrCode")),
        message=_text(payload.get("Message"), LONG_TEXT),
        file_url=_text(
            _first(
                payload.get("FileUrl"),
                _media_basic_info(payload).get("MediaUrl"),
                output.get("FileUrl"),
                _media_basic_info(output).get("MediaUrl"),
            ),
            LONG_TEXT,
        ),
        session_context=_text(payload.get("SessionContext"), LONG_TEXT),
        session_id=_text(payload.get("SessionId"), SHORT_TEXT),
    )
