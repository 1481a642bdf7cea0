"""Token buckets, one per API action, as the real API limits each action per account."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from vodpoller.ratelimit import TokenBucket


class RateLimiter:
    def __init__(self, rate_per_action: float, *, clock: Callable[[], float] = time.monotonic):
        self.rate = rate_per_action
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def allow(self, action: str) -> bool:
        with self._lock:
            bucket = self._buckets.get(action)
            if bucket is None:
                bucket = self._buckets[action] = TokenBucket(self.rate, clock=self._clock)
        return bucket.try_take()
