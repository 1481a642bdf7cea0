"""The metrics of a real `vodpoller run`: `/metrics` moves with a drain, `/healthz` answers 200
while it polls and 503 once VOD has been gone longer than the health window."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.acceptance.test_cli import vodpoller
from tests.conftest import EmulatorFactory
from tests.daemon_process import VodpollerProcess, wait_until
from tests.helpers import emulator_config
from tests.integration.test_metrics import Answer, get
from vodpoller.emulator.admin import EmulatorAdmin

pytestmark = pytest.mark.slow

DEFAULT = (("sub_app_id", "default"),)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_move_with_a_drain_and_health_follows_the_polls(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    admin.generate(30)
    port = _free_port()
    config = emulator_config(
        tmp_path / "config.toml",
        emulator,
        f"sqlite:///{tmp_path / 'events.db'}",
        metrics={"listen": f"127.0.0.1:{port}", "health_window_seconds": 2.0},
    )
    url = f"http://127.0.0.1:{port}"
    with VodpollerProcess("run", config, tmp_path) as daemon:
        listening = daemon.wait_for_line("metrics listening")
        wait_until(lambda: admin.stats()["Confirmed"] == 30, 30, "30 events confirmed")

        def counted() -> Answer | None:
            answer = get(f"{url}/metrics")
            done = answer.samples().get(("vodpoller_events_confirmed_total", DEFAULT)) == 30
            return answer if done else None

        wait_until(counted, 10, "the confirms counted")
        scraped = get(f"{url}/metrics").samples()
        healthy = get(f"{url}/healthz")
        emulator.close()  # VOD is gone: no successful poll from now on
        wait_until(lambda: get(f"{url}/healthz").status == 503, 20, "/healthz to answer 503")
        unhealthy = get(f"{url}/healthz")
        after = get(f"{url}/metrics").samples()
        missing = get(f"{url}/nothing")
        assert daemon.alive()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    assert listening["url"] == f"{url}/metrics"
    assert listening["health"] == f"{url}/healthz"
    assert scraped[("vodpoller_events_pulled_total", DEFAULT)] == 30
    assert scraped[("vodpoller_events_stored_total", DEFAULT)] == 30
    assert scraped[("vodpoller_events_duplicate_total", DEFAULT)] == 0
    assert scraped[("vodpoller_confirm_expired_total", DEFAULT)] == 0
    assert scraped[("vodpoller_pull_duration_seconds_count", DEFAULT)] >= 2  # the last one empty
    assert scraped[("vodpoller_batch_duration_seconds_count", DEFAULT)] >= 2  # 30 = 16 + 14
    assert scraped[("vodpoller_last_success_timestamp_seconds", DEFAULT)] > 0
    assert ("vodpoller_backlog_events", DEFAULT) in scraped
    assert scraped.get(("vodpoller_storage_errors_total", ())) == 0
    assert healthy.status == 200
    assert healthy.json()["status"] == "ok"
    assert healthy.json()["applications"]["default"]["last_success_seconds_ago"] < 2
    assert unhealthy.status == 503
    assert unhealthy.content_type == "application/json"
    assert unhealthy.json()["status"] == "unhealthy"
    assert unhealthy.json()["reason"].startswith("no successful poll within 2 s: default (")
    errors = {
        labels: value
        for (name, labels), value in after.items()
        if name == "vodpoller_api_errors_total" and ("action", "PullEvents") in labels
    }
    assert sum(errors.values()) > 0
    assert after[("vodpoller_events_pulled_total", DEFAULT)] == 30
    assert missing.status == 404


def test_a_metrics_port_already_taken_stops_run_with_a_clear_line(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = emulator_config(
            tmp_path / "config.toml",
            emulator_factory(),
            f"sqlite:///{tmp_path / 'events.db'}",
            metrics={"listen": f"127.0.0.1:{port}"},
        )
        done = vodpoller("run", "--config", str(config), cwd=tmp_path, timeout=30)

    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(
        f"vodpoller: metrics: cannot listen on 127.0.0.1:{port}: "
    )
