"""vod_rejects: entries that could not be parsed or stored, kept as received with the reason;
their handles are confirmed so that they do not come back.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc_timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _long_text() -> sa.Text:
    # An answer may be megabytes; MySQL's TEXT stops at 64 kB.
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "vod_rejects",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("sub_app_id", sa.BigInteger(), nullable=True),
        sa.Column("event_handle", _long_text(), nullable=True),
        sa.Column("raw", _long_text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", _utc_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vod_rejects")),
        mysql_charset="utf8mb4",
    )
    op.create_index(op.f("ix_vod_rejects_received_at"), "vod_rejects", ["received_at"])


def downgrade() -> None:
    op.drop_table("vod_rejects")
