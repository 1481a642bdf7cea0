"""Per-application event queues with leases, as reliable callback behaves: a pulled event is
invisible until it is confirmed or its lease runs out, then it is delivered again with a new
handle. Every event is in exactly one of: queued, leased, confirmed. An event is held as it
was given: an entry (in-process use) or already encoded for HTTP (`wire.Encoded`)."""

from __future__ import annotations

import heapq
import itertools
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vodpoller.emulator.wire import Encoded, Entry, decode

AppId = int | None
__all__ = ["AppId", "ConfirmOutcome", "Delivery", "Entry", "LeaseQueue", "QueueCounts"]


@dataclass
class _Lease:
    event_id: int
    expires_at: float


@dataclass
class _Application:
    ready: deque[int] = field(default_factory=deque)
    leases: dict[str, _Lease] = field(default_factory=dict)
    # (expires_at, event_id, handle): stale rows (confirmed handles) are skipped when popped;
    # the event id breaks ties, so that leases of one batch expire oldest event first.
    expiries: list[tuple[float, int, str]] = field(default_factory=list)
    confirmed: int = 0


@dataclass(frozen=True)
class QueueCounts:
    queued: int
    leased: int
    confirmed: int

    @property
    def total(self) -> int:
        return self.queued + self.leased + self.confirmed


@dataclass(frozen=True)
class ConfirmOutcome:
    confirmed: int
    rejected: list[str]


@dataclass(frozen=True, slots=True)
class Delivery:
    handle: str
    event: Entry | Encoded  # as enqueued; `wire.encoded` turns either into bytes to send


# Handles need to be unique, not secret: random bits without a system call per handle
# (os.urandom releases the GIL under the queue's lock, and every waiting thread piles up).
_handle_bits = random.Random(os.urandom(32)).getrandbits


def _new_handle() -> str:
    return f"{_handle_bits(128):032x}"


class LeaseQueue:
    """Thread-safe; `pull` long-polls and is woken by `enqueue`, not by sleep-polling."""

    def __init__(
        self,
        lease_seconds: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        new_handle: Callable[[], str] = _new_handle,
    ):
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._new_handle = new_handle
        self._changed = threading.Condition()
        self._apps: dict[AppId, _Application] = {}
        self._events: dict[int, Entry | Encoded] = {}
        self._deliveries: dict[int, int] = {}
        self._ids = itertools.count(1)
        self.redelivered = 0

    def _app(self, app: AppId) -> _Application:
        queue = self._apps.get(app)
        if queue is None:
            queue = self._apps[app] = _Application()
        return queue

    def _expire(self, queue: _Application, now: float) -> None:
        returned: list[int] = []
        while queue.expiries and queue.expiries[0][0] <= now:
            _, _, handle = heapq.heappop(queue.expiries)
            lease = queue.leases.pop(handle, None)
            if lease is not None:
                returned.append(lease.event_id)
        # Expired events go to the front, oldest first: they have waited longest.
        queue.ready.extendleft(reversed(returned))

    def _expire_all(self) -> None:
        now = self._clock()
        for queue in self._apps.values():
            self._expire(queue, now)

    def enqueue(self, app: AppId, entries: Iterable[Mapping[str, Any] | Encoded]) -> int:
        """Add events (any `EventHandle` in an entry is dropped); return how many."""
        events = [
            e if isinstance(e, Encoded) else {k: v for k, v in e.items() if k != "EventHandle"}
            for e in entries
        ]
        with self._changed:
            queue = self._app(app)
            count = 0
            for event in events:
                event_id = next(self._ids)
                self._events[event_id] = event
                self._deliveries[event_id] = 0
                queue.ready.append(event_id)
                count += 1
            if count:
                self._changed.notify_all()
            return count

    def pull(self, app: AppId, max_events: int, wait_seconds: float = 0.0) -> list[Entry]:
        """Lease up to `max_events`; when none wait, hold up to `wait_seconds` for one."""
        return [
            {
                "EventHandle": d.handle,
                **(decode(d.event) if isinstance(d.event, Encoded) else d.event),
            }
            for d in self.lease(app, max_events, wait_seconds)
        ]

    def lease(self, app: AppId, max_events: int, wait_seconds: float = 0.0) -> list[Delivery]:
        """`pull`, with the events as they were enqueued, for `wire` to render."""
        deadline = self._clock() + wait_seconds
        with self._changed:
            queue = self._app(app)
            while True:
                now = self._clock()
                self._expire(queue, now)
                if queue.ready:
                    return self._lease(queue, max_events, now)
                remaining = deadline - now
                if remaining <= 0:
                    return []
                if queue.expiries:
                    remaining = min(remaining, max(queue.expiries[0][0] - now, 0.001))
                self._changed.wait(remaining)

    def _lease(self, queue: _Application, max_events: int, now: float) -> list[Delivery]:
        delivered: list[Delivery] = []
        expires_at = now + self.lease_seconds
        while queue.ready and len(delivered) < max_events:
            event_id = queue.ready.popleft()
            handle = self._new_handle()
            queue.leases[handle] = _Lease(event_id, expires_at)
            heapq.heappush(queue.expiries, (expires_at, event_id, handle))
            if self._deliveries[event_id]:
                self.redelivered += 1
            self._deliveries[event_id] += 1
            delivered.append(Delivery(handle, self._events[event_id]))
        return delivered

    def confirm(self, app: AppId, handles: Iterable[str]) -> ConfirmOutcome:
        """Confirm the handles that hold a live lease; report the expired, unknown or used ones."""
        with self._changed:
            queue = self._app(app)
            self._expire(queue, self._clock())
            confirmed = 0
            rejected: list[str] = []
            for handle in handles:
                lease = queue.leases.pop(handle, None)
                if lease is None:
                    rejected.append(handle)
                    continue
                del self._events[lease.event_id]
                del self._deliveries[lease.event_id]
                queue.confirmed += 1
                confirmed += 1
            return ConfirmOutcome(confirmed, rejected)

    def release(self, app: AppId, handles: Iterable[str]) -> int:
        """End live leases early: their events wait again, at the front, as after an expiry.
        Return how many were released."""
        with self._changed:
            queue = self._app(app)
            self._expire(queue, self._clock())
            returned = sorted(  # oldest first, as expired ones
                lease.event_id
                for lease in (queue.leases.pop(handle, None) for handle in handles)
                if lease is not None
            )
            queue.ready.extendleft(reversed(returned))
            if returned:
                self._changed.notify_all()
            return len(returned)

    def waiting(self, app: AppId) -> int:
        """Events of `app` that a pull would return now."""
        with self._changed:
            queue = self._app(app)
            self._expire(queue, self._clock())
            return len(queue.ready)

    def counts(self) -> dict[AppId, QueueCounts]:
        with self._changed:
            self._expire_all()
            return {
                app: QueueCounts(len(q.ready), len(q.leases), q.confirmed)
                for app, q in self._apps.items()
            }
