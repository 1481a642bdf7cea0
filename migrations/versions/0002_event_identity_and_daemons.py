"""Event identity (content_key, occurrence, held_by, delivered_at) and the running daemons.

Rows stored by 0.1 keep their dedup_key. Those that may still be delivered again (not
confirmed) get their content_key here, so that a redelivery finds them even when VOD has
added a null key to the entry meanwhile; confirmed ones cannot come back and keep content_key
NULL (a new daemon still finds them through dedup_key, the 0.1 recipe). A 0.1 daemon that
runs on for a moment after the upgrade writes rows without content_key; the new one finds
those through dedup_key too.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = 64
_SHORT_TEXT = 255
_BACKFILL_PAGE = 1000

# The content key as vodpoller 0.2 computes it (vodpoller.events.content_key), written out so
# that this revision does the same whatever the code becomes later.
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _content_key(payload: Mapping[str, Any], sub_app_id: int | None) -> str:
    body = {key: value for key, value in _storable(payload).items() if key != "EventHandle"}
    canonical = json.dumps(
        _without_nulls(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    prefix = "" if sub_app_id is None else str(sub_app_id)
    return hashlib.sha256(f"{prefix}:{canonical}".encode()).hexdigest()


def _utc_timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


_events = sa.table(
    "vod_events",
    sa.column("id", sa.BigInteger()),
    sa.column("sub_app_id", sa.BigInteger()),
    sa.column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.column("confirmed_at", _utc_timestamp()),
    sa.column("content_key", sa.String(_KEY)),
    sa.column("occurrence", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("vod_events") as table:
        table.add_column(sa.Column("content_key", sa.String(_KEY), nullable=True))
        table.add_column(
            sa.Column("occurrence", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        table.add_column(sa.Column("held_by", sa.String(_KEY), nullable=True))
        table.add_column(sa.Column("delivered_at", _utc_timestamp(), nullable=True))
    op.create_index(op.f("ix_vod_events_content_key"), "vod_events", ["content_key", "occurrence"])
    _backfill_content_keys()
    op.create_table(
        "vod_daemons",
        sa.Column("id", sa.String(_KEY), nullable=False),
        sa.Column("host", sa.String(_SHORT_TEXT), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("boot_id", sa.String(_KEY), nullable=True),
        sa.Column("version", sa.String(_KEY), nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("applications", sa.Text(), nullable=True),
        sa.Column("started_at", _utc_timestamp(), nullable=False),
        sa.Column("heartbeat_at", _utc_timestamp(), nullable=False),
        sa.Column("last_poll_at", _utc_timestamp(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", _utc_timestamp(), nullable=True),
        *(
            sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
            for name in ("pulled", "stored", "duplicates", "confirmed")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vod_daemons")),
        mysql_charset="utf8mb4",
    )


def _unconfirmed_pages() -> Iterator[list[Any]]:
    """Unconfirmed rows in pages by id: bounded memory on a large table."""
    bind = op.get_bind()
    after = -1
    while True:
        page = bind.execute(
            sa.select(_events.c.id, _events.c.sub_app_id, _events.c.payload)
            .where(_events.c.confirmed_at.is_(None), _events.c.id > after)
            .order_by(_events.c.id)
            .limit(_BACKFILL_PAGE)
        ).all()
        if not page:
            return
        yield list(page)
        after = page[-1].id


def _backfill_content_keys() -> None:
    bind = op.get_bind()
    occurrences: dict[str, int] = {}
    for page in _unconfirmed_pages():
        updates = []
        for row in page:
            payload = row.payload if isinstance(row.payload, Mapping) else json.loads(row.payload)
            key = _content_key(payload, row.sub_app_id)
            # 0.1 kept two rows for one event whose deliveries differed by a null key: both
            # get this content key now, with distinct occurrence numbers.
            occurrence = occurrences.get(key, -1) + 1
            occurrences[key] = occurrence
            updates.append({"row_id": row.id, "key": key, "occurrence": occurrence})
        bind.execute(
            sa.update(_events)
            .where(_events.c.id == sa.bindparam("row_id"))
            .values(content_key=sa.bindparam("key"), occurrence=sa.bindparam("occurrence")),
            updates,
        )


def downgrade() -> None:
    op.drop_table("vod_daemons")
    op.drop_index(op.f("ix_vod_events_content_key"), table_name="vod_events")
    with op.batch_alter_table("vod_events") as table:
        table.drop_column("delivered_at")
        table.drop_column("held_by")
        table.drop_column("occurrence")
        table.drop_column("content_key")
