"""The fault plan: per action, how often to fail and how (`POST /_emulator/faults`)."""

from __future__ import annotations

import enum
import random
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vodpoller.emulator.apierror import ApiError

# Floating-point slack for a sum of rates that is meant to be 1 (0.1 + 0.2 + 0.7).
_RATE_SUM_TOLERANCE = 1e-9
# HTTP answers that must not carry a body: a body would be read as the next answer.
_NO_BODY_STATUSES = frozenset({204, 304})
MAX_HOLD_MS = 600_000.0  # stall_ms at most: ten minutes

HttpErrorBody = Literal["json", "empty", "html", "huge"]


class Outcome(enum.Enum):
    """What the emulator does with one request, decided before the work."""

    ANSWER = "answer"
    HTTP_ERROR = "http_error"
    API_ERROR = "api_error"
    DROP = "drop"
    TRUNCATE = "truncate"
    BAD_CHUNKED = "bad_chunked"
    BAD_ENCODING = "bad_encoding"
    STALL = "stall"
    TRICKLE = "trickle"


# Each rate field and its outcome, in the order of the draw's thresholds (the first three as
# they have always been, so that a seeded plan of them draws the same outcomes).
RATES: dict[str, Outcome] = {
    "http_error_rate": Outcome.HTTP_ERROR,
    "error_rate": Outcome.API_ERROR,
    "drop_rate": Outcome.DROP,
    "truncate_rate": Outcome.TRUNCATE,
    "bad_chunked_rate": Outcome.BAD_CHUNKED,
    "bad_encoding_rate": Outcome.BAD_ENCODING,
    "stall_rate": Outcome.STALL,
    "trickle_rate": Outcome.TRICKLE,
}


class ActionFaults(BaseModel):
    """One action's faults. The rates are exclusive outcomes of one request, so they may add
    up to at most 1; what is left is the probability of a normal answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    error_codes: tuple[str, ...] = Field(("InternalError",), min_length=1)
    latency_ms: float = Field(0.0, ge=0.0)
    drop_rate: float = Field(0.0, ge=0.0, le=1.0)
    http_error_rate: float = Field(0.0, ge=0.0, le=1.0)
    http_error_status: int = Field(502, ge=200, le=599, strict=True)
    http_error_body: HttpErrorBody = "json"
    # The work done, then the answer broken on its way out:
    truncate_rate: float = Field(0.0, ge=0.0, le=1.0)
    bad_chunked_rate: float = Field(0.0, ge=0.0, le=1.0)
    bad_encoding_rate: float = Field(0.0, ge=0.0, le=1.0)
    stall_rate: float = Field(0.0, ge=0.0, le=1.0)
    stall_ms: float = Field(10_000.0, ge=0.0, le=MAX_HOLD_MS)
    trickle_rate: float = Field(0.0, ge=0.0, le=1.0)
    trickle_bytes_per_second: float = Field(100.0, gt=0.0)

    @model_validator(mode="after")
    def _rates_add_up_to_at_most_one(self) -> ActionFaults:
        total = sum(getattr(self, name) for name in RATES)
        if total > 1 + _RATE_SUM_TOLERANCE:
            raise ValueError(
                f"{' + '.join(RATES)} must sum to at most 1 "
                f"(each is the probability of one outcome of a request), not {total:g}"
            )
        return self

    @model_validator(mode="after")
    def _status_with_a_body(self) -> ActionFaults:
        if self.http_error_status in _NO_BODY_STATUSES:
            raise ValueError(
                f"http_error_status {self.http_error_status} carries no body; "
                "choose another from 200 to 599"
            )
        return self


class FaultPlan(BaseModel):
    """Action name -> its faults. `{}` is the plan without faults."""

    model_config = ConfigDict(frozen=True)

    actions: dict[str, ActionFaults] = Field(default_factory=dict)

    @classmethod
    def parse(cls, document: Any, *, actions: Collection[str]) -> FaultPlan:
        """Validate a plan posted by a user for an emulator serving `actions`; raise
        `ValueError` with a readable message. A plan for an action that is not served would
        silently do nothing (a typo, most likely), so it is refused."""
        if not isinstance(document, dict):
            raise ValueError(  # noqa: TRY004 (a user's document: reported as a bad value)
                "the fault plan must be a JSON object: {action: {...}}"
            )
        unknown = sorted(str(name) for name in document if name not in actions)
        if unknown:
            raise ValueError(
                f"bad fault plan: unknown action {', '.join(unknown)}; "
                f"the emulator serves {', '.join(sorted(actions))}"
            )
        try:
            return cls(actions=document)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors()
            )
            raise ValueError(f"bad fault plan: {problems}") from None

    def for_action(self, action: str) -> ActionFaults:
        return self.actions.get(action, _NO_FAULTS)


_NO_FAULTS = ActionFaults()


def decide(faults: ActionFaults, rng: random.Random) -> tuple[Outcome, ApiError | None]:
    """One draw against cumulative thresholds, so that each outcome comes at exactly its
    configured rate: [0, h) HTTP error, [h, h+e) API error, [h+e, h+e+d) drop, and so on in
    the order of `RATES`, else answer. (Drawing once per rate would make the later ones
    rarer: (1-h)(1-e)d for the drop.)"""
    rates = [(getattr(faults, name), outcome) for name, outcome in RATES.items()]
    if not any(rate for rate, _ in rates):
        return Outcome.ANSWER, None
    draw = rng.random()
    threshold = 0.0
    for rate, outcome in rates:
        threshold += rate
        if draw < threshold:
            if outcome is Outcome.API_ERROR:
                code = rng.choice(faults.error_codes)
                return outcome, ApiError(code, f"Injected fault: {code}.")
            return outcome, None
    return Outcome.ANSWER, None
