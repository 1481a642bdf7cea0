"""The unsigned admin endpoints under `/_emulator/`: each takes the parsed JSON body and the
query, acts on the emulator's state, and returns the JSON to answer (HTTP 200), or raises
`AdminError` (HTTP 400)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vodpoller.emulator import push, wire
from vodpoller.emulator.faults import FaultPlan
from vodpoller.emulator.generate import generate_encoded
from vodpoller.emulator.queue import AppId
from vodpoller.emulator.shape import Shape

if TYPE_CHECKING:
    from vodpoller.emulator.server import Emulator

Query = dict[str, list[str]]
Endpoint = Callable[["Emulator", str, Any, Query], dict[str, Any]]

PUSH_DEFAULT_RETRIES = 3
PUSH_DEFAULT_TIMEOUT_MS = 5000
_PUSH_BATCH = 16
_PUSH_KEYS = frozenset({"url", "count", "sub_app_id", "events", "retries", "timeout_ms"})


class AdminError(Exception):
    """A bad admin request: HTTP 400 with `{"Error": message}`."""


def events(emulator: Emulator, _method: str, document: Any, query: Query) -> dict[str, Any]:
    entries = document if isinstance(document, list) else [document]
    app = app_from(query.get("sub_app_id", [None])[0])
    return {"Enqueued": emulator.queue.enqueue(app, _encode_all(entries))}


def _encode_all(entries: list[Any]) -> list[wire.Encoded]:
    """Every entry encoded as it will be served, or `AdminError` naming the first that cannot
    be: the emulator never accepts what it could not deliver."""
    if not all(isinstance(entry, dict) for entry in entries):
        raise AdminError("the body must be one EventSet entry (an object) or a list of them")
    encoded: list[wire.Encoded] = []
    for index, entry in enumerate(entries):
        try:
            encoded.append(wire.encode(entry))
        except wire.UnservableError as error:
            where = f"entry {index}" if len(entries) > 1 else "the entry"
            raise AdminError(f"{where} cannot be served: {error}; nothing was enqueued") from None
    return encoded


def generated(emulator: Emulator, _method: str, document: Any, _query: Query) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise AdminError('the body must be {"count": n, "sub_app_id": N?}')
    count = document.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise AdminError("count must be a non-negative integer")
    app = app_from(document.get("sub_app_id"))
    return {"Enqueued": emulator.queue.enqueue(app, generate_encoded(count, emulator.random()))}


def stats(emulator: Emulator, _method: str, _document: Any, _query: Query) -> dict[str, Any]:
    return emulator.stats()


def faults(emulator: Emulator, method: str, document: Any, _query: Query) -> dict[str, Any]:
    if method == "POST":
        try:
            emulator.faults = FaultPlan.parse(
                {} if document is None else document, actions=emulator.api.actions
            )
        except ValueError as error:
            raise AdminError(str(error)) from None
    return {"Faults": emulator.faults.model_dump()["actions"]}


def shape(emulator: Emulator, method: str, document: Any, _query: Query) -> dict[str, Any]:
    if method == "POST":
        try:
            emulator.api.shape = Shape.parse({} if document is None else document)
        except ValueError as error:
            raise AdminError(str(error)) from None
    return {"Shape": emulator.api.shape.model_dump(mode="json")}


def pushed(emulator: Emulator, _method: str, document: Any, _query: Query) -> dict[str, Any]:
    """Normal callback: given events as they are, else queued ones in the current shape,
    confirmed when pushed and back in the queue when every try failed."""
    if not isinstance(document, dict):
        raise AdminError(
            'the body must be {"url": "http://...", "count": n?, "sub_app_id": N?, '
            '"events": [...]?, "retries": k?, "timeout_ms": t?}'
        )
    unknown = sorted(str(key) for key in document if key not in _PUSH_KEYS)
    if unknown:
        raise AdminError(
            f"unknown key {', '.join(unknown)}; known: {', '.join(sorted(_PUSH_KEYS))}"
        )
    try:
        target = push.Target.parse(document.get("url"))
    except ValueError as error:
        raise AdminError(str(error)) from None
    retries = _integer(document, "retries", PUSH_DEFAULT_RETRIES, 0, push.MAX_RETRIES)
    timeout_ms = _integer(document, "timeout_ms", PUSH_DEFAULT_TIMEOUT_MS, 1, push.MAX_TIMEOUT_MS)
    app = app_from(document.get("sub_app_id"))

    def send(body: bytes) -> push.Attempted:
        return push.push(
            target,
            body,
            retries=retries,
            timeout=timeout_ms / 1000,
            stopping=emulator.closing,
        )

    given = document.get("events")
    if given is not None:
        if "count" in document:
            raise AdminError("give events or count, not both")
        entries = given if isinstance(given, list) else [given]
        return push.summary([send(wire.render(e)) for e in _encode_all(entries)])
    count = _integer(document, "count", sys.maxsize, 0, None)  # default: every waiting event
    return push.summary(_push_queued(emulator, app, count, send))


def _push_queued(
    emulator: Emulator, app: AppId, count: int, send: Callable[[bytes], push.Attempted]
) -> list[push.Attempted]:
    """Up to `count` queued events, taken 16 at a time. The ones that failed stay leased until
    the end, so that a later batch does not take them again, then go back to the queue."""
    queue = emulator.queue
    results: list[push.Attempted] = []
    failed: list[str] = []
    taken: list[str] = []
    try:
        while len(results) < count:
            batch = queue.lease(app, min(_PUSH_BATCH, count - len(results)))
            if not batch:
                break
            taken = [delivery.handle for delivery in batch]
            shape = emulator.api.shape
            for delivery in batch:
                result = send(wire.render(wire.encoded(delivery.event), shape))
                results.append(result)
                taken.remove(delivery.handle)
                if result.pushed:
                    queue.confirm(app, [delivery.handle])
                else:
                    failed.append(delivery.handle)
    finally:
        queue.release(app, failed + taken)  # `taken`: not pushed when something went wrong
    return results


def _integer(document: dict[str, Any], key: str, default: int, low: int, high: int | None) -> int:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"{key} must be an integer, not {value!r}")
    if high is None and value < low:
        raise AdminError(f"{key} must be at least {low}, not {value!r}")
    if high is not None and not low <= value <= high:
        raise AdminError(f"{key} must be an integer from {low} to {high}, not {value!r}")
    return value


def app_from(value: Any) -> AppId:
    if value is None or value == "":
        return None
    try:
        app = int(value)
    except (TypeError, ValueError):
        raise AdminError(f"sub_app_id must be an integer, not {value!r}") from None
    if app <= 0:
        raise AdminError("sub_app_id must be positive")
    return app


ROUTES: dict[tuple[str, str], Endpoint] = {
    ("POST", "/_emulator/events"): events,
    ("POST", "/_emulator/generate"): generated,
    ("GET", "/_emulator/stats"): stats,
    ("POST", "/_emulator/faults"): faults,
    ("GET", "/_emulator/faults"): faults,
    ("POST", "/_emulator/shape"): shape,
    ("GET", "/_emulator/shape"): shape,
    ("POST", "/_emulator/push"): pushed,
}
