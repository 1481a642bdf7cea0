"""`confirmer.py`: every confirm inside the budget counted from the pull's send, or not at all;
failures retried inside it; what became of each row reported once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.helpers import FakeClock
from vodpoller.confirmer import Confirmer, ConfirmJob
from vodpoller.errors import FatalSourceError, SourceError, TransientSourceError
from vodpoller.pacing import AdaptiveRate
from vodpoller.source import HandlesRejectedError
from vodpoller.store import Release

RECEIVED = datetime(2026, 12, 1, tzinfo=UTC)


def transient(code: str = "ClientNetworkError", **kwargs: Any) -> TransientSourceError:
    return TransientSourceError(f"{code}: try again", code=code, **kwargs)


def rejected() -> HandlesRejectedError:
    return HandlesRejectedError("handles expired", code="InvalidParameterValue")


class ScriptedConfirms:
    """A source whose confirms follow a script (an error to raise, or None for success)
    and move the fake clock by `cost` seconds each."""

    def __init__(
        self, clock: FakeClock, script: Sequence[SourceError | None] = (), cost: float = 0.0
    ):
        self.clock = clock
        self.script = list(script)
        self.cost = cost
        self.calls: list[list[str]] = []
        self.starts: list[float] = []

    def pull(self, sub_app_id: int | None) -> Any:
        raise AssertionError("the confirmer never pulls")

    def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
        self.calls.append(list(handles))
        self.starts.append(self.clock())
        self.clock.advance(self.cost)
        if self.script:
            error = self.script.pop(0)
            if error is not None:
                raise error


class Outcomes:
    """What the confirmer reported: settles and the job's `done`."""

    def __init__(self) -> None:
        self.confirmed: list[int] = []
        self.released: list[Release] = []
        self.done: list[tuple[int, int, int, BaseException | None]] = []
        self.finished = threading.Event()

    def settle(self, confirmed: Sequence[int], released: Sequence[Release]) -> None:
        self.confirmed.extend(confirmed)
        self.released.extend(released)

    def job_done(self, confirmed: int, refused: int, not_sent: int, error: Any = None) -> None:
        self.done.append((confirmed, refused, not_sent, error))
        self.finished.set()


def run(
    script: Sequence[SourceError | None] = (),
    *,
    budget: float = 30.0,
    sent_ago: float = 0.0,
    cost: float = 0.0,
    handles: int = 3,
    rate: AdaptiveRate | None = None,
) -> tuple[ScriptedConfirms, Outcomes, list[float]]:
    clock = FakeClock()
    source = ScriptedConfirms(clock, script, cost)
    outcomes = Outcomes()
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        clock.advance(seconds)

    confirmer = Confirmer(source, outcomes.settle, senders=1, rate=rate, clock=clock, pause=pause)
    confirmer.submit(
        ConfirmJob(
            sub_app_id=7,
            handles=tuple(f"h{n}" for n in range(handles)),
            row_ids=tuple(range(10, 10 + handles)),
            received_at=RECEIVED,
            deadline=clock() - sent_ago + budget,
            done=outcomes.job_done,
        )
    )
    confirmer.close()
    return source, outcomes, pauses


def test_a_confirm_that_goes_through_settles_its_rows_as_confirmed() -> None:
    source, outcomes, pauses = run()

    assert source.calls == [["h0", "h1", "h2"]]
    assert (outcomes.confirmed, outcomes.released) == ([10, 11, 12], [])
    assert outcomes.done == [(3, 0, 0, None)]
    assert pauses == []


@pytest.mark.parametrize("code", ["ClientNetworkError", "InternalError", "RequestLimitExceeded"])
def test_a_transient_failure_is_tried_again_after_a_short_random_pause(code: str) -> None:
    source, outcomes, pauses = run([transient(code), transient(code), None])

    assert len(source.calls) == 3
    assert outcomes.done == [(3, 0, 0, None)]
    assert len(pauses) == 2
    assert 0 <= pauses[0] <= 0.2
    assert 0 <= pauses[1] <= 0.4


