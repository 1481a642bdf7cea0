"""Fixtures shared by every ring of tests: the emulator on a free port and SDK clients for it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717.vod_client import VodClient

from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import Emulator, EmulatorOptions

pytest_plugins = ["tests.databases"]

EmulatorFactory = Callable[..., Emulator]


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK honours HTTP(S)_PROXY; the emulator is always on loopback."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    """Start emulators on free ports with the given options; all are stopped after the test."""
    started: list[Emulator] = []

    def start(**options: Any) -> Emulator:
        options.setdefault("port", 0)
        options.setdefault("long_poll_seconds", 0.5)
        emulator = Emulator(EmulatorOptions(**options)).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.close()


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    return emulator_factory()


@pytest.fixture
def admin(emulator: Emulator) -> EmulatorAdmin:
    return EmulatorAdmin(emulator.url)


def make_vod_client(
    emulator: Emulator,
    *,
    secret_id: str | None = None,
    secret_key: str | None = None,
    timeout: int = 10,
) -> VodClient:
    """The real SDK client, pointed at the emulator over plain HTTP, with no retryer."""
    cred = credential.Credential(
        secret_id or emulator.options.secret_id, secret_key or emulator.options.secret_key
    )
    profile = ClientProfile(
        httpProfile=HttpProfile(endpoint=emulator.endpoint, protocol="http", reqTimeout=timeout)
    )
    return VodClient(cred, "", profile)


@pytest.fixture
def vod(emulator: Emulator) -> VodClient:
    return make_vod_client(emulator)


def tc3_headers(
    secret_id: str,
    secret_key: str,
    *,
    host: str,
    body: bytes,
    timestamp: int,
    action: str = "PullEvents",
    version: str = "2018-07-17",
    signed_headers: Sequence[str] = ("content-type", "host"),
    lower_values: bool = False,
    date: str | None = None,
    service: str = "vod",
) -> dict[str, str]:
    """Headers of a TC3-HMAC-SHA256 `POST /`, signed per PROTOCOL.md §1 with hashlib and hmac
    alone, so that neither the SDK's signer nor the emulator's verifier checks itself."""
    date = date or datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    headers = {
        "Content-Type": "application/json",
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Version": version,
    }
    by_name = {name.lower(): value for name, value in headers.items()}
    names = sorted(signed_headers)
    block = "".join(
        f"{name}:{by_name[name].lower() if lower_values else by_name[name]}\n" for name in names
    )
    canonical = "\n".join(
        ["POST", "/", "", block, ";".join(names), hashlib.sha256(body).hexdigest()]
    )
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("TC3" + secret_key).encode()
    for part in (date, service, "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers
