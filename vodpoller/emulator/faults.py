"""The fault plan: per action, how often to fail and how (`POST /_emulator/faults`)."""

from __future__ import annotations

import enum
import random
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vodpoller.emulator.apierror import ApiError

# Floating-point slack for a sum of rates that is meant to be 1 (0.1 + 0.2 + 0.7).
_RATE_SUM_TOLERANCE = 1e-9


class ActionFaults(BaseModel):
    """One action's faults. The three rates are exclusive outcomes of one request, so they
    may add up to at most 1; what is left is the probability of a normal answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    error_codes: tuple[str, ...] = Field(("InternalError",), min_length=1)
    latency_ms: float = Field(0.0, ge=0.0)
    drop_rate: float = Field(0.0, ge=0.0, le=1.0)
    http_error_rate: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _rates_add_up_to_at_most_one(self) -> ActionFaults:
        total = self.http_error_rate + self.error_rate + self.drop_rate
        if total > 1 + _RATE_SUM_TOLERANCE:
            raise ValueError(
                "http_error_rate + error_rate + drop_rate must sum to at most 1 "
                f"(each is the probability of one outcome of a request), not {total:g}"
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


class Outcome(enum.Enum):
    """What the emulator does with one request, decided before the work."""

    ANSWER = "answer"
    HTTP_ERROR = "http_error"
    API_ERROR = "api_error"
    DROP = "drop"


def decide(faults: ActionFaults, rng: random.Random) -> tuple[Outcome, ApiError | None]:
    """One draw against cumulative thresholds, so that each outcome comes at exactly its
    configured rate: [0, h) HTTP error, [h, h+e) API error, [h+e, h+e+d) drop, else answer.
    (Drawing once per rate would make the later ones rarer: (1-h)(1-e)d for the drop.)"""
    if not (faults.http_error_rate or faults.error_rate or faults.drop_rate):
        return Outcome.ANSWER, None
    draw = rng.random()
    threshold = faults.http_error_rate
    if draw < threshold:
        return Outcome.HTTP_ERROR, None
    threshold += faults.error_rate
    if draw < threshold:
        code = rng.choice(faults.error_codes)
        return Outcome.API_ERROR, ApiError(code, f"Injected fault: {code}.")
    threshold += faults.drop_rate
    if draw < threshold:
        return Outcome.DROP, None
    return Outcome.ANSWER, None
