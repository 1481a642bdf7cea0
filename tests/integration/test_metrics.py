"""`/metrics` and `/healthz` over real HTTP on a free port, the backlog gauge from the emulator's
`DescribeEventsState` through the real SDK, and the `[metrics]` settings."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.conftest import EmulatorFactory
from tests.helpers import FakeClock, settings_for
from vodpoller.app import make_source
from vodpoller.config import MetricsSettings, Settings, settings_from
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import Emulator
from vodpoller.errors import ConfigError, TransientSourceError
from vodpoller.metrics import (
    DURATION_BUCKETS,
    BacklogPoller,
    Metrics,
    MetricsServer,
    PrometheusMetrics,
    serving,
)

APPS = (None, 1500000001)


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes):
        self.status = status
        self.content_type = headers.get("Content-Type", "")
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """`(sample name, sorted labels)` -> value, read with prometheus-client's parser."""
        found = {}
        for family in text_string_to_metric_families(self.body.decode()):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found


def get(url: str, accept: str | None = None) -> Answer:
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
            return Answer(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.headers, error.read())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> PrometheusMetrics:
    return PrometheusMetrics(APPS, health_window_seconds=120.0, clock=clock)


@pytest.fixture
def server(metrics: PrometheusMetrics) -> Iterator[MetricsServer]:
    started = MetricsServer(metrics, "127.0.0.1", 0).start()
    yield started
    started.close()


def test_metrics_are_served_as_prometheus_text(
    metrics: PrometheusMetrics, server: MetricsServer
) -> None:
    metrics.pulled(None, 16, 0.02)
    metrics.pulled(None, 0, 5.0)
    metrics.stored(None, 14, 2)
    metrics.quarantined(1500000001, 2)
    metrics.confirmed(None, 16, 0.3)
    metrics.confirm_expired(1500000001, 3)
    metrics.api_error("PullEvents", "InternalError")
    metrics.api_error("PullEvents", "InternalError")
    metrics.api_error("ConfirmEvents", None)
    metrics.storage_error()
    metrics.backlog(1500000001, 420)

    answer = get(f"{server.url}/metrics")

    assert answer.status == 200
    assert answer.content_type.startswith("text/plain")
    samples = answer.samples()
    default = (("sub_app_id", "default"),)
    app = (("sub_app_id", "1500000001"),)
    assert samples[("vodpoller_events_pulled_total", default)] == 16
    assert samples[("vodpoller_events_stored_total", default)] == 14
    assert samples[("vodpoller_events_duplicate_total", default)] == 2
    assert samples[("vodpoller_events_confirmed_total", default)] == 16
    assert samples[("vodpoller_entries_quarantined_total", app)] == 2
    assert samples[("vodpoller_entries_quarantined_total", default)] == 0
    assert samples[("vodpoller_confirm_expired_total", app)] == 3
    assert samples[("vodpoller_confirm_expired_total", default)] == 0
    errors = "vodpoller_api_errors_total"
    assert samples[(errors, (("action", "PullEvents"), ("code", "InternalError")))] == 2
    assert samples[(errors, (("action", "ConfirmEvents"), ("code", "NoAnswer")))] == 1
    assert samples[("vodpoller_storage_errors_total", ())] == 1
    assert samples[("vodpoller_pull_duration_seconds_count", default)] == 2
    assert samples[("vodpoller_pull_duration_seconds_sum", default)] == pytest.approx(5.02)
    assert samples[("vodpoller_batch_duration_seconds_count", default)] == 1
    assert samples[("vodpoller_backlog_events", app)] == 420
    assert ("vodpoller_last_success_timestamp_seconds", default) in samples
    assert ("vodpoller_last_success_timestamp_seconds", app) not in samples  # never polled


def test_every_application_has_its_series_at_zero_before_anything_happens(
    server: MetricsServer,
) -> None:
    samples = get(f"{server.url}/metrics").samples()

    for label in ("default", "1500000001"):
        labels = (("sub_app_id", label),)
        for name in (
            "vodpoller_events_pulled_total",
            "vodpoller_events_stored_total",
            "vodpoller_events_duplicate_total",
            "vodpoller_entries_quarantined_total",
            "vodpoller_events_confirmed_total",
            "vodpoller_confirm_expired_total",
            "vodpoller_pull_duration_seconds_count",
            "vodpoller_batch_duration_seconds_count",
        ):
            assert samples[(name, labels)] == 0, name


