"""Secrets as files in `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`): read when
present, environment variables win over them, they win over the TOML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vodpoller.config import CREDENTIAL_KEYS, Settings, settings_from
from vodpoller.errors import ConfigError

SOURCE = "/etc/vodpoller/config.toml"
TOML: dict[str, Any] = {
    "vod": {"secret_id": "AKIDfile", "secret_key": "file-key", "token": "file-token"},
    "database": {"url": "sqlite:////var/lib/vodpoller/file.db"},
}


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    return directory


def _load(directory: Path, document: dict[str, Any] | None = None, **env: str) -> Settings:
    return settings_from(
        TOML if document is None else document,
        {"CREDENTIALS_DIRECTORY": str(directory), **env},
        SOURCE,
    )


def _secrets(settings: Settings) -> tuple[str | None, ...]:
    vod = settings.vod
    return tuple(
        None if value is None else value.get_secret_value()
        for value in (vod.secret_id, vod.secret_key, vod.token)
    )


def test_credential_files_win_over_the_toml(credentials: Path) -> None:
    (credentials / "secret_id").write_text("AKIDcred\n")
    (credentials / "secret_key").write_text("cred-key\n")
    (credentials / "database_url").write_text("sqlite:////srv/cred.db\n")

    settings = _load(credentials)

    # The file's token belonged to the file's key pair: it is not paired with another one.
    assert _secrets(settings) == ("AKIDcred", "cred-key", None)
    assert settings.database.url == "sqlite:////srv/cred.db"


def test_a_token_file_goes_with_the_key_pair(credentials: Path) -> None:
    for name, value in [("secret_id", "AKIDcred"), ("secret_key", "k"), ("token", "t")]:
        (credentials / name).write_text(value)

    assert _secrets(_load(credentials, {})) == ("AKIDcred", "k", "t")


def test_environment_variables_win_over_credential_files(credentials: Path) -> None:
    (credentials / "secret_id").write_text("AKIDcred")
    (credentials / "secret_key").write_text("cred-key")
    (credentials / "database_url").write_text("sqlite:////srv/cred.db")

    settings = _load(
        credentials,
        TENCENTCLOUD_SECRET_ID="AKIDenv",
        TENCENTCLOUD_SECRET_KEY="env-key",
        VODPOLLER_DATABASE_URL="sqlite:////srv/env.db",
    )

    assert _secrets(settings) == ("AKIDenv", "env-key", None)
    assert settings.database.url == "sqlite:////srv/env.db"


def test_missing_files_leave_the_toml_in_place(credentials: Path) -> None:
    (credentials / "database_url").write_text("sqlite:////srv/cred.db")

    settings = _load(credentials)

    assert _secrets(settings) == ("AKIDfile", "file-key", "file-token")
    assert settings.database.url == "sqlite:////srv/cred.db"


def test_no_credentials_directory_means_the_toml_alone() -> None:
    settings = settings_from(TOML, {}, SOURCE)

    assert _secrets(settings) == ("AKIDfile", "file-key", "file-token")


@pytest.mark.parametrize(
    ("present", "missing"),
    [(["secret_id"], "secret_key"), (["secret_key"], "secret_id"), (["token"], "secret_id")],
)
def test_half_a_key_pair_is_refused(credentials: Path, present: list[str], missing: str) -> None:
    for name in present:
        (credentials / name).write_text("value")

    with pytest.raises(ConfigError, match=f"without .*{missing}"):
        _load(credentials)


def test_the_half_pair_message_names_only_the_key_files(credentials: Path) -> None:
    (credentials / "secret_id").write_text("AKIDcred")
    (credentials / "database_url").write_text("sqlite:////srv/cred.db")

    with pytest.raises(ConfigError) as caught:
        _load(credentials)

    assert str(caught.value) == (
        f"credentials in {credentials}: secret_id without secret_key: "
        "a key pair (and its token) go together"
    )


def test_an_empty_credential_file_is_refused_by_name(credentials: Path) -> None:
    (credentials / "database_url").write_text("\n")

    with pytest.raises(ConfigError, match=r"credentials/database_url: empty"):
        _load(credentials)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_credential_file_is_refused_by_name(credentials: Path) -> None:
    secret = credentials / "secret_key"
    secret.write_text("cred-key-that-stays-private")
    (credentials / "secret_id").write_text("AKIDcred")
    secret.chmod(0)

    with pytest.raises(ConfigError) as caught:
        _load(credentials)

    assert str(caught.value) == f"credential {secret}: cannot read: Permission denied"


def test_a_credential_that_is_a_directory_is_refused_by_name(credentials: Path) -> None:
    (credentials / "token").mkdir()

    with pytest.raises(ConfigError, match=r"credential .*/token: cannot read"):
        _load(credentials)


def test_a_credential_that_is_not_text_is_refused_without_showing_it(credentials: Path) -> None:
    (credentials / "database_url").write_bytes(b"\xff\xfe secret")

    with pytest.raises(ConfigError) as caught:
        _load(credentials)

    assert str(caught.value).endswith("database_url: not UTF-8 text")


def test_a_credentials_directory_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        _load(tmp_path / "nowhere")


def test_a_bad_database_url_from_a_credential_is_a_config_error_without_the_url(
    credentials: Path,
) -> None:
    (credentials / "database_url").write_text("postgresql://user:hunter2@@host/db")

    with pytest.raises(ConfigError) as caught:
        _load(credentials)

    assert "database.url" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_credential_names_are_the_documented_four() -> None:
    assert sorted(CREDENTIAL_KEYS) == ["database_url", "secret_id", "secret_key", "token"]
