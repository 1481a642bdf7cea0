"""The forwarder (`[forward] url`): every stored event POSTed to the user's own normal-callback
handler until it answers 2xx. At least once: a row is marked forwarded only after the 2xx, so a
crash in between sends it again; the handler dedupes on `X-Vodpoller-Event-Key`.

One thread claims rows (forwardqueue.py) and hands them to at most `max_in_flight` sending
threads (forwardsend.py); outcomes are written back as they come, a failed row waits
`retry_seconds`, doubling up to `max_retry_seconds`, before its next try. It keeps at most
twice `max_in_flight` rows claimed, so a claimed row waits at most one request before it is
sent and takes at most one more: a claim lasts two timeouts and a margin. A stop ends the
claiming within a second, gives back the claims not sent yet, and lets the requests in flight
finish (each within its timeout) so that their outcomes are kept."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Final

from vodpoller.errors import StorageError, describe
from vodpoller.forwardqueue import Claimed, ForwardQueue
from vodpoller.forwardsend import Answer, HandlerClient, callback_body
from vodpoller.logs import get_logger
from vodpoller.metrics import Metrics

log = get_logger(__name__)

IDLE_SECONDS: Final = 1.0  # with nothing to send, look for new rows this often
TICK_SECONDS: Final = 0.25  # while requests are in flight, notice a stop this soon
RECORD_SECONDS: Final = 0.2  # outcomes are written at least this often while sending
CLAIM_MARGIN_SECONDS: Final = 30.0
STREAK_REPORT_SECONDS: Final = 300.0  # a failure streak is logged again this often
# A streak ends with a success this long after its last failure: a handler that fails one
# request in five is one streak, not a "failing"/"recovered" pair per failed request.
STREAK_QUIET_SECONDS: Final = 30.0
# The count of rows waiting (a query over the backlog) for the pending and lag gauges.
WAITING_REPORT_SECONDS: Final = 15.0
MAX_DOUBLINGS: Final = 40  # 2**40 times any retry_seconds is beyond any max_retry_seconds


def retry_delay(attempts: int, first: float, longest: float) -> float:
    """The pause after a failed try, `attempts` failed tries before it: `first`, then twice
    as long after each further failure, never more than `longest`."""
    doublings: int = min(max(attempts, 0), MAX_DOUBLINGS)
    return min(longest, first * float(2**doublings))


def claim_seconds(timeout: float) -> float:
    """How long a claim lasts: one request waited for, one sent, and a margin (for a slow
    database and clocks of two hosts that differ a little)."""
    return 2 * timeout + CLAIM_MARGIN_SECONDS


class FailureStreak:
    """Failed sends, to log a streak once when it begins, every few minutes while it lasts,
    and once when it ends: at the first success `quiet_seconds` after its last failure (a
    success between failures does not end it). Pure: the caller logs."""

    def __init__(
        self,
        report_seconds: float = STREAK_REPORT_SECONDS,
        quiet_seconds: float = STREAK_QUIET_SECONDS,
    ) -> None:
        self.report_seconds = report_seconds
        self.quiet_seconds = quiet_seconds
        self.failures = 0
        self.started = 0.0
        self.reported = 0.0
        self.last_failure = 0.0

    def failed(self, now: float) -> bool:
        """Count a failure; True when it is worth a log line (the first, or a reminder)."""
        self.failures += 1
        self.last_failure = now
        if self.failures == 1:
            self.started = self.reported = now
            return True
        if now - self.reported >= self.report_seconds:
            self.reported = now
            return True
        return False

    def succeeded(self, now: float) -> tuple[int, float] | None:
        """A success: the streak it ends (failures, seconds from its first failure to its
        last), or None when none ran or its last failure is too recent."""
        if self.failures == 0 or now - self.last_failure < self.quiet_seconds:
            return None
        ended = (self.failures, self.last_failure - self.started)
        self.failures = 0
        return ended


class Forwarder:
    """The thread that forwards; `start`, then `stop` (or set the daemon's `stop` event)."""

    def __init__(
        self,
        queue: ForwardQueue,
        client: HandlerClient,
        *,
        max_in_flight: int,
        retry_seconds: float,
        max_retry_seconds: float,
        metrics: Metrics | None = None,
        stop: threading.Event | None = None,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.client = client
        self.max_in_flight = max_in_flight
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.metrics = metrics or Metrics()
        self.stopping = stop or threading.Event()
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._wake = threading.Event()
        self.streak = FailureStreak()  # when failures are worth a log line
        self.waiting_report_seconds = WAITING_REPORT_SECONDS
        self._storage_failing = False
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._waiting_at = float("-inf")

    def start(self) -> Forwarder:
        self._thread.start()
        log.info(
            "forwarding",
            url=self.client.safe_url,
            event_types=list(self.queue.selection.event_types) or "all",
            since=None if self.queue.selection.since is None else str(self.queue.selection.since),
        )
        return self

    def wake(self) -> None:
        """New rows may be waiting: look now instead of at the next idle tick."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; wait for the requests in flight (each within its timeout)."""
        self.stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.client.close()

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._forward()
        except BaseException:
            # A bug, not a failure of the handler or the database (those are handled): the
            # daemon goes on pulling, and the rows wait for its restart.
            log.exception("forwarding stopped by an unexpected error; restart the daemon")
            raise

    def _forward(self) -> None:
        queued: deque[Claimed] = deque()
        in_flight: dict[Future[Answer], Claimed] = {}
        unrecorded: list[tuple[Claimed, Answer]] = []
        recorded_at = self._clock()
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="forward") as pool:
            try:
                while not self.stopping.is_set():
                    # Claims in batches, when the claimed ones are all on their way: one
                    # claim per `max_in_flight` sends, not one per send.
                    if not queued:
                        queued.extend(self._claim(2 * self.max_in_flight - len(in_flight)))
                    while queued and len(in_flight) < self.max_in_flight:
                        item = queued.popleft()
                        in_flight[pool.submit(self._send, item)] = item
                    self._report_waiting()
                    if in_flight:
                        done, _ = wait(in_flight, TICK_SECONDS, return_when=FIRST_COMPLETED)
                        unrecorded += [(in_flight.pop(f), f.result()) for f in done]
                    else:
                        self._wake.wait(self.idle_seconds)
                        self._wake.clear()
                    # Outcomes in batches too: a transaction per send would cost more than
                    # the send on SQLite. A claim outlasts the short delay by far.
                    if unrecorded and (
                        len(unrecorded) >= self.max_in_flight
                        or not in_flight
                        or self._clock() - recorded_at >= RECORD_SECONDS
                    ):
                        unrecorded = self._record(unrecorded)
                        recorded_at = self._clock()
            finally:
                self._release(list(queued))
                for future in list(in_flight):
                    unrecorded.append((in_flight.pop(future), future.result()))
                if self._record(unrecorded):
                    log.warning("forwarding: outcomes not recorded; those events are sent again")

    def _send(self, item: Claimed) -> Answer:
        return self.client.post(callback_body(item.payload), item.dedup_key)

    def _claim(self, room: int) -> list[Claimed]:
        if room <= 0:
            return []
        try:
            claimed = self.queue.claim(room)
        except StorageError as error:
            self._storage_failed(error)
            return []
        self._storage_ok()
        return claimed

    def _record(self, outcomes: list[tuple[Claimed, Answer]]) -> list[tuple[Claimed, Answer]]:
        """Write the outcomes; those that could not be written are returned, to try again."""
        if not outcomes:
            return []
        now = datetime.now(UTC)
        delivered = [item for item, answer in outcomes if answer.delivered]
        failed = [
            (item, now + timedelta(seconds=self._pause(item.attempts)))
            for item, answer in outcomes
            if not answer.delivered
        ]
        try:
            self.queue.record(delivered, failed, now)
        except StorageError as error:
            self._storage_failed(error)
            return outcomes
        self._storage_ok()
        for item, answer in outcomes:
            self._count(item, answer)
        return []

    def _pause(self, attempts: int) -> float:
        return retry_delay(attempts, self.retry_seconds, self.max_retry_seconds)

    def _count(self, item: Claimed, answer: Answer) -> None:
        now = self._clock()
        if answer.delivered:
            self.metrics.forwarded()
            ended = self.streak.succeeded(now)
            if ended is not None:
                failures, seconds = ended
                log.info("forwarding recovered", failures=failures, seconds=round(seconds, 1))
            return
        reason = answer.reason or "unknown"
        self.metrics.forward_failed(reason)
        if self.streak.failed(now):
            log.warning(
                "forwarding failing; retrying with backoff",
                url=self.client.safe_url,
                reason=reason,
                status=answer.status,
                error=answer.error,
                failures=self.streak.failures,
                next_try_seconds=round(self._pause(item.attempts), 3),
            )

    def _report_waiting(self) -> None:
        now = self._clock()
        if now - self._waiting_at < self.waiting_report_seconds:
            return
        self._waiting_at = now
        try:
            waiting = self.queue.waiting()
        except StorageError as error:
            self._storage_failed(error)
            return
        oldest = waiting.oldest_received_at
        lag = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        self.metrics.forward_waiting(waiting.rows, lag)

    def _release(self, claimed: list[Claimed]) -> None:
        try:
            self.queue.release(claimed)
        except StorageError as error:
            # They become due when the claims run out.
            log.warning("forwarding: claims not given back", error=describe(error))

    def _storage_failed(self, error: StorageError) -> None:
        self.metrics.storage_error()
        if not self._storage_failing:
            self._storage_failing = True
            log.warning("forwarding: database unavailable; trying again", error=describe(error))

    def _storage_ok(self) -> None:
        if self._storage_failing:
            self._storage_failing = False
            log.info("forwarding: database available again")
