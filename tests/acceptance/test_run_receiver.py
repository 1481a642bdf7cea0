"""A real `vodpoller run` with `[receiver]`: VOD's normal callback (the emulator's push) and
its reliable callback (the daemon's pulls) of one event end in one row, a wrong path gets 403,
and the secret token in the path never reaches the log."""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.daemon_process import VodpollerProcess, wait_until
from tests.helpers import emulator_config
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.store import EventStore

pytestmark = pytest.mark.slow

TOKEN = "f00dfacecafe0123456789abcdefbeef"
PATH = f"/vod/callback/{TOKEN}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
            return int(answer.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def test_run_stores_a_pushed_and_pulled_event_once_and_never_logs_the_token(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = emulator_factory()
    admin = EmulatorAdmin(emulator.url)
    port = _free_port()
    database = f"sqlite:///{tmp_path / 'events.db'}"
    config = emulator_config(
        tmp_path / "config.toml",
        emulator,
        database,
        receiver={"listen": f"127.0.0.1:{port}", "path": PATH},
    )
    entry = {"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "5285890784246869931"}}
    base = f"http://127.0.0.1:{port}"
    with VodpollerProcess("run", config, tmp_path) as daemon:
        listening = daemon.wait_for_line("receiver listening")
        pushed = admin.push(base + PATH, events=[entry])
        admin.enqueue([entry])  # the same event, now by reliable callback
        wait_until(lambda: admin.stats()["Confirmed"] == 1, 30, "the pulled copy confirmed")
        wrong = _post(f"{base}/vod/callback/not-the-token-0123456789", json.dumps(entry).encode())
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.text()[-3000:]

    assert pushed["Results"] == [{"Status": 200, "Attempts": 1}]
    assert wrong == 403
    with EventStore.connect(database, read_only=True) as store:
        (row,) = store.rows()
    assert (row["deliveries"], row["pushed_deliveries"], row["file_id"]) == (
        2,
        1,
        "5285890784246869931",
    )
    assert row["confirmed_at"] is not None
    assert listening["url"] == f"{base}/vod/callback/<token>"
    assert [line["status"] for line in daemon.lines_of("callback refused")] == [403]
    assert TOKEN not in daemon.text()
    assert TOKEN not in daemon.stdout()
