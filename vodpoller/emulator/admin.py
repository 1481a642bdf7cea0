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

    def _call(self, method: str, path: str, document: Any = None) -> Any:
        data = None if document is None else json.dumps(document).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 (the URL is the emulator's, http on purpose)
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
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
