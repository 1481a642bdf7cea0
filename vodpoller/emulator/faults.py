"""The fault plan: per action, how often to fail and how (`POST /_emulator/faults`)."""

from __future__ import annotations

import enum
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vodpoller.emulator.apierror import ApiError


class ActionFaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    error_codes: tuple[str, ...] = ("InternalError",)
    latency_ms: float = Field(0.0, ge=0.0)
    drop_rate: float = Field(0.0, ge=0.0, le=1.0)
    http_error_rate: float = Field(0.0, ge=0.0, le=1.0)


class FaultPlan(BaseModel):
    """Action name -> its faults. `{}` is the plan without faults."""

    model_config = ConfigDict(frozen=True)

    actions: dict[str, ActionFaults] = Field(default_factory=dict)

    @classmethod
    def parse(cls, document: Any) -> FaultPlan:
        """Validate a plan posted by a user; raise `ValueError` with a readable message."""
        if not isinstance(document, dict):
            raise ValueError(  # noqa: TRY004 (a user's document: reported as a bad value)
                "the fault plan must be a JSON object: {action: {...}}"
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
    if faults.http_error_rate and rng.random() < faults.http_error_rate:
        return Outcome.HTTP_ERROR, None
    if faults.error_rate and faults.error_codes and rng.random() < faults.error_rate:
        code = rng.choice(faults.error_codes)
        return Outcome.API_ERROR, ApiError(code, f"Injected fault: {code}.")
    if faults.drop_rate and rng.random() < faults.drop_rate:
        return Outcome.DROP, None
    return Outcome.ANSWER, None
