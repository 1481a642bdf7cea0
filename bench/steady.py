"""End-to-end delay at a steady trickle: the benchmark enqueues events at a fixed rate, each
carrying its enqueue time (epoch milliseconds in `SessionContext`), while a reader polls the
database every 10 ms. Two delays per event: until the row is visible to that reader (committed,
plus up to 10 ms of polling) and until the `received_at` the daemon stamped on it."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from bench.databases import database, reader, rows_after
from bench.figures import percentile
from bench.phases import Lab, progress, wait_for_first_pull

ENQUEUE_INTERVAL: Final = 0.02  # 200 events/s arrive as 4 every 20 ms
READ_INTERVAL: Final = 0.01
SETTLE_SECONDS: Final = 60.0  # after the last enqueue, for the last rows to arrive


def stamped_entry(run: str, number: int, enqueued_ms: float) -> dict[str, Any]:
    """A ProcedureStateChanged entry, distinct from every other, stamped with its enqueue time."""
    return {
        "EventType": "ProcedureStateChanged",
        "ProcedureStateChangeEvent": {
            "TaskId": f"1256712345-Procedure-bench-{run}-{number}",
            "Status": "FINISH",
            "ErrCode": 0,
            "Message": "SUCCESS",
            "FileId": str(5285890784246869930 + number),
            "SessionContext": f"{enqueued_ms:.3f}",
            "SessionId": f"bench-{run}-{number}",
        },
    }


def due(elapsed: float, rate: float, sent: int) -> int:
    """Events to enqueue now so that `sent` keeps to `rate` a second after `elapsed` seconds."""
    return max(0, int(elapsed * rate) - sent)


@dataclass(frozen=True)
class Steady:
    rate: float
    seconds: float
    enqueued: int
    seen: int
    to_visible_ms: list[float]
    to_received_ms: list[float]
    exit_code: int

    def quantile(self, which: str, share: float) -> float | None:
        values = self.to_visible_ms if which == "visible" else self.to_received_ms
        return percentile(values, share) if values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "events_per_second": self.rate,
            "seconds": self.seconds,
            "enqueued": self.enqueued,
            "seen": self.seen,
            "to_visible_ms": {
                "p50": self.quantile("visible", 0.5),
                "p99": self.quantile("visible", 0.99),
                "max": max(self.to_visible_ms, default=None),
            },
            "to_received_at_ms": {
                "p50": self.quantile("received", 0.5),
                "p99": self.quantile("received", 0.99),
                "max": max(self.to_received_ms, default=None),
            },
            "read_interval_ms": READ_INTERVAL * 1000,
            "exit_code": self.exit_code,
        }


class _Reader(threading.Thread):
    """Polls the table for new rows; for each stamped row: (stamp, seen, received_at) in ms."""

    def __init__(self, url: str):
        super().__init__(name="bench-reader", daemon=True)
        self.url = url
        self.rows: list[tuple[float, float, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with reader(self.url) as connection:
                last = 0
                while not self.stop.wait(READ_INTERVAL):
                    rows = rows_after(connection, last)
                    seen_ms = time.time() * 1000
                    for row_id, context, received_at in rows:
                        last = row_id
                        if context is not None:
                            self.rows.append(
                                (float(context), seen_ms, received_at.timestamp() * 1000)
                            )
        except BaseException as error:  # noqa: BLE001 (handed to the main thread, which raises it)
            self.error = error


def steady(lab: Lab, latency_ms: float, rate: float, seconds: float) -> Steady:
    """`rate` events a second for `seconds` into an idle daemon on SQLite."""
    progress(f"steady, sqlite, {latency_ms:g} ms: {rate:g} events/s for {seconds:g} s")
    run = uuid.uuid4().hex[:8]
    with (
        lab.emulator(latency_ms) as emulator,
        database("sqlite", lab.workdir, None) as url,
        lab.daemon(emulator, url) as daemon,
    ):
        wait_for_first_pull(emulator, daemon)  # up, its table created
        watcher = _Reader(url)
        watcher.start()
        admin = emulator.admin
        sent = 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            count = due(elapsed, rate, sent)
            if count:
                stamp = time.time() * 1000
                admin.enqueue([stamped_entry(run, sent + n, stamp) for n in range(count)])
                sent += count
            time.sleep(ENQUEUE_INTERVAL)
        deadline = time.monotonic() + SETTLE_SECONDS
        while len(watcher.rows) < sent and time.monotonic() < deadline and daemon.running():
            time.sleep(0.1)
        watcher.stop.set()
        watcher.join()
        exit = daemon.stop()
    if watcher.error is not None:
        raise watcher.error
    result = Steady(
        rate=rate,
        seconds=seconds,
        enqueued=sent,
        seen=len(watcher.rows),
        to_visible_ms=[seen - stamp for stamp, seen, _ in watcher.rows],
        to_received_ms=[received - stamp for stamp, _, received in watcher.rows],
        exit_code=exit.code,
    )
    progress(
        f"  {result.seen}/{result.enqueued} rows, enqueue -> visible p50 "
        f"{result.quantile('visible', 0.5) or 0:.0f} ms, p99 "
        f"{result.quantile('visible', 0.99) or 0:.0f} ms"
    )
    return result
