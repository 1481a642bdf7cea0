"""A small client for the emulator's unsigned admin endpoints, for tests, demos and benchmarks."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any


class EmulatorAdmin:
    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(
        self, method: str, path: str, document: Any = None, *, timeout: float | None = None
    ) -> Any:
        data = None if document is None else json.dumps(document).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 (the URL is the emulator's, http on purpose)
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout or self.timeout) as answer:  # noqa: S310
            return json.loads(answer.read())

    def enqueue(
        self,
        entries: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        sub_app_id: int | None = None,
    ) -> int:
        query = "" if sub_app_id is None else f"?sub_app_id={sub_app_id}"
        return int(self._call("POST", "/_emulator/events" + query, entries)["Enqueued"])

    def generate(self, count: int, sub_app_id: int | None = None) -> int:
        document: dict[str, Any] = {"count": count}
        if sub_app_id is not None:
            document["sub_app_id"] = sub_app_id
        return int(self._call("POST", "/_emulator/generate", document)["Enqueued"])

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_emulator/stats")
        return result

    def set_faults(self, plan: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/_emulator/faults", plan)
        return result

    def set_shape(
        self,
        *,
        null_keys: Sequence[str] = (),
        payload_null_keys: Sequence[str] = (),
        official: bool = False,
    ) -> dict[str, Any]:
        """How entries are laid out from the next delivery on; no argument resets it."""
        document = {
            "null_keys": list(null_keys),
            "payload_null_keys": list(payload_null_keys),
            "official": official,
        }
        result: dict[str, Any] = self._call("POST", "/_emulator/shape", document)["Shape"]
        return result

    def shape(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_emulator/shape")["Shape"]
        return result

    def push(
        self,
        url: str,
        *,
        count: int | None = None,
        sub_app_id: int | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
        retries: int | None = None,
        timeout_ms: int | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Normal callback to `url`: `{"Pushed", "Failed", "Attempts", "Results"}`. `timeout`
        is this call's, which waits for every push and its retries."""
        given = {
            "count": count,
            "sub_app_id": sub_app_id,
            "events": None if events is None else list(events),
            "retries": retries,
            "timeout_ms": timeout_ms,
        }
        document = {"url": url, **{k: v for k, v in given.items() if v is not None}}
        result: dict[str, Any] = self._call("POST", "/_emulator/push", document, timeout=timeout)
        return result
