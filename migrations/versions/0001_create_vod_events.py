"""Create vod_events: one row per VOD event, deduplicated by dedup_key.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from vodpoller.schema: a revision must keep creating the
# same schema whatever the models become later.
_SHORT_TEXT = 255


def _utc_timestamp() -> sa.DateTime:
    # timestamptz on PostgreSQL; naive UTC elsewhere (DATETIME(6) for microseconds on MySQL).
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "vod_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dedup_key", sa.String(64), nullable=False),
        sa.Column("sub_app_id", sa.BigInteger(), nullable=True),
        sa.Column("event_type", sa.String(_SHORT_TEXT), nullable=False),
        sa.Column("event_handle", sa.Text(), nullable=False),
        sa.Column("task_id", sa.String(_SHORT_TEXT), nullable=True),
        sa.Column("file_id", sa.String(_SHORT_TEXT), nullable=True),
        sa.Column("status", sa.String(_SHORT_TEXT), nullable=True),
        sa.Column("err_code", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("file_url", sa.Text(), nullable=True),
        sa.Column("session_context", sa.Text(), nullable=True),
        sa.Column("session_id", sa.String(_SHORT_TEXT), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("received_at", _utc_timestamp(), nullable=False),
        sa.Column("confirmed_at", _utc_timestamp(), nullable=True),
        sa.Column("deliveries", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vod_events")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_vod_events_dedup_key")),
        mysql_charset="utf8mb4",
    )
    for column in ("event_type", "task_id", "file_id", "received_at"):
        op.create_index(op.f(f"ix_vod_events_{column}"), "vod_events", [column])


def downgrade() -> None:
    op.drop_table("vod_events")
