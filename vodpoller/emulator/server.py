"""The emulator: its options, its state (queues, fault plan, shape, counts) and its threaded
HTTP server; requests are answered by `handler.py`."""

from __future__ import annotations

import collections
import math
import random
import sys
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from vodpoller.emulator import wire
from vodpoller.emulator.api import EMPTY_RESPONSES, MAX_PULL_EVENTS, ApiSettings, VodApi
from vodpoller.emulator.faults import FaultPlan
from vodpoller.emulator.handler import MAX_BODY_BYTES, Handler
from vodpoller.emulator.queue import AppId, LeaseQueue
from vodpoller.emulator.ratelimit import RateLimiter
from vodpoller.emulator.samples import load_samples

__all__ = [
    "DEFAULT_SECRET_ID",
    "DEFAULT_SECRET_KEY",
    "MAX_BODY_BYTES",
    "Emulator",
    "EmulatorOptions",
    "EmulatorServer",
]

# The emulator's well-known test pair, printed at start; never a real credential.
DEFAULT_SECRET_ID = "AKIDvodpollerEmulator"  # noqa: S105
DEFAULT_SECRET_KEY = "vodpoller-emulator-secret-key"  # noqa: S105


@dataclass(frozen=True)
class EmulatorOptions:
    """Checked on construction (`ValueError`), as the command line checks its options."""

    host: str = "127.0.0.1"
    port: int = 8750
    secret_id: str = DEFAULT_SECRET_ID
    secret_key: str = DEFAULT_SECRET_KEY
    lease_seconds: float = 30.0
    long_poll_seconds: float = 5.0
    max_events: int = MAX_PULL_EVENTS
    rate_limit: float = 100.0
    latency_ms: float = 0.0
    samples: bool = False
    empty_response: str = "error"
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = [
            problem
            for problem in (
                _integer_problem("port", self.port, 0, 65535),
                _integer_problem("max_events", self.max_events, 1, MAX_PULL_EVENTS),
                _number_problem("lease_seconds", self.lease_seconds, above=0),
                _number_problem("long_poll_seconds", self.long_poll_seconds, at_least=0),
                _number_problem("rate_limit", self.rate_limit, at_least=0),
                _number_problem("latency_ms", self.latency_ms, at_least=0),
            )
            if problem is not None
        ]
        if not self.secret_id or not self.secret_key:
            problems.append("secret_id and secret_key must not be empty")
        if self.empty_response not in EMPTY_RESPONSES:
            problems.append(
                f"empty_response must be one of {', '.join(EMPTY_RESPONSES)}, "
                f"not {self.empty_response!r}"
            )
        if problems:
            raise ValueError("bad emulator options: " + "; ".join(problems))


def _integer_problem(name: str, value: int, low: int, high: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{name} must be an integer from {low} to {high}, not {value!r}"
    return None


def _number_problem(
    name: str, value: float, *, above: float | None = None, at_least: float | None = None
) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"{name} must be a finite number, not {value!r}"
    if above is not None and not value > above:
        return f"{name} must be more than {above:g}, not {value!r}"
    if at_least is not None and not value >= at_least:
        return f"{name} must be at least {at_least:g}, not {value!r}"
    return None


class Emulator:
    """The emulator's state and its HTTP server; a context manager that serves in a thread."""

    def __init__(self, options: EmulatorOptions | None = None):
        self.options = options or EmulatorOptions()
        self.queue = LeaseQueue(self.options.lease_seconds)
        self.api = VodApi(
            self.queue,
            ApiSettings(
                long_poll_seconds=self.options.long_poll_seconds,
                max_events=self.options.max_events,
                empty_response=self.options.empty_response,
            ),
        )
        self.secrets = {self.options.secret_id: self.options.secret_key}
        self.limiter = RateLimiter(self.options.rate_limit)
        self.faults = FaultPlan()
        self._streams: dict[str, random.Random] = {"": random.Random(self.options.seed)}
        self._rng_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()
        self.throttled = 0
        self.throttled_by_action: collections.Counter[str] = collections.Counter()
        # Set when the emulator stops: stalled, trickled and pushed answers give up then.
        self.closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.server = EmulatorServer((self.options.host, self.options.port), self)
        if self.options.samples:
            self.queue.enqueue(None, [wire.encode(sample) for sample in load_samples()])

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def endpoint(self) -> str:
        """`host:port`, what `HttpProfile(endpoint=...)` and `vod.endpoint` want."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.05)

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.serve_forever, name="vod-emulator", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.closing.set()
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def random(self, stream: str = "") -> random.Random:
        """A private generator: callers hold no lock, so each gets its own seeded child. Each
        `stream` (an action's faults) draws from a sequence of its own: with a seed, the n-th
        request of an action meets the same fault whatever other requests came in between."""
        with self._rng_lock:
            parent = self._streams.get(stream)
            if parent is None:
                seed = None if self.options.seed is None else f"{self.options.seed}:{stream}"
                parent = self._streams[stream] = random.Random(seed)
            return random.Random(parent.getrandbits(64))

    def count_request(self, action: str) -> None:
        with self._counts_lock:
            self.requests[action] += 1

    def count_throttled(self, action: str) -> None:
        with self._counts_lock:
            self.throttled += 1
            self.throttled_by_action[action] += 1

    def stats(self) -> dict[str, Any]:
        counts = self.queue.counts()
        with self._counts_lock:
            requests = dict(self.requests)
            throttled = self.throttled
            throttled_by_action = dict(self.throttled_by_action)
        return {
            "Queued": sum(c.queued for c in counts.values()),
            "Leased": sum(c.leased for c in counts.values()),
            "Confirmed": sum(c.confirmed for c in counts.values()),
            "Redelivered": self.queue.redelivered,
            "Throttled": throttled,
            "ThrottledByAction": throttled_by_action,
            "Requests": requests,
            "Applications": {
                _app_name(app): {"Queued": c.queued, "Leased": c.leased, "Confirmed": c.confirmed}
                for app, c in counts.items()
            },
        }


def _app_name(app: AppId) -> str:
    return "default" if app is None else str(app)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Emulator):
        self.emulator = emulator
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (a killed daemon) is no emulator error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
