"""Pure: one `EventSet` entry -> an `Event` with the typed columns, the raw entry and the keys
of its content. Tolerant by design: unknown types, odd shapes and missing fields are kept.
Which row an event lands in (a new one, or the one it is a redelivery of) is `identity.py`'s."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from vodpoller import rawjson
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
    # The entry's JSON exactly as received, when a database can hold it as it is: stored as
    # the payload without writing `payload` out again.
    payload_text: str | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """Across a pipe (the store process) the text stands for the payload: half the bytes
        to pickle, and the store writes the text anyway."""
        state = dict(self.__dict__)
        if self.payload_text is not None:
            state["payload"] = {}
        return state


# NUL and lone surrogates written as escapes: PostgreSQL refuses them in JSON text.
_ESCAPED_UNSTORABLE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


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
    """Sorted keys, no spaces, non-ASCII kept, numbers as VOD wrote them when a float would
    change them (rawjson): the same bytes for the same event, always."""
    return rawjson.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def without_nulls(value: Any) -> Any:
    """The value with every object key whose value is null left out, at any depth: VOD lists
    every payload key of every type, null where it does not apply, so a release that adds a
    type adds a null key to every entry; absent and null mean the same thing. Nulls inside
    lists keep their place."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    if isinstance(value, Mapping):
        return without_nulls(dict(value))
    return value


# A member whose value is null, in canonical JSON (compact, as `canonical_json` writes it): a
# key string, then `:null`, then `,` or `}`. Inside a JSON string every `"` is escaped, so an
# unescaped `"` right after `{` or `,` always starts a key.
_KEY = r'"[^"\\]*(?:\\.[^"\\]*)*"'  # a JSON string, the loop unrolled (no backtracking)
_NULL_MEMBER_AFTER_COMMA = re.compile(rf",{_KEY}:null(?=[,}}])")
_NULL_MEMBER_FIRST = re.compile(rf"(?<=\{{){_KEY}:null(?:,|(?=\}}))")


def strip_null_members(canonical: str) -> str:
    """`canonical_json(without_nulls(v))` from `canonical_json(v)`, without another walk and
    dump: the text with every null-valued member taken out."""
    text = _NULL_MEMBER_AFTER_COMMA.sub("", canonical)
    # A first member removed can make the next one first: repeat until none is left.
    while True:
        stripped = _NULL_MEMBER_FIRST.sub("", text)
        if stripped == text:
            return text
        text = stripped


def _keys(entry: Mapping[str, Any], sub_app_id: int | None) -> tuple[str, str, Mapping[str, Any]]:
    """(content key, legacy key, the entry made storable): one canonical text per entry, and
    no walk over it unless its text shows unstorable characters (the hot path: a backlog is
    100 answers of 16 entries a second)."""
    text = canonical_json(_body(entry))
    try:
        data = text.encode("utf-8")  # a lone surrogate cannot be encoded
        clean = b"\\u0000" not in data and _storable_handle(entry.get("EventHandle"))
    except UnicodeEncodeError:
        clean = False
    if not clean:
        entry = storable(entry)
        text = canonical_json(_body(entry))
        data = text.encode("utf-8")
    legacy = _sha256_hex_bytes(sub_app_id, data)
    if b":null" not in data:
        return legacy, legacy, entry
    return _sha256_hex(sub_app_id, strip_null_members(text)), legacy, entry


def _storable_handle(handle: Any) -> bool:
    """The handle is outside the keys' text, but stored in the payload and its column too."""
    if not isinstance(handle, str):
        return True
    try:
        handle.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in handle


def _sha256_hex_bytes(sub_app_id: int | None, canonical: bytes) -> str:
    prefix = b"" if sub_app_id is None else str(sub_app_id).encode()
    return hashlib.sha256(prefix + b":" + canonical).hexdigest()


def _sha256_hex(sub_app_id: int | None, canonical: str) -> str:
    prefix = "" if sub_app_id is None else str(sub_app_id)
    return hashlib.sha256(f"{prefix}:{canonical}".encode()).hexdigest()


def _body(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "EventHandle"}


def content_key(entry: Mapping[str, Any], sub_app_id: int | None) -> str:
    """SHA-256 hex over `<sub_app_id or empty>:` + the canonical entry without `EventHandle`
    and without null keys."""
    return _keys(entry, sub_app_id)[0]


def legacy_key(entry: Mapping[str, Any], sub_app_id: int | None) -> str:
    """The 0.1 dedup key: as `content_key`, but null keys included."""
    return _keys(entry, sub_app_id)[1]


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


def parse_entry(entry: Mapping[str, Any], sub_app_id: int | None, text: str | None = None) -> Event:
    """Build the record for one entry of a `PullEvents` answer. `text`: the entry's JSON as
    received, stored as the payload as it is when the database can hold it."""
    content, legacy, clean = _keys(entry, sub_app_id)
    raw = (
        text
        if text is not None and clean is entry and not _ESCAPED_UNSTORABLE.search(text)
        else None
    )
    entry = clean
    payload = find_payload(entry) or {}
    output = _object(payload.get("Output"))
    return Event(
        content_key=content,
        legacy_key=legacy,
        sub_app_id=sub_app_id,
        event_type=_text(entry.get("EventType"), SHORT_TEXT) or "",
        event_handle=_text(entry.get("EventHandle"), LONG_TEXT) or "",
        payload=dict(entry),
        payload_text=raw,
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
