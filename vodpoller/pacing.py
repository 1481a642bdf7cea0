"""How fast: one token bucket per API action for the whole process, whose rate adapts when
VOD throttles (cut on `RequestLimitExceeded`, won back slowly along a cubic curve, as
botocore's adaptive retry mode does), and how many pullers an application runs (one long
poll when idle, more while answers come back full and the rate has room)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Final

# Botocore's CUBIC constants: cut to 70 % of the rate in use, regrow with scale 0.4.
CUT: Final = 0.7
SCALE: Final = 0.4
# One overload makes every request in flight come back throttled: they are one signal.
SAME_THROTTLE_SECONDS: Final = 0.5
# The measured request rate: an exponentially weighted average over half-second buckets.
MEASURE_BUCKET_SECONDS: Final = 0.5
_SMOOTHING: Final = 0.8
# A burst of a tenth of a second: requests go out evenly, never a second's worth at once.
BURST_SECONDS: Final = 0.1
MIN_RATE: Final = 0.5


class Stopped(Exception):  # noqa: N818 (a signal to unwind, not an error)
    """The wait for a token was cut short by a stop request."""


class AdaptiveRate:
    """A token bucket at `max_rate` per second until VOD throttles; then at a share that
    follows botocore's CUBIC curve: 70 % of the rate in use at the throttle, growing back
    to it after `cbrt(w_max * 0.3 / 0.4)` seconds and beyond, never above `max_rate` nor
    above twice the rate actually measured. Two daemons on one account each back off at
    their own throttles and settle on shares without talking to each other."""

    def __init__(
        self,
        max_rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event | None, float], bool] | None = None,
    ):
        if max_rate <= 0:
            raise ValueError(f"max_rate must be positive, not {max_rate}")
        self.max_rate = max_rate
        self._clock = clock
        self._wait = wait or _wait
        self._lock = threading.Lock()
        now = clock()
        self._rate = max_rate
        self._tokens = self._capacity()
        self._refilled = now
        self._throttled_at: float | None = None
        self._w_max = max_rate
        self._measured = 0.0
        self._bucket_start = now
        self._bucket_count = 0
        self.throttles = 0

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    def set_max_rate(self, max_rate: float) -> None:
        """A new ceiling (a reload): the rate in use never exceeds it; below it, it grows
        back as usual."""
        if max_rate <= 0:
            raise ValueError(f"max_rate must be positive, not {max_rate}")
        with self._lock:
            now = self._clock()
            self.max_rate = max_rate
            if self._throttled_at is None:
                self._set_rate(now, max_rate)
            else:
                self._w_max = min(self._w_max, max_rate)
                self._set_rate(now, self._rate)

    def _capacity(self) -> float:
        return max(1.0, self._rate * BURST_SECONDS)

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity(), self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now

    def _count(self, now: float) -> None:
        elapsed = now - self._bucket_start
        if elapsed >= MEASURE_BUCKET_SECONDS:
            observed = self._bucket_count / elapsed
            self._measured = _SMOOTHING * observed + (1 - _SMOOTHING) * self._measured
            self._bucket_start = now
            self._bucket_count = 0
        self._bucket_count += 1

    def acquire(self, stop: threading.Event | None = None) -> float:
        """Take a token, waiting for it; returns how long it waited. Raises `Stopped` when
        `stop` is set before the token is there (the token is given back)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._count(now)
            self._tokens -= 1  # reserved now; a negative balance is a debt slept off below
            debt = -self._tokens
            rate = self._rate
        if debt <= 0:
            return 0.0
        seconds = debt / rate
        if self._wait(stop, seconds):
            with self._lock:
                self._tokens += 1
            raise Stopped
        return seconds

    def throttled(self) -> None:
        """VOD answered `RequestLimitExceeded`: cut the rate (once per overload)."""
        with self._lock:
            now = self._clock()
            if self._throttled_at is not None and now - self._throttled_at < SAME_THROTTLE_SECONDS:
                return
            self.throttles += 1
            in_use = min(self._rate, self._measured) if self._measured > 0 else self._rate
            self._w_max = in_use
            self._throttled_at = now
            self._set_rate(now, in_use * CUT)

    def succeeded(self) -> None:
        """A request went through: grow back along the curve since the last throttle."""
        with self._lock:
            if self._throttled_at is None:
                return
            now = self._clock()
            since = now - self._throttled_at
            k = math.cbrt(self._w_max * (1 - CUT) / SCALE)
            curve = SCALE * (since - k) ** 3 + self._w_max
            ceiling = (
                self.max_rate if self._measured <= 0 else min(self.max_rate, 2 * self._measured)
            )
            self._set_rate(now, min(curve, ceiling))

    def _set_rate(self, now: float, rate: float) -> None:
        self._refill(now)
        self._rate = min(self.max_rate, max(MIN_RATE, rate))
        self._tokens = min(self._tokens, self._capacity())


def _wait(stop: threading.Event | None, seconds: float) -> bool:
    """Sleep `seconds`, cut short by `stop`; True when stopped."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


class PullerLimit:
    """How many pullers an application runs. One while answers come back empty (idle: one
    long poll); one more for a full answer that came without waiting for the rate limit
    while every puller was busy; one fewer for a short answer (the backlog is ending); and
    a tenth fewer when VOD throttles. Between 1 and `maximum`."""

    def __init__(self, maximum: int):
        if maximum < 1:
            raise ValueError(f"maximum must be at least 1, not {maximum}")
        self.maximum = maximum
        self._limit = 1
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    def full_answer(self, *, active: int, waited_for_rate: bool) -> int:
        """A full answer: more are waiting. Grows only when the rate had room and no
        puller was idle (growth that would only queue on the bucket helps nobody)."""
        with self._lock:
            if not waited_for_rate and active >= self._limit:
                self._limit = min(self.maximum, self._limit + 1)
            return self._limit

    def short_answer(self) -> int:
        with self._lock:
            self._limit = max(1, self._limit - 1)
            return self._limit

    def empty_answer(self) -> int:
        with self._lock:
            self._limit = 1
            return self._limit

    def throttled(self) -> int:
        with self._lock:
            self._limit = max(1, min(self._limit - 1, math.floor(self._limit * 0.9)))
            return self._limit