def test_duration_buckets_run_from_5_ms_to_10_s(
    metrics: PrometheusMetrics, server: MetricsServer
) -> None:
    metrics.pulled(None, 1, 0.005)
    metrics.pulled(None, 0, 10.0)
    metrics.pulled(None, 0, 12.0)

    samples = get(f"{server.url}/metrics").samples()

    def bucket(le: str) -> float:
        return samples[
            ("vodpoller_pull_duration_seconds_bucket", (("le", le), ("sub_app_id", "default")))
        ]

    assert DURATION_BUCKETS[0] == 0.005
    assert DURATION_BUCKETS[-1] == 10.0
    assert bucket("0.005") == 1
    assert bucket("7.5") == 1
    assert bucket("10.0") == 2
    assert bucket("+Inf") == 3


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(server: MetricsServer) -> None:
    answer = get(f"{server.url}/metrics", accept="application/openmetrics-text; version=1.0.0")

    assert answer.status == 200
    assert answer.content_type.startswith("application/openmetrics-text")
    assert answer.body.endswith(b"# EOF\n")


def test_health_fails_until_every_application_has_polled(
    metrics: PrometheusMetrics, server: MetricsServer
) -> None:
    first = get(f"{server.url}/healthz")
    metrics.pulled(None, 0, 5.0)
    second = get(f"{server.url}/healthz")
    metrics.pulled(1500000001, 0, 5.0)
    third = get(f"{server.url}/healthz")

    assert first.status == 503
    assert first.content_type == "application/json"
    assert first.json()["reason"] == (
        "no successful poll within 120 s: default (never), 1500000001 (never)"
    )
    assert second.status == 503
    assert second.json()["reason"] == "no successful poll within 120 s: 1500000001 (never)"
    assert third.status == 200
    assert third.json() == {
        "status": "ok",
        "applications": {
            "default": {"last_success_seconds_ago": 0.0},
            "1500000001": {"last_success_seconds_ago": 0.0},
        },
    }


def test_health_fails_once_a_poll_is_older_than_the_window(
    metrics: PrometheusMetrics, server: MetricsServer, clock: FakeClock
) -> None:
    metrics.pulled(None, 0, 5.0)
    metrics.pulled(1500000001, 0, 5.0)
    clock.advance(100.0)
    metrics.pulled(None, 0, 5.0)

    clock.advance(20.0)  # 1500000001: exactly the window
    at_the_edge = get(f"{server.url}/healthz")
    clock.advance(0.5)
    beyond = get(f"{server.url}/healthz")

    assert at_the_edge.status == 200
    assert beyond.status == 503
    assert beyond.json()["status"] == "unhealthy"
    assert beyond.json()["reason"] == "no successful poll within 120 s: 1500000001 (120 s ago)"
    assert beyond.json()["applications"]["default"] == {"last_success_seconds_ago": 20.5}


def test_other_paths_are_not_found(server: MetricsServer) -> None:
    assert get(f"{server.url}/").status == 404
    assert get(f"{server.url}/metrics/extra").status == 404


def test_the_no_op_metrics_are_always_healthy_and_accept_every_call() -> None:
    metrics = Metrics()
    metrics.pulled(None, 1, 0.1)
    metrics.stored(None, 1, 0)
    metrics.confirmed(None, 1, 0.2)
    metrics.confirm_expired(None, 1)
    metrics.api_error("PullEvents", "InternalError")
    metrics.storage_error()
    metrics.backlog(None, 5)

    assert metrics.health().ok


def test_a_port_in_use_is_a_config_error(metrics: PrometheusMetrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            MetricsServer(metrics, "127.0.0.1", port)


def test_an_ipv6_loopback_address_is_served(metrics: PrometheusMetrics) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = MetricsServer(metrics, "::1", 0).start()
    except ConfigError as error:
        pytest.skip(f"::1 is not usable here: {error}")
    try:
        assert server.url.startswith("http://[::1]:")
        assert get(f"{server.url}/metrics").status == 200
    finally:
        server.close()


def test_listening_beyond_loopback_says_so_in_the_log(metrics: PrometheusMetrics) -> None:
    with capture_logs() as logs:
        server = MetricsServer(metrics, "0.0.0.0", 0).start()  # noqa: S104 (the point)
        server.close()
    loopback = MetricsServer(metrics, "127.0.0.1", 0)
    with capture_logs() as quiet:
        loopback.start()
        loopback.close()

    assert [e["event"] for e in logs] == [
        "metrics listening",
        "metrics are reachable from other hosts",
    ]
    assert [e["event"] for e in quiet] == ["metrics listening"]


def test_serving_without_a_listen_address_gives_the_no_op_metrics() -> None:
    with capture_logs() as logs, serving(MetricsSettings(), APPS) as metrics:
        assert type(metrics) is Metrics

    assert logs == []


def test_serving_with_an_address_serves_until_the_block_ends() -> None:
    settings = MetricsSettings(listen="127.0.0.1:0", health_window_seconds=30.0)
    with capture_logs() as logs, serving(settings, APPS) as metrics:
        url = next(e["url"] for e in logs if e["event"] == "metrics listening")
        metrics.pulled(None, 3, 0.1)
        answer = get(url)
        health = get(url.replace("/metrics", "/healthz"))

    assert answer.samples()[("vodpoller_events_pulled_total", (("sub_app_id", "default"),))] == 3
    assert health.json()["reason"] == "no successful poll within 30 s: 1500000001 (never)"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)  # noqa: S310 (loopback)


