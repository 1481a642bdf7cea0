"""`vodpoller emulator` as a user runs it: a real process, the real SDK, and signals."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717 import models
from tencentcloud.vod.v20180717.vod_client import VodClient

from vodpoller.cli import build_parser
from vodpoller.emulator.samples import load_samples
from vodpoller.emulator.server import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY

PROJECT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 20


def run_emulator(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vodpoller", "emulator", *arguments],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def emulator_process() -> Iterator[subprocess.Popen[str]]:
    process = run_emulator("--port", "0", "--samples", "--long-poll-seconds", "0.2")
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=10)


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], STARTUP_SECONDS)
    assert ready, "the emulator printed nothing"
    return process.stdout.readline()


def sdk_client(endpoint: str) -> Any:
    profile = ClientProfile(
        httpProfile=HttpProfile(endpoint=endpoint, protocol="http", reqTimeout=10)
    )
    return VodClient(credential.Credential(DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY), "", profile)


def drain(vod: VodClient) -> list[str]:
    """The loop a user writes by hand: pull, confirm, until the queue answers it is empty."""
    types: list[str] = []
    while True:
        try:
            events = vod.PullEvents(models.PullEventsRequest()).EventSet
        except TencentCloudSDKException as error:
            if error.code == "ResourceNotFound":
                return types
            raise
        types += [event.EventType for event in events]
        request = models.ConfirmEventsRequest()
        request.EventHandles = [event.EventHandle for event in events]
        vod.ConfirmEvents(request)


def test_emulator_serves_the_samples_and_stops_on_sigterm(
    emulator_process: subprocess.Popen[str],
) -> None:
    line = first_line(emulator_process)
    found = re.search(r"http://(127\.0\.0\.1:\d+) ", line)
    assert found, line
    # The built-in test key is public, and the user needs it to sign.
    assert f"SecretKey {DEFAULT_SECRET_KEY}" in line
    types = drain(sdk_client(found.group(1)))
    assert sorted(types) == sorted(sample["EventType"] for sample in load_samples())

    emulator_process.send_signal(signal.SIGTERM)
    assert emulator_process.wait(timeout=5) == 0


def test_port_in_use_exits_2_with_a_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run_emulator("--port", str(port))
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert str(port) in stderr
    assert "listening" not in stdout


def test_secret_key_given_on_the_command_line_is_never_printed() -> None:
    secret = "my-own-secret-key-0123456789"
    process = run_emulator("--port", "0", "--secret-key", secret)
    try:
        line = first_line(process)
        assert re.search(r"http://(127\.0\.0\.1:\d+) ", line), line
        assert "SecretKey (as given)" in line
        assert secret not in line
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert secret not in stdout + stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-events", "0"),
        ("--max-events", "17"),
        ("--max-events", "many"),
        ("--lease-seconds", "0"),
        ("--lease-seconds", "-1"),
        ("--lease-seconds", "nan"),
        ("--long-poll-seconds", "-0.5"),
        ("--long-poll-seconds", "inf"),
        ("--rate-limit", "-1"),
        ("--latency-ms", "-1"),
        ("--port", "65536"),
    ],
)
def test_option_out_of_range_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["emulator", option, value])
    assert exited.value.code == 2
    assert option in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-events", "1"),
        ("--max-events", "16"),
        ("--long-poll-seconds", "0"),
        ("--rate-limit", "0"),
        ("--lease-seconds", "0.5"),
    ],
)
def test_option_at_its_limit_is_accepted(option: str, value: str) -> None:
    args = build_parser().parse_args(["emulator", option, value])
    assert getattr(args, option[2:].replace("-", "_")) == float(value)


def test_max_events_above_16_exits_2_before_listening() -> None:
    process = run_emulator("--port", "0", "--max-events", "17")
    try:
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 2
    assert "--max-events" in stderr
    assert "16" in stderr
    assert "listening" not in stdout