def test_a_budget_spent_before_the_first_try_sends_nothing_and_lets_go() -> None:
    source, outcomes, _ = run(budget=30.0, sent_ago=30.0)

    assert source.calls == []
    assert outcomes.released == [Release(row, RECEIVED) for row in (10, 11, 12)]
    assert outcomes.done == [(0, 0, 3, None)]


def test_the_budget_counts_from_the_pull_not_from_the_confirm() -> None:
    source, outcomes, _ = run(budget=30.0, sent_ago=29.9)
    assert len(source.calls) == 1
    assert outcomes.done == [(3, 0, 0, None)]


def test_failures_until_the_budget_is_spent_let_go_without_a_try_past_it() -> None:
    source, outcomes, _ = run([transient()] * 1000, budget=5.0, cost=0.5)

    assert outcomes.done == [(0, 3, 0, None)]
    assert [r.row_id for r in outcomes.released] == [10, 11, 12]
    assert len(source.calls) >= 3
    # Every try started inside the budget (the fake clock starts at 1000).
    assert max(source.starts) < 1000 + 5.0


def test_expired_handles_are_let_go_of_and_are_no_error() -> None:
    source, outcomes, _ = run([rejected()])

    assert len(source.calls) == 1
    assert outcomes.done == [(0, 3, 0, None)]
    assert len(outcomes.released) == 3


def test_a_lost_answer_then_refused_handles_means_the_first_try_went_through() -> None:
    lost = transient("ClientNetworkError", ambiguous=True)  # it may have been applied
    _, outcomes, _ = run([lost, rejected()])
    assert outcomes.done == [(3, 0, 0, None)]


@pytest.mark.parametrize(
    "first",
    [
        transient("InternalError"),  # the service answered: not applied
        transient("ClientNetworkError", never_sent=True, ambiguous=True),  # no connection
        transient("RequestLimitExceeded"),
    ],
    ids=["service-answered", "never-connected", "throttled"],
)
def test_refused_after_a_failure_that_was_not_applied_is_expired(first: SourceError) -> None:
    _, outcomes, _ = run([first, rejected()])
    assert outcomes.done == [(0, 3, 0, None)]


def test_a_fatal_error_lets_go_and_reports_the_error() -> None:
    denied = FatalSourceError("denied", code="AuthFailure.SignatureFailure")
    source, outcomes, _ = run([denied, None])

    assert len(source.calls) == 1
    assert outcomes.done == [(0, 3, 0, denied)]
    assert len(outcomes.released) == 3


def test_a_throttle_cuts_the_confirm_rate_and_a_success_regrows_it() -> None:
    clock_rate = AdaptiveRate(100.0)
    _, outcomes, _ = run([transient("RequestLimitExceeded"), None], rate=clock_rate)
    assert outcomes.done == [(3, 0, 0, None)]
    assert clock_rate.throttles == 1


@pytest.mark.parametrize("count", [0, 17])
def test_a_job_of_no_or_more_than_sixteen_handles_is_refused(count: int) -> None:
    confirmer = Confirmer(ScriptedConfirms(FakeClock()), lambda *_: None, senders=1)
    job = ConfirmJob(7, ("h",) * count, (1,) * count, RECEIVED, 0.0, lambda *_: None)
    with pytest.raises(ValueError, match="1 to 16 handles"):
        confirmer.submit(job)
    confirmer.close()


def test_close_waits_for_every_job_and_jobs_run_in_parallel() -> None:
    started = threading.Barrier(3, timeout=5)

    class Slow:
        def pull(self, sub_app_id: int | None) -> Any:
            raise AssertionError

        def confirm(self, sub_app_id: int | None, handles: Sequence[str]) -> None:
            started.wait()  # three confirms at once, or this times out

    outcomes = Outcomes()
    confirmer = Confirmer(Slow(), outcomes.settle, senders=3)
    done: list[Callable[..., None]] = []
    for n in range(3):
        done.append(outcomes.job_done)
        confirmer.submit(ConfirmJob(1, (f"h{n}",), (n,), RECEIVED, 1e12, outcomes.job_done))
    confirmer.close()

    assert sorted(outcomes.confirmed) == [0, 1, 2]
    assert len(outcomes.done) == 3
