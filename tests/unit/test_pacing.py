"""`pacing.py`: the adaptive token bucket and the number of pullers, on a fake clock."""

from __future__ import annotations

import math
import threading

import pytest

from tests.helpers import FakeClock
from vodpoller.pacing import (
    BURST_SECONDS,
    CUT,
    MEASURE_BUCKET_SECONDS,
    MIN_RATE,
    SAME_THROTTLE_SECONDS,
    SCALE,
    AdaptiveRate,
    PullerLimit,
    Stopped,
)


class Sleeper:
    """Records the waits asked for and moves the fake clock by them."""

    def __init__(self, clock: FakeClock, stop_after: int | None = None):
        self.clock = clock
        self.waits: list[float] = []
        self.stop_after = stop_after

    def __call__(self, stop: threading.Event | None, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.stop_after is not None and len(self.waits) > self.stop_after:
            return True
        self.clock.advance(seconds)
        return False


def bucket(max_rate: float = 100.0) -> tuple[AdaptiveRate, FakeClock, Sleeper]:
    clock = FakeClock()
    sleeper = Sleeper(clock)
    return AdaptiveRate(max_rate, clock=clock, wait=sleeper), clock, sleeper


def run_at(rate: AdaptiveRate, clock: FakeClock, per_second: float, seconds: float) -> None:
    """Requests at a steady pace (each also succeeds), to feed the measured rate."""
    for _ in range(round(per_second * seconds)):
        clock.advance(1 / per_second)
        rate.acquire()
        rate.succeeded()


def test_a_burst_of_a_tenth_of_a_second_then_requests_wait_their_turn() -> None:
    rate, _, sleeper = bucket(100.0)
    waited = [rate.acquire() for _ in range(14)]

    burst = round(100 * BURST_SECONDS)
    assert waited[:burst] == [0.0] * burst
    assert waited[burst:] == pytest.approx([0.01, 0.01, 0.01, 0.01])
    assert sleeper.waits == pytest.approx([0.01] * 4)


def test_a_slow_rate_still_lets_one_request_through_at_once() -> None:
    rate, _, _ = bucket(2.0)
    assert rate.acquire() == 0.0
    assert rate.acquire() == pytest.approx(0.5)


def test_a_stop_cuts_the_wait_and_gives_the_token_back() -> None:
    clock = FakeClock()
    sleeper = Sleeper(clock, stop_after=0)
    rate = AdaptiveRate(1.0, clock=clock, wait=sleeper)
    rate.acquire()

    with pytest.raises(Stopped):
        rate.acquire(threading.Event())
    clock.advance(1.0)
    assert rate.acquire() == 0.0  # the token given back is there again


def test_the_real_wait_is_cut_short_by_the_stop_event() -> None:
    rate = AdaptiveRate(0.5)
    rate.acquire()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        rate.acquire(stop)


def test_a_stopped_waiter_gives_back_its_own_token_and_no_more() -> None:
    clock = FakeClock()
    waits: list[float] = []

    def wait(stop: threading.Event | None, seconds: float) -> bool:
        waits.append(seconds)  # the clock stands still: every waiter is still waiting
        return stop is not None and stop.is_set()

    rate = AdaptiveRate(10.0, clock=clock, wait=wait)
    assert rate.acquire() == 0.0
    assert rate.acquire() == pytest.approx(0.1)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        rate.acquire(stop)  # third in line

    assert rate.acquire() == pytest.approx(0.2)  # third in line again, not first nor second
    assert waits == pytest.approx([0.1, 0.2, 0.2])


def test_the_real_wait_without_a_stop_sleeps_and_returns_the_time_waited() -> None:
    rate = AdaptiveRate(1000.0, clock=FakeClock())  # the real wait; a clock that stands still
    waited = [rate.acquire() for _ in range(101)]
    assert waited == [0.0] * 100 + [pytest.approx(0.001)]


def test_the_measured_rate_is_a_smoothed_average_over_half_second_buckets() -> None:
    rate, clock, _ = bucket(100.0)
    for _ in range(5):
        rate.acquire()
    clock.advance(MEASURE_BUCKET_SECONDS)  # exactly one bucket: it closes at 5 / 0.5 s = 10/s
    for _ in range(5):
        rate.acquire()
    clock.advance(MEASURE_BUCKET_SECONDS)  # the second one, 10/s again
    rate.acquire()

    rate.throttled()

    first = 0.8 * 10  # weighed against the 0 measured before
    second = 0.8 * 10 + 0.2 * first
    assert rate.rate == pytest.approx(second * CUT)


def test_a_throttle_before_any_rate_was_measured_cuts_the_maximum_and_grows_back_to_it() -> None:
    rate, clock, _ = bucket(100.0)
    rate.acquire()
    rate.throttled()
    assert rate.rate == pytest.approx(100.0 * CUT)

    clock.advance(600)
    rate.succeeded()
    assert rate.rate == 100.0  # nothing measured: no ceiling of twice the measured rate


def test_a_daemon_measured_below_one_request_a_second_is_cut_by_its_measured_rate() -> None:
    rate, clock, _ = bucket(10.0)
    rate.acquire()
    clock.advance(2.0)
    rate.acquire()  # one request in two seconds: 0.5/s, smoothed to 0.4/s

    rate.throttled()
    assert rate.rate == MIN_RATE  # 70 % of 0.4/s, raised to the floor

    clock.advance(600)
    rate.succeeded()
    assert rate.rate == pytest.approx(0.8)  # twice the measured rate, far below the maximum


def test_a_throttle_half_a_second_after_the_last_is_a_new_overload() -> None:
    rate, clock, _ = bucket(100.0)
    rate.throttled()
    clock.advance(SAME_THROTTLE_SECONDS)
    rate.throttled()
    assert rate.throttles == 2
    assert rate.rate == pytest.approx(100.0 * CUT * CUT)


def test_a_throttle_cuts_to_seventy_percent_of_the_rate_in_use() -> None:
    rate, clock, _ = bucket(100.0)
    run_at(rate, clock, 60, 3)  # measured ~60/s, below the maximum

    rate.throttled()

    assert rate.rate == pytest.approx(60 * CUT, rel=0.02)
    assert rate.throttles == 1


def test_throttles_of_one_overload_cut_once() -> None:
    rate, clock, _ = bucket(100.0)
    run_at(rate, clock, 100, 2)
    rate.throttled()
    cut = rate.rate
    clock.advance(SAME_THROTTLE_SECONDS / 2)
    rate.throttled()
    assert (rate.rate, rate.throttles) == (cut, 1)

    clock.advance(SAME_THROTTLE_SECONDS)
    rate.throttled()
    assert rate.rate < cut
    assert rate.throttles == 2


def test_after_a_throttle_the_rate_grows_back_along_the_cubic_curve() -> None:
    rate, clock, _ = bucket(100.0)
    run_at(rate, clock, 80, 3)
    rate.throttled()
    w_max = rate.rate / CUT
    k = math.cbrt(w_max * (1 - CUT) / SCALE)

    clock.advance(k / 2)
    rate.succeeded()
    halfway = rate.rate
    expected = SCALE * (-k / 2) ** 3 + w_max
    assert halfway == pytest.approx(expected)
    assert w_max * CUT < halfway < w_max

    clock.advance(k)  # as far past the old rate as halfway was short of it
    rate.succeeded()
    assert rate.rate == pytest.approx(w_max + SCALE * (k / 2) ** 3)


def test_growth_stops_at_twice_the_measured_rate_and_at_the_maximum() -> None:
    rate, clock, _ = bucket(100.0)
    run_at(rate, clock, 10, 3)  # a quiet daemon measured at ~10/s
    rate.throttled()
    clock.advance(60)
    rate.succeeded()
    assert rate.rate == pytest.approx(20, rel=0.05)

    busy, clock, _ = bucket(100.0)
    run_at(busy, clock, 100, 3)
    busy.throttled()
    clock.advance(600)
    busy.succeeded()
    assert busy.rate == 100.0


def test_success_before_any_throttle_keeps_the_maximum() -> None:
    rate, clock, _ = bucket(50.0)
    run_at(rate, clock, 5, 2)
    assert rate.rate == 50.0


def test_the_rate_never_drops_below_the_floor() -> None:
    rate, clock, _ = bucket(1.0)
    for _ in range(20):
        clock.advance(1.0)
        rate.throttled()
    assert rate.rate == 0.5


def test_a_bucket_refuses_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AdaptiveRate(0)


# -- the number of pullers -------------------------------------------------------------------


def test_pullers_start_at_one_and_grow_by_one_per_full_answer_with_room() -> None:
    limit = PullerLimit(4)
    assert limit.limit == 1
    assert [limit.full_answer(active=n, waited_for_rate=False) for n in (1, 2, 3, 4, 4)] == [
        2,
        3,
        4,
        4,
        4,
    ]


def test_no_growth_while_a_puller_is_idle_or_the_rate_made_it_wait() -> None:
    limit = PullerLimit(8)
    limit.full_answer(active=1, waited_for_rate=False)
    assert limit.full_answer(active=1, waited_for_rate=False) == 2  # idle one: no growth
    assert limit.full_answer(active=2, waited_for_rate=True) == 2  # at the rate limit


def test_short_answers_shrink_by_one_and_an_empty_one_back_to_one() -> None:
    limit = PullerLimit(8)
    for active in range(1, 6):
        limit.full_answer(active=active, waited_for_rate=False)
    assert limit.limit == 6
    assert limit.short_answer() == 5
    assert limit.empty_answer() == 1
    assert limit.short_answer() == 1


def test_a_throttle_takes_a_tenth_and_at_least_one() -> None:
    limit = PullerLimit(64)
    for active in range(1, 30):
        limit.full_answer(active=active, waited_for_rate=False)
    assert limit.limit == 30
    assert limit.throttled() == 27
    small = PullerLimit(4)
    small.full_answer(active=1, waited_for_rate=False)
    small.full_answer(active=2, waited_for_rate=False)
    assert small.throttled() == 2
    assert small.throttled() == 1
    assert small.throttled() == 1


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PullerLimit(0)


def test_a_new_ceiling_applies_at_once_and_caps_the_growth() -> None:
    rate, clock, _ = bucket(100.0)
    rate.set_max_rate(40.0)
    assert rate.rate == 40.0
    rate.set_max_rate(80.0)
    assert rate.rate == 80.0  # never throttled: the ceiling is the rate

    run_at(rate, clock, 80, 3)
    rate.throttled()
    rate.set_max_rate(30.0)
    clock.advance(600)
    rate.succeeded()
    assert rate.rate == 30.0
    with pytest.raises(ValueError, match="positive"):
        rate.set_max_rate(0)


def test_a_ceiling_below_one_request_a_second_is_accepted() -> None:
    rate, _, _ = bucket(100.0)
    rate.set_max_rate(MIN_RATE)
    assert rate.rate == MIN_RATE
