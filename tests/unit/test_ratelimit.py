"""`ratelimit.py`: the plain token bucket (the backlog gauge's pacing, the emulator's refusals),
on a fake clock and a sleep that only records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.helpers import FakeClock
from vodpoller.ratelimit import TokenBucket


class Sleeper:
    """Records the sleeps asked for; moves the fake clock by them when `advance` is set."""

    def __init__(self, clock: FakeClock, *, advance: bool = True):
        self.clock = clock
        self.advance = advance
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            if self.advance:
                self.clock.advance(seconds)


def bucket(rate: float, *, advance: bool = True) -> tuple[TokenBucket, FakeClock, Sleeper]:
    clock = FakeClock()
    sleeper = Sleeper(clock, advance=advance)
    return TokenBucket(rate, clock=clock, sleep=sleeper), clock, sleeper


def takes(limit: TokenBucket, count: int) -> list[bool]:
    return [limit.try_take() for _ in range(count)]


# -- try_take: the emulator's refusals --------------------------------------------------------


def test_a_new_bucket_holds_one_second_of_tokens() -> None:
    limit, _, _ = bucket(5.0)
    assert takes(limit, 6) == [True] * 5 + [False]


def test_tokens_come_back_at_the_rate() -> None:
    limit, clock, _ = bucket(4.0)
    takes(limit, 4)

    clock.advance(0.25)
    assert takes(limit, 2) == [True, False]
    clock.advance(0.75)
    assert takes(limit, 4) == [True, True, True, False]


def test_a_long_idle_spell_saves_up_no_more_than_one_second() -> None:
    limit, clock, _ = bucket(5.0)
    takes(limit, 5)
    clock.advance(100.0)
    assert takes(limit, 6) == [True] * 5 + [False]


def test_a_token_is_there_exactly_when_a_whole_one_has_refilled() -> None:
    limit, clock, _ = bucket(4.0)
    takes(limit, 4)

    clock.advance(0.125)  # half a token
    assert limit.try_take() is False
    clock.advance(0.125)  # exactly one
    assert limit.try_take() is True
    assert limit.try_take() is False


def test_a_refused_take_keeps_the_fraction_refilled_so_far() -> None:
    limit, clock, _ = bucket(4.0)
    takes(limit, 4)

    clock.advance(0.125)
    assert limit.try_take() is False  # half a token
    clock.advance(0.0625)
    assert limit.try_take() is False  # three quarters: the first half is not counted twice
    clock.advance(0.0625)
    assert limit.try_take() is True  # a whole one: nor is it lost


def test_a_rate_below_one_still_holds_one_token() -> None:
    limit, clock, _ = bucket(0.5)
    assert takes(limit, 2) == [True, False]

    clock.advance(1.0)
    assert limit.try_take() is False  # half a token after a second
    clock.advance(1.0)
    assert limit.try_take() is True
    clock.advance(100.0)
    assert takes(limit, 2) == [True, False]  # the burst is one token, not `rate`


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_a_rate_that_is_not_positive_means_no_limit(rate: float) -> None:
    limit, _, sleeper = bucket(rate)
    assert takes(limit, 1000) == [True] * 1000
    for _ in range(1000):
        limit.take()
    assert sleeper.waits == []


def test_the_rate_is_readable() -> None:
    limit, _, _ = bucket(7.5)
    assert limit.rate == 7.5


# -- take: the client's pacing ----------------------------------------------------------------


def test_take_spends_the_burst_without_sleeping() -> None:
    limit, _, sleeper = bucket(4.0)
    for _ in range(4):
        limit.take()
    assert sleeper.waits == []  # the last one leaves exactly nothing: no sleep, not even 0


def test_take_sleeps_until_its_token_has_refilled() -> None:
    limit, clock, sleeper = bucket(4.0)
    for _ in range(6):
        limit.take()
    assert sleeper.waits == [0.25, 0.25]
    assert clock.now == 1000.5


def test_take_sleeps_only_for_the_part_of_a_token_that_is_missing() -> None:
    limit, clock, sleeper = bucket(4.0)
    for _ in range(4):
        limit.take()
    clock.advance(0.125)  # half a token back
    limit.take()
    assert sleeper.waits == [0.125]


def test_take_at_a_rate_below_one_sleeps_for_its_token() -> None:
    limit, _, sleeper = bucket(0.5)
    limit.take()
    limit.take()
    assert sleeper.waits == [2.0]


def test_waiters_queue_one_behind_the_other() -> None:
    """Each take reserves its token before sleeping: the next waiter sleeps one token longer."""
    limit, _, sleeper = bucket(4.0, advance=False)
    for _ in range(7):
        limit.take()
    assert sleeper.waits == [0.25, 0.5, 0.75]


def test_a_reserved_token_is_refused_to_try_take() -> None:
    limit, clock, _ = bucket(4.0, advance=False)
    for _ in range(5):
        limit.take()  # the fifth is owed a quarter of a second from now

    clock.advance(0.25)  # the debt paid: still nothing over
    assert limit.try_take() is False
    clock.advance(0.25)
    assert limit.try_take() is True


def test_a_bucket_on_the_real_clock_sleeps_for_its_token() -> None:
    limit = TokenBucket(1000.0)
    started = time.monotonic()
    for _ in range(1003):
        limit.take()
    # At least the two tokens no one can have refilled were slept off; how much longer is
    # the machine's business.
    assert time.monotonic() - started >= 0.002


# -- threads share one bucket -----------------------------------------------------------------


class YieldingBucket(TokenBucket):
    """Hands the processor to another thread whenever it reads its rate, which refilling does
    between reading the balance and writing it back: left unguarded, threads would interleave
    there every time instead of once in a blue moon."""

    @property
    def rate(self) -> float:
        time.sleep(0)
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        self._rate = rate


def run_in_threads(work: Callable[[], None], count: int) -> None:
    start = threading.Barrier(count)

    def run() -> None:
        start.wait()
        work()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_threads_racing_on_try_take_get_exactly_the_tokens_there_are() -> None:
    limit = YieldingBucket(50.0, clock=FakeClock())
    granted: list[bool] = []

    def work() -> None:
        for _ in range(10):
            granted.append(limit.try_take())

    run_in_threads(work, 16)
    assert granted.count(True) == 50
    assert len(granted) == 160


def test_threads_waiting_on_take_each_get_their_own_place_in_line() -> None:
    clock = FakeClock()
    sleeper = Sleeper(clock, advance=False)
    limit = YieldingBucket(10.0, clock=clock, sleep=sleeper)

    def work() -> None:
        for _ in range(5):
            limit.take()

    run_in_threads(work, 8)  # 40 takes, 10 in the bucket: 30 waits of 0.1, 0.2, ... 3.0 s
    assert sorted(sleeper.waits) == pytest.approx([n / 10 for n in range(1, 31)])