def test_the_backlog_gauge_follows_describe_events_state(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    admin.generate(40)
    admin.generate(7, sub_app_id=1500000001)
    source = make_source(settings_for(emulator, f"sqlite:///{tmp_path / 'x.db'}", sub_app_ids=()))
    metrics = PrometheusMetrics(APPS)

    with contextlib.closing(source):
        BacklogPoller(source.backlog, APPS, metrics, 60.0).poll_once()

    gauge = metrics.registry.get_sample_value
    assert gauge("vodpoller_backlog_events", {"sub_app_id": "default"}) == 40
    assert gauge("vodpoller_backlog_events", {"sub_app_id": "1500000001"}) == 7


def _refused_settings(emulator: Emulator, tmp_path: Path) -> Settings:
    good = settings_for(emulator, f"sqlite:///{tmp_path / 'x.db'}")
    vod = good.vod.model_copy(update={"secret_key": SecretStr("not-the-key")})
    return good.model_copy(update={"vod": vod})


def test_a_failing_backlog_call_counts_an_api_error_and_warns_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    source = make_source(_refused_settings(emulator, tmp_path))
    metrics = PrometheusMetrics([None])
    poller = BacklogPoller(source.backlog, [None], metrics, 60.0)

    with contextlib.closing(source), capture_logs() as logs:
        poller.poll_once()
        poller.poll_once()

    errors = metrics.registry.get_sample_value(
        "vodpoller_api_errors_total",
        {"action": "DescribeEventsState", "code": "AuthFailure.SignatureFailure"},
    )
    assert errors == 2
    assert [e["event"] for e in logs] == ["backlog unknown"]
    assert (
        metrics.registry.get_sample_value("vodpoller_backlog_events", {"sub_app_id": "default"})
        is None
    )


def test_the_backlog_thread_polls_at_start_and_stops_promptly() -> None:
    calls: list[int | None] = []

    def backlog(app: int | None) -> int:
        calls.append(app)
        if len(calls) > 2:
            raise TransientSourceError("DescribeEventsState failed", code="InternalError")
        return 5

    metrics = PrometheusMetrics(APPS)
    poller = BacklogPoller(backlog, APPS, metrics, 3600.0).start()
    poller.stop()  # the first round runs before the thread waits an hour

    assert calls == list(APPS)
    assert (
        metrics.registry.get_sample_value("vodpoller_backlog_events", {"sub_app_id": "default"})
        == 5
    )


# -- the [metrics] settings --------------------------------------------------------------------


def _metrics(**values: Any) -> MetricsSettings:
    return settings_from({"metrics": values}, {}, "test.toml").metrics


def test_metrics_are_off_by_default() -> None:
    assert MetricsSettings().address is None
    assert _metrics(listen="").address is None


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("localhost:9464", ("localhost", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),  # noqa: S104 (explicit: exposed to the network)
    ],
)
def test_a_listen_address_without_a_host_stays_on_loopback(
    listen: str, address: tuple[str, int]
) -> None:
    assert _metrics(listen=listen).address == address


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("metrics.internal:9464", "'metrics.internal' is neither an IP address nor localhost"),
        ("127.0.0.1", "must be host:port"),
        ("::1:9464", "must be host:port, e.g. 127.0.0.1:9464 or [::1]:9464"),
        ("127.0.0.1:70000", "port 70000 is above 65535"),
        ("http://127.0.0.1:9464", "must be host:port"),
    ],
)
def test_a_bad_listen_address_is_refused_naming_the_key(listen: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _metrics(listen=listen)

    assert "`metrics.listen`" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("health_window_seconds", 0), ("backlog_interval_seconds", 1.0), ("port", 9464)],
)
def test_other_metrics_keys_are_checked(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"`metrics\.{key}`"):
        _metrics(**{key: value})
