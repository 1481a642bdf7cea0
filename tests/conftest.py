"""Fixtures shared by every ring of tests: the emulator on a free port and SDK clients for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717.vod_client import VodClient

from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import Emulator, EmulatorOptions

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
