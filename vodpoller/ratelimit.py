"""A token bucket: the client paces its calls with it, the emulator refuses with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, holding at most `rate` (one second of burst). rate <= 0: no limit."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = max(rate, 1.0)
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_take(self) -> bool:
        """Take a token if one is there."""
        if self.rate <= 0:
            return True
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def take(self) -> None:
        """Take a token, waiting for it. Waiters are served roughly in turn."""
        if self.rate <= 0:
            return
        with self._lock:
            self._refill()
            # Reserve the token now (the balance may go negative); sleep off the debt outside.
            self._tokens -= 1
            debt = -self._tokens
        if debt > 0:
            self._sleep(debt / self.rate)
