"""The `vod_events` table as SQLAlchemy Core sees it. Alembic revisions in `migrations/` create
and change the real schema; the migration drift test keeps the two in step."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from vodpoller.events import SHORT_TEXT

TABLE_NAME: Final = "vod_events"

# Named constraints and indexes: every dialect gets the same names, so revisions can refer to them.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC on every dialect and always read back timezone-aware in UTC.

    PostgreSQL keeps `timestamptz`; SQLite and MySQL/MariaDB have no time zone in the column
    (MySQL `DATETIME(6)` for microseconds), so the value is stored as naive UTC there.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: vodpoller stores aware UTC timestamps")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData(naming_convention=NAMING_CONVENTION)

vod_events = Table(
    TABLE_NAME,
    metadata,
    # INTEGER PRIMARY KEY on SQLite is the rowid (BIGINT would not autoincrement there).
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("dedup_key", String(64), nullable=False),
    Column("sub_app_id", BigInteger, nullable=True),
    Column("event_type", String(SHORT_TEXT), nullable=False),
    Column("event_handle", Text, nullable=False),
    Column("task_id", String(SHORT_TEXT), nullable=True),
    Column("file_id", String(SHORT_TEXT), nullable=True),
    Column("status", String(SHORT_TEXT), nullable=True),
    Column("err_code", BigInteger, nullable=True),
    Column("message", Text, nullable=True),
    Column("file_url", Text, nullable=True),
    Column("session_context", Text, nullable=True),
    Column("session_id", String(SHORT_TEXT), nullable=True),
    Column("payload", JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("confirmed_at", UtcDateTime(), nullable=True),
    Column("deliveries", Integer, nullable=False, default=1, server_default=text("1")),
    UniqueConstraint("dedup_key"),
    # Indexed strings stay within 255 characters: 1,020 bytes in utf8mb4, under InnoDB's 3,072.
    Index(None, "event_type"),
    Index(None, "task_id"),
    Index(None, "file_id"),
    Index(None, "received_at"),
    mysql_charset="utf8mb4",
)
