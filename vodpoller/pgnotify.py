"""PostgreSQL NOTIFY for new rows (`[database] notify_channel`): applications LISTEN instead of
polling the table. Sent inside the storing transaction, so PostgreSQL delivers it when the rows
commit and never for a batch that rolled back.

The payload is JSON, `{"ids": [...], "event_types": [...]}` (the same order), one NOTIFY per
transaction; a list too long for PostgreSQL's payload limit (under 8,000 bytes) is split into
several, all delivered together at the commit."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Final

from sqlalchemy import Connection, text

# PostgreSQL refuses a payload of 8,000 bytes or more (in the database's encoding).
MAX_PAYLOAD_BYTES: Final = 7999
_EMPTY_BYTES: Final = len('{"ids":[],"event_types":[]}')
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def payloads(created: Sequence[tuple[int, str]], limit: int = MAX_PAYLOAD_BYTES) -> Iterator[str]:
    """The JSON texts for these (id, event type) rows, in order, each at most `limit` bytes
    (ASCII: json.dumps escapes the rest). A payload is never empty."""
    ids: list[int] = []
    types: list[str] = []
    size = _EMPTY_BYTES
    for row_id, event_type in created:
        quoted = json.dumps(event_type)
        grows = len(str(row_id)) + len(quoted) + (2 if ids else 0)  # two commas after the first
        if ids and size + grows > limit:
            yield _payload(ids, types)
            ids, types, size = [], [], _EMPTY_BYTES
            grows -= 2
        ids.append(row_id)
        types.append(event_type)
        size += grows
    if ids:
        yield _payload(ids, types)


def send(connection: Connection, channel: str, created: Sequence[tuple[int, str]]) -> None:
    """NOTIFY `channel` about these new rows; nothing when there are none."""
    for payload in payloads(created):
        connection.execute(_NOTIFY, {"channel": channel, "payload": payload})


def _payload(ids: list[int], types: list[str]) -> str:
    return json.dumps({"ids": ids, "event_types": types}, separators=(",", ":"))
