"""Prometheus metrics and health: what the daemon reports (`Metrics`, a no-op unless `[metrics]
listen` is set), `/metrics` and `/healthz` over HTTP, and the backlog gauge that asks
`DescribeEventsState` now and then. prometheus-client writes the exposition format."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from vodpoller.config import MetricsSettings, is_loopback
from vodpoller.errors import SourceError, describe
from vodpoller.httpserve import LocalServer
from vodpoller.logs import get_logger

log = get_logger(__name__)

Application = int | None
# From a 5 ms pull or batch to a 10 s request timeout; an empty long poll lands near 5 s.
# What `vodpoller_forward_failures_total{reason}` counts (forwardsend.Answer).
FORWARD_FAILURE_REASONS: Final = ("3xx", "4xx", "5xx", "timeout", "connection")
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0)
# How a normal-callback POST to the receiver ended (receiver.py).
CALLBACK_OUTCOMES: Final = (
    "stored",
    "duplicate",
    "rejected",
    "refused_token",
    "refused_method",
    "refused_size",
    "refused_body",
    "failed",
)


def app_label(app: Application) -> str:
    """The `sub_app_id` label: the id, or `default` for the default application."""
    return "default" if app is None else str(app)


@dataclass(frozen=True)
class Health:
    """The `/healthz` answer: `ok` and a JSON-ready body that says why."""

    ok: bool
    body: dict[str, Any] = field(default_factory=dict)


class Metrics:
    """What the daemon reports, as it happens. This base records nothing: it is what the
    daemon holds when metrics are off, so a call costs one empty method."""

    def pulled(self, app: Application, events: int, seconds: float) -> None:
        """A `PullEvents` answer (`events` may be 0: an empty long poll is a successful poll)."""

    def stored(self, app: Application, stored: int, duplicates: int) -> None:
        """A batch committed: new rows, and deliveries that found their row already there."""

    def quarantined(self, app: Application, entries: int) -> None:
        """Entries kept in `vod_rejects` instead of `vod_events` (unreadable, or refused by
        the database); their handles are confirmed all the same."""

    def confirmed(self, app: Application, events: int, batch_seconds: float) -> None:
        """A batch's handles confirmed; `batch_seconds` from the pull's request to now."""

    def confirm_expired(self, app: Application, events: int) -> None:
        """Handles given up (the 30 s budget spent, or refused as expired): they come back."""

    def api_error(self, action: str, code: str | None) -> None:
        """A VOD API call failed (`code` None: no answer at all)."""

    def storage_error(self) -> None:
        """A database operation failed."""

    def backlog(self, app: Application, events: int) -> None:
        """About how many events wait (`DescribeEventsState`)."""

    def callback(self, outcome: str) -> None:
        """A normal-callback POST answered; `outcome` is one of `CALLBACK_OUTCOMES`."""

    def forwarded(self) -> None:
        """An event's POST to the user's handler answered 2xx (forwarder.py)."""

    def forward_failed(self, reason: str) -> None:
        """A POST to the user's handler failed: `3xx`/`4xx`/`5xx`, `timeout` or `connection`."""

    def forward_waiting(self, rows: int, lag_seconds: float) -> None:
        """Rows not forwarded yet, and how long ago the oldest of them was received."""

    def health(self) -> Health:
        return Health(True, {"status": "ok"})


