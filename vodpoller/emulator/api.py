"""The three VOD actions the emulator serves, on parsed parameters; HTTP lives in `handler.py`.
A `PullEvents` answer carries its entries already rendered (bytes, see `wire.py`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vodpoller.emulator import wire
from vodpoller.emulator.apierror import ApiError
from vodpoller.emulator.queue import AppId, LeaseQueue
from vodpoller.emulator.shape import PLAIN, Shape

API_VERSION = "2018-07-17"
MAX_CONFIRM_HANDLES = 16
MAX_PULL_EVENTS = 16  # the real PullEvents answers at most 16 events (PROTOCOL.md §4)
EMPTY_RESPONSES = ("error", "null", "list")


@dataclass(frozen=True)
class ApiSettings:
    long_poll_seconds: float = 5.0
    max_events: int = MAX_PULL_EVENTS
    empty_response: str = "error"  # one of EMPTY_RESPONSES: ResourceNotFound, null or []


def _check_params(params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ApiError("UnknownParameter", f"The parameter `{unknown[0]}` is not recognized.")
    if "ExtInfo" in params and not isinstance(params["ExtInfo"], str):
        raise ApiError("InvalidParameter", "ExtInfo must be a string.")


def _sub_app_id(params: Mapping[str, Any]) -> AppId:
    value = params.get("SubAppId")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ApiError("InvalidParameterValue.SubAppId", "SubAppId must be a positive integer.")
    return value


class VodApi:
    def __init__(self, queue: LeaseQueue, settings: ApiSettings):
        self.queue = queue
        self.settings = settings
        # How entries are laid out from the next delivery on; replaced whole, never changed.
        self.shape: Shape = PLAIN
        self._actions: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
            "PullEvents": self.pull_events,
            "ConfirmEvents": self.confirm_events,
            "DescribeEventsState": self.describe_events_state,
        }

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(self._actions)

    def call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The `Response` body of a successful call, without `RequestId`; or raise `ApiError`."""
        handler = self._actions.get(action)
        if handler is None:
            raise ApiError(
                "InvalidAction", f"The action `{action}` is not supported by the emulator."
            )
        return handler(params)

    def pull_events(self, params: Mapping[str, Any]) -> dict[str, Any]:
        _check_params(params, {"ExtInfo", "SubAppId"})
        app = _sub_app_id(params)
        deliveries = self.queue.lease(
            app, self.settings.max_events, self.settings.long_poll_seconds
        )
        if deliveries:
            shape = self.shape  # the one in force when the events were leased
            events = [wire.render(wire.encoded(d.event), shape, d.handle) for d in deliveries]
            return {"EventSet": events}
        if self.settings.empty_response == "null":
            return {"EventSet": None}
        if self.settings.empty_response == "list":
            return {"EventSet": []}
        raise ApiError("ResourceNotFound", "There is no event to pull.")

    def confirm_events(self, params: Mapping[str, Any]) -> dict[str, Any]:
        _check_params(params, {"EventHandles", "ExtInfo", "SubAppId"})
        app = _sub_app_id(params)
        handles = params.get("EventHandles")
        if handles is None:
            raise ApiError("MissingParameter", "The request is missing `EventHandles`.")
        if not isinstance(handles, list) or not all(isinstance(h, str) for h in handles):
            raise ApiError("InvalidParameter", "EventHandles must be a list of strings.")
        if not handles or len(handles) > MAX_CONFIRM_HANDLES:
            raise ApiError(
                "InvalidParameterValue",
                f"EventHandles must hold 1 to {MAX_CONFIRM_HANDLES} handles, not {len(handles)}.",
            )
        outcome = self.queue.confirm(app, handles)
        if outcome.rejected:
            # The live handles in the same call are confirmed all the same (see the README).
            raise ApiError(
                "InvalidParameterValue",
                "EventHandle expired, unknown or already confirmed: " + ", ".join(outcome.rejected),
            )
        return {}

    def describe_events_state(self, params: Mapping[str, Any]) -> dict[str, Any]:
        _check_params(params, {"SubAppId"})
        return {"CountOfEventsToPull": self.queue.waiting(_sub_app_id(params))}
