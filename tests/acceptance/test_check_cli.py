"""`vodpoller check` in a subprocess: where the credentials come from, and the exit status when
they are missing (the same as `once`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_cli import vodpoller
from tests.conftest import EmulatorFactory
from tests.helpers import write_config
from vodpoller.emulator.server import Emulator

SECRET_KEY = "check-must-never-print-this-key"
SECRET_ID = "AKIDcheckSecretId0042"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home of its own: no ~/.tencentcloud/credentials but the test's."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    return emulator_factory(secret_id=SECRET_ID, secret_key=SECRET_KEY)


def _config(tmp_path: Path, emulator: Emulator, **vod: Any) -> Path:
    return write_config(
        tmp_path / "config.toml",
        {
            "vod": {"endpoint": emulator.endpoint, "scheme": "http", **vod},
            "database": {"url": f"sqlite:///{tmp_path / 'events.db'}"},
        },
    )


def _profile(home: Path, secret_id: str, secret_key: str) -> Path:
    path = home / ".tencentcloud" / "credentials"
    path.parent.mkdir()
    path.write_text(f"[default]\nsecret_id = {secret_id}\nsecret_key = {secret_key}\n")
    return path


def _credentials_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if " credentials: " in line)


def test_check_names_the_environment_and_says_it_wins_over_the_file(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    config = _config(tmp_path, emulator, secret_id="AKIDfileKeyNotUsed0001", secret_key="x")
    profile = _profile(home, "AKIDprofileNotUsed0002", "y")

    done = vodpoller(
        "check",
        "--config",
        str(config),
        cwd=tmp_path,
        HOME=str(home),
        TENCENTCLOUD_SECRET_ID=SECRET_ID,
        TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    line = _credentials_line(done.stdout)
    assert line.startswith(
        "ok    credentials: environment (TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY), "
        "SecretId ending 0042"
    )
    assert f"vod.secret_id in {config} is not used: the environment wins" in line
    assert f"{profile} is not used: the environment wins" in line
    assert SECRET_KEY not in done.stdout + done.stderr


def test_check_names_the_configuration_file(tmp_path: Path, home: Path, emulator: Emulator) -> None:
    config = _config(tmp_path, emulator, secret_id=SECRET_ID, secret_key=SECRET_KEY)

    done = vodpoller(
        "check", "--config", str(config), cwd=tmp_path, HOME=str(home), TENCENTCLOUD_SECRET_ID="x"
    )

    assert done.returncode == 0, done.stdout + done.stderr
    line = _credentials_line(done.stdout)
    assert line == (
        f"ok    credentials: configuration file {config} (vod.secret_id, vod.secret_key), "
        "SecretId ending 0042; TENCENTCLOUD_SECRET_ID is ignored without TENCENTCLOUD_SECRET_KEY"
    )


def test_check_names_the_credentials_directory_and_says_it_wins_over_the_file(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    config = _config(tmp_path, emulator, secret_id="AKIDfileKeyNotUsed0001", secret_key="x")
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "secret_id").write_text(SECRET_ID + "\n")
    (directory / "secret_key").write_text(SECRET_KEY + "\n")

    done = vodpoller(
        "check",
        "--config",
        str(config),
        cwd=tmp_path,
        HOME=str(home),
        CREDENTIALS_DIRECTORY=str(directory),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert _credentials_line(done.stdout) == (
        f"ok    credentials: credentials directory {directory} (secret_id, secret_key), "
        f"SecretId ending 0042; vod.secret_id in {config} is not used: the credentials "
        "directory wins"
    )
    assert SECRET_KEY not in done.stdout + done.stderr


def test_check_names_the_profile_file(tmp_path: Path, home: Path, emulator: Emulator) -> None:
    config = _config(tmp_path, emulator)
    profile = _profile(home, SECRET_ID, SECRET_KEY)

    done = vodpoller("check", "--config", str(config), cwd=tmp_path, HOME=str(home))

    assert done.returncode == 0, done.stdout + done.stderr
    assert _credentials_line(done.stdout) == (
        f"ok    credentials: profile file {profile} ([default] secret_id, secret_key), "
        "SecretId ending 0042"
    )
    assert "about 0 event(s) waiting" in done.stdout  # the emulator took the profile's key
    assert SECRET_KEY not in done.stdout + done.stderr


def test_missing_credentials_exit_2_from_check_as_from_once(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    config = _config(tmp_path, emulator)

    check = vodpoller("check", "--config", str(config), cwd=tmp_path, HOME=str(home))
    once = vodpoller("once", "--config", str(config), cwd=tmp_path, HOME=str(home))

    assert (check.returncode, once.returncode) == (2, 2)
    assert "FAIL  credentials: no Tencent Cloud credentials found" in check.stdout
    assert "no Tencent Cloud credentials found" in once.stderr


def test_check_exits_1_when_only_the_database_fails(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        {
            "vod": {
                "endpoint": emulator.endpoint,
                "scheme": "http",
                "secret_id": SECRET_ID,
                "secret_key": SECRET_KEY,
            },
            "database": {"url": "postgresql+psycopg://nobody@127.0.0.1:1/nothing"},
        },
    )

    done = vodpoller("check", "--config", str(config), cwd=tmp_path, HOME=str(home))

    assert done.returncode == 1
    assert "FAIL  database" in done.stdout
