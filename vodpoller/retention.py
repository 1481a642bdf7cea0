"""Retention: remove the rows of `vod_events` received before a cutoff, a bounded batch per
transaction with a pause between, so the daemon's inserts never wait long for a lock on SQLite,
PostgreSQL or MariaDB. Used by `vodpoller events purge` and the daemon's daily job."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from vodpoller.database import writer
from vodpoller.errors import StorageError
from vodpoller.logs import get_logger
from vodpoller.schema import vod_events

log = get_logger(__name__)

# A thousand rows is a few milliseconds of deleting: the write lock (all of SQLite, the rows
# and their index entries elsewhere) is held that long, then the daemon gets its turn.
BATCH_ROWS: Final = 1000
PAUSE_SECONDS: Final = 0.1


def cutoff_for(days: int, now: datetime | None = None) -> datetime:
    """The moment before which rows are `days` old."""
    return (now or datetime.now(UTC)) - timedelta(days=days)


def count_before(engine: Engine, before: datetime) -> int:
    """How many rows were received before `before` (what a purge would remove now)."""
    statement = select(func.count()).select_from(vod_events)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(statement.where(vod_events.c.received_at < before)) or 0)
    except SQLAlchemyError as error:
        raise StorageError("counting events failed") from error


def purge_before(
    engine: Engine,
    before: datetime,
    *,
    batch_rows: int = BATCH_ROWS,
    pause_seconds: float = PAUSE_SECONDS,
    stop: threading.Event | None = None,
) -> int:
    """Remove the rows received before `before`; returns how many. Each batch: read the ids of
    the oldest `batch_rows` rows (a plain read, no lock), then delete exactly those by primary
    key in a short transaction. Deleting by id, not by a range, takes no gap locks on MariaDB.
    `stop` ends it between batches (what was removed stays removed)."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
    stop = stop or threading.Event()
    c = vod_events.c
    oldest = select(c.id).where(c.received_at < before).order_by(c.received_at).limit(batch_rows)
    removed = 0
    try:
        while not stop.is_set():
            with engine.connect() as connection:
                ids = list(connection.scalars(oldest))
            if not ids:
                break
            with writer(engine).begin() as connection:
                # received_at again: a row is never un-aged, but the guard costs nothing.
                done = connection.execute(
                    delete(vod_events).where(c.id.in_(ids), c.received_at < before)
                )
            removed += done.rowcount
            if len(ids) < batch_rows or done.rowcount == 0:
                break
            stop.wait(pause_seconds)
    except SQLAlchemyError as error:
        raise StorageError(f"purging events failed after removing {removed}") from error
    return removed


def purge_older_than(engine: Engine, days: int, *, stop: threading.Event | None = None) -> int:
    """The daemon's daily job (`[retention] days`): purge, and log what went."""
    before = cutoff_for(days)
    removed = purge_before(engine, before, stop=stop)
    log.info("retention", removed=removed, before=before.isoformat(), days=days)
    return removed
