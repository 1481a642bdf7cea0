"""Both callback modes: `pushed_deliveries` counts the deliveries that came by normal callback
(the receiver), and the forwarder keeps its progress per row: `forwarded_at` once the user's
handler answered 2xx, `forward_attempts` failed tries, `forward_claim` the daemon's claim
while it sends, `forward_after` when the row may be tried (again) or the claim runs out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc_timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    # Server defaults: rows a daemon of the previous version writes meanwhile get them too.
    with op.batch_alter_table("vod_events") as table:
        table.add_column(
            sa.Column(
                "pushed_deliveries", sa.Integer(), nullable=False, server_default=sa.text("0")
            )
        )
        table.add_column(sa.Column("forwarded_at", _utc_timestamp(), nullable=True))
        table.add_column(
            sa.Column("forward_attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        table.add_column(sa.Column("forward_claim", sa.String(64), nullable=True))
        table.add_column(sa.Column("forward_after", _utc_timestamp(), nullable=True))
    # With event_types set, rows of the other types stay unforwarded for good: the type in the
    # index keeps the forwarder's search from stepping over them.
    op.create_index(
        op.f("ix_vod_events_forwarded_at"), "vod_events", ["forwarded_at", "event_type"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_vod_events_forwarded_at"), table_name="vod_events")
    with op.batch_alter_table("vod_events") as table:
        for column in (
            "forward_after",
            "forward_claim",
            "forward_attempts",
            "forwarded_at",
            "pushed_deliveries",
        ):
            table.drop_column(column)