class PrometheusMetrics(Metrics):
    """Metrics in a private registry (not the process-wide default: tests and two instances
    in one process must not collide). `clock` is monotonic, for the health window."""

    def __init__(
        self,
        applications: Iterable[Application],
        *,
        health_window_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        receiving: bool = False,
        forwarding: bool = False,
    ):
        self.applications = tuple(applications)
        self.health_window_seconds = health_window_seconds
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._last_success: dict[Application, float | None] = dict.fromkeys(self.applications)
        self._lock = threading.Lock()
        app = ["sub_app_id"]
        r = self.registry
        self._pulled = Counter("vodpoller_events_pulled", "Events pulled", app, registry=r)
        self._stored = Counter(
            "vodpoller_events_stored", "Events stored as new rows", app, registry=r
        )
        self._duplicates = Counter(
            "vodpoller_events_duplicate", "Deliveries of events already stored", app, registry=r
        )
        self._quarantined = Counter(
            "vodpoller_entries_quarantined",
            "Entries kept in vod_rejects: unreadable, or refused by the database",
            app,
            registry=r,
        )
        self._confirmed = Counter(
            "vodpoller_events_confirmed", "Events confirmed with ConfirmEvents", app, registry=r
        )
        self._expired = Counter(
            "vodpoller_confirm_expired",
            "Events whose confirm was given up; VOD delivers them again",
            app,
            registry=r,
        )
        self._api_errors = Counter(
            "vodpoller_api_errors", "Failed VOD API calls", ["action", "code"], registry=r
        )
        self._storage_errors = Counter(
            "vodpoller_storage_errors", "Failed database operations", registry=r
        )
        self._pull_seconds = Histogram(
            "vodpoller_pull_duration_seconds",
            "PullEvents round trips, empty long polls included",
            app,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._batch_seconds = Histogram(
            "vodpoller_batch_duration_seconds",
            "From a pull's request to its batch confirmed",
            app,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._last_success_gauge = Gauge(
            "vodpoller_last_success_timestamp_seconds",
            "Unix time of the last successful PullEvents",
            app,
            registry=r,
        )
        self._backlog = Gauge(
            "vodpoller_backlog_events",
            "Events waiting in VOD's queue, approximately (DescribeEventsState)",
            app,
            registry=r,
        )
        self._callbacks = Counter(
            "vodpoller_callbacks_received",
            "Normal-callback POSTs to the receiver, by outcome",
            ["outcome"],
            registry=r,
        )
        if receiving:
            for outcome in CALLBACK_OUTCOMES:
                self._callbacks.labels(outcome)
        self._forwarded: Counter | None = None
        self._forward_failures: Counter | None = None
        self._forward_waiting: Gauge | None = None
        self._forward_lag: Gauge | None = None
        if forwarding:
            self._forwarded = Counter(
                "vodpoller_forwarded",
                "Events the user's handler answered 2xx to ([forward] url)",
                registry=r,
            )
            self._forward_failures = Counter(
                "vodpoller_forward_failures",
                "Failed POSTs to the user's handler, by reason: 3xx, 4xx, 5xx, timeout, connection",
                ["reason"],
                registry=r,
            )
            for reason in FORWARD_FAILURE_REASONS:
                self._forward_failures.labels(reason)
            self._forward_waiting = Gauge(
                "vodpoller_forward_pending",
                "Rows waiting to be forwarded, failed ones waiting for their next try included",
                registry=r,
            )
            self._forward_lag = Gauge(
                "vodpoller_forward_lag_seconds",
                "Age of the oldest row waiting to be forwarded; 0 when none waits",
                registry=r,
            )
        # Every series of each application exists from the start, at 0: rate() and alerts
        # see the first increment instead of a series that appears out of nowhere.
        for label in map(app_label, self.applications):
            for labelled in (
                self._pulled,
                self._stored,
                self._duplicates,
                self._quarantined,
                self._confirmed,
                self._expired,
                self._pull_seconds,
                self._batch_seconds,
            ):
                labelled.labels(label)

    def pulled(self, app: Application, events: int, seconds: float) -> None:
        label = app_label(app)
        self._pulled.labels(label).inc(events)
        self._pull_seconds.labels(label).observe(seconds)
        self._last_success_gauge.labels(label).set_to_current_time()
        with self._lock:
            self._last_success[app] = self._clock()

    def stored(self, app: Application, stored: int, duplicates: int) -> None:
        self._stored.labels(app_label(app)).inc(stored)
        self._duplicates.labels(app_label(app)).inc(duplicates)

    def quarantined(self, app: Application, entries: int) -> None:
        self._quarantined.labels(app_label(app)).inc(entries)

    def confirmed(self, app: Application, events: int, batch_seconds: float) -> None:
        self._confirmed.labels(app_label(app)).inc(events)
        self._batch_seconds.labels(app_label(app)).observe(batch_seconds)

    def confirm_expired(self, app: Application, events: int) -> None:
        self._expired.labels(app_label(app)).inc(events)

    def api_error(self, action: str, code: str | None) -> None:
        self._api_errors.labels(action, code or "NoAnswer").inc()

    def storage_error(self) -> None:
        self._storage_errors.inc()

    def backlog(self, app: Application, events: int) -> None:
        self._backlog.labels(app_label(app)).set(events)

    def callback(self, outcome: str) -> None:
        self._callbacks.labels(outcome).inc()

    def forwarded(self) -> None:
        if self._forwarded is not None:
            self._forwarded.inc()

    def forward_failed(self, reason: str) -> None:
        if self._forward_failures is not None:
            self._forward_failures.labels(reason).inc()

    def forward_waiting(self, rows: int, lag_seconds: float) -> None:
        if self._forward_waiting is not None and self._forward_lag is not None:
            self._forward_waiting.set(rows)
            self._forward_lag.set(lag_seconds)

    def health(self) -> Health:
        """Healthy while every application had a successful poll within the window."""
        now = self._clock()
        with self._lock:
            last = dict(self._last_success)
        ages = {app: None if at is None else now - at for app, at in last.items()}
        window = self.health_window_seconds
        stale = [app for app, age in ages.items() if age is None or age > window]
        applications = {
            app_label(app): {"last_success_seconds_ago": None if age is None else round(age, 1)}
            for app, age in ages.items()
        }
        if not stale:
            return Health(True, {"status": "ok", "applications": applications})
        reason = ", ".join(
            f"{app_label(app)} ({'never' if ages[app] is None else f'{ages[app]:.0f} s ago'})"
            for app in stale
        )
        return Health(
            False,
            {
                "status": "unhealthy",
                "reason": f"no successful poll within {window:g} s: {reason}",
                "applications": applications,
            },
        )

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an `Accept` header: (body, content type)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class MetricsServer:
    """`/metrics` and `/healthz` on a threaded HTTP server; port 0 picks a free one."""

    def __init__(self, metrics: PrometheusMetrics, host: str, port: int):
        self._local = LocalServer("metrics", host, port, _handler(metrics))
        self.host = host

    @property
    def port(self) -> int:
        return self._local.port

    @property
    def url(self) -> str:
        return self._local.url

    def start(self) -> MetricsServer:
        self._local.start()
        log.info("metrics listening", url=f"{self.url}/metrics", health=f"{self.url}/healthz")
        if not is_loopback(self.host):
            log.warning("metrics are reachable from other hosts", host=self.host)
        return self

    def close(self) -> None:
        self._local.close()


def _handler(metrics: PrometheusMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "vodpoller"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.render(self.headers.get("Accept", ""))
                self._answer(200, body, content_type)
            elif path == "/healthz":
                health = metrics.health()
                body = json.dumps(health.body).encode() + b"\n"
                self._answer(200 if health.ok else 503, body, "application/json")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return Handler


class BacklogPoller:
    """Asks `backlog(app)` (`DescribeEventsState`) for every application each `interval`
    seconds and sets the gauge. One call per application per interval stays far inside the
    API's rate limit; a failure counts as an API error and the gauge keeps its last value."""

    def __init__(
        self,
        backlog: Callable[[Application], int],
        applications: Iterable[Application],
        metrics: Metrics,
        interval: float,
    ):
        self._backlog = backlog
        self.applications = tuple(applications)
        self.metrics = metrics
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="backlog", daemon=True)
        self._failing: set[Application] = set()

    def poll_once(self) -> None:
        for app in self.applications:
            try:
                events = self._backlog(app)
            except SourceError as error:
                self.metrics.api_error("DescribeEventsState", error.code)
                if app not in self._failing:
                    log.warning("backlog unknown", sub_app_id=app, error=describe(error))
                self._failing.add(app)
                continue
            self._failing.discard(app)
            self.metrics.backlog(app, events)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def start(self) -> BacklogPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop; waits for a call in flight (at most the request timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@contextlib.contextmanager
def serving(
    settings: MetricsSettings,
    applications: Iterable[Application],
    backlog: Callable[[Application], int] | None = None,
    *,
    receiving: bool = False,
    forwarding: bool = False,
) -> Iterator[Metrics]:
    """The daemon's metrics for the length of the block: when `[metrics] listen` is set, a
    `PrometheusMetrics` served over HTTP, with the backlog gauge if `backlog` is given, the
    callback series from the start when `receiving` and the forwarder's with `forwarding`;
    otherwise the no-op `Metrics`."""
    address = settings.address
    if address is None:
        yield Metrics()
        return
    apps = tuple(applications)
    metrics = PrometheusMetrics(
        apps,
        health_window_seconds=settings.health_window_seconds,
        receiving=receiving,
        forwarding=forwarding,
    )
    server = MetricsServer(metrics, *address).start()
    poller = (
        BacklogPoller(backlog, apps, metrics, settings.backlog_interval_seconds).start()
        if backlog is not None
        else None
    )
    try:
        yield metrics
    finally:
        if poller is not None:
            poller.stop()
        server.close()
