"""The tables as SQLAlchemy Core sees them: `vod_events`, `vod_daemons` and `vod_rejects`.
Alembic revisions in `migrations/` create and change the real schema; the migration drift test
keeps the two in step."""

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
    and_,
    text,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from vodpoller.events import SHORT_TEXT

TABLE_NAME: Final = "vod_events"
DAEMONS_TABLE_NAME: Final = "vod_daemons"
REJECTS_TABLE_NAME: Final = "vod_rejects"
# Instance ids of daemons (`heartbeat.new_instance_id`) and content keys (SHA-256 hex).
KEY_LENGTH: Final = 64

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
    Column("dedup_key", String(KEY_LENGTH), nullable=False),
    # NULL only on rows written by a 0.1 daemon during an upgrade (identity.py, README).
    Column("content_key", String(KEY_LENGTH), nullable=True),
    Column("occurrence", Integer, nullable=False, default=0, server_default=text("0")),
    # The daemon that still has to confirm the latest delivery; NULL once it did or let go.
    Column("held_by", String(KEY_LENGTH), nullable=True),
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
    # When the latest delivery arrived; NULL on rows a 0.1 daemon wrote (then received_at).
    Column("delivered_at", UtcDateTime(), nullable=True),
    Column("confirmed_at", UtcDateTime(), nullable=True),
    Column("deliveries", Integer, nullable=False, default=1, server_default=text("1")),
    # Of `deliveries`, those that came by normal callback (POSTed to the receiver).
    Column("pushed_deliveries", Integer, nullable=False, default=0, server_default=text("0")),
    # The forwarder's progress (forwarder.py): NULL until the user's handler answered 2xx.
    Column("forwarded_at", UtcDateTime(), nullable=True),
    Column("forward_attempts", Integer, nullable=False, default=0, server_default=text("0")),
    Column("forward_claim", String(KEY_LENGTH), nullable=True),  # who sends it now
    Column("forward_after", UtcDateTime(), nullable=True),  # not tried again before
    UniqueConstraint("dedup_key"),
    # Indexed strings stay within 255 characters: 1,020 bytes in utf8mb4, under InnoDB's 3,072.
    Index(None, "event_type"),
    Index(None, "task_id"),
    Index(None, "file_id"),
    Index(None, "received_at"),
    # Finds a content's rows and its highest occurrence (max over the index).
    Index(None, "content_key", "occurrence"),
    # The forwarder's search: unforwarded rows of the wanted types (forwardqueue.py).
    Index(None, "forwarded_at", "event_type"),
    mysql_charset="utf8mb4",
)

# A row whose pulled delivery still waits for its confirm; a row that came only by normal
# callback has nothing to confirm (status and `events stats` count it apart).
AWAITING_CONFIRM: Final = and_(
    vod_events.c.confirmed_at.is_(None), vod_events.c.deliveries > vod_events.c.pushed_deliveries
)
PUSHED_ONLY: Final = and_(
    vod_events.c.confirmed_at.is_(None), vod_events.c.deliveries == vod_events.c.pushed_deliveries
)

# One row per running daemon (and per `once`), for identity (who holds which rows, and is it
# alive), `vodpoller status`, `check` and SQL users. Removed on a clean stop.
vod_daemons = Table(
    DAEMONS_TABLE_NAME,
    metadata,
    Column("id", String(KEY_LENGTH), primary_key=True),
    Column("host", String(SHORT_TEXT), nullable=False),
    Column("pid", Integer, nullable=False),
    # /proc/sys/kernel/random/boot_id: tells a host's previous boot from this one.
    Column("boot_id", String(KEY_LENGTH), nullable=True),
    Column("version", String(KEY_LENGTH), nullable=False),
    Column("command", String(16), nullable=False),
    Column("applications", Text, nullable=True),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("heartbeat_at", UtcDateTime(), nullable=False),
    Column("last_poll_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_at", UtcDateTime(), nullable=True),
    Column("pulled", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("stored", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("duplicates", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("confirmed", BigInteger, nullable=False, default=0, server_default=text("0")),
    mysql_charset="utf8mb4",
)


# Entries that could not be parsed or stored, kept as received with the reason; their
# handles are confirmed so that they do not come back. MySQL's TEXT stops at 64 kB.
_LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

vod_rejects = Table(
    REJECTS_TABLE_NAME,
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("sub_app_id", BigInteger, nullable=True),
    Column("event_handle", _LONG_TEXT, nullable=True),
    Column("raw", _LONG_TEXT, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Index(None, "received_at"),
    mysql_charset="utf8mb4",
)
