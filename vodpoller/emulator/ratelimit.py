"""Token buckets, one per API action, as the real API limits each action per account."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, holding at most `rate` (one second of burst). rate <= 0: no limit."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._updated = clock()
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


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
