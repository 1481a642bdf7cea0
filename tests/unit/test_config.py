"""`config.py`: the TOML file and the environment -> one frozen, validated `Settings`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from vodpoller.config import (
    DEFAULT_CONFIG_PATH,
    Settings,
    VodSettings,
    config_path,
    load_settings,
    settings_from,
)
from vodpoller.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
SOURCE = "/etc/vodpoller/test.toml"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


@pytest.fixture
def write_config(tmp_path: Path) -> Any:
    """Write a document as TOML: dict values become sections, the rest top-level keys; `raw`
    replaces it all with the given text."""

    def write(document: dict[str, Any], *, raw: str | None = None, name: str = "c.toml") -> Path:
        lines = [f"{k} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
        for section, values in document.items():
            if isinstance(values, dict):
                lines.append(f"[{section}]")
                lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        path = tmp_path / name
        path.write_text(raw if raw is not None else "\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def refused(document: dict[str, Any], env: dict[str, str] | None = None) -> str:
    """The ConfigError message for a document that must be refused."""
    with pytest.raises(ConfigError) as caught:
        settings_from(document, env or {}, SOURCE)
    return str(caught.value)


def accepted(document: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    return settings_from(document, env or {}, SOURCE)


# -- the example and the defaults ------------------------------------------------------------


def test_the_example_file_parses_to_exactly_the_defaults() -> None:
    assert load_settings(EXAMPLE, env={}) == Settings()


def test_an_empty_file_gives_the_defaults(write_config: Any) -> None:
    assert load_settings(write_config({}), env={}) == Settings()


def test_the_defaults_are_those_spec_md_documents() -> None:
    settings = Settings()
    assert (settings.vod.endpoint, settings.vod.scheme, settings.vod.sub_app_ids) == (
        "vod.tencentcloudapi.com",
        "https",
        [],
    )
    assert settings.vod.request_timeout_seconds == 10
    assert (settings.poll.interval_seconds, settings.poll.concurrency) == (1.0, 32)
    assert settings.poll.rate_limit_per_second == 100
    assert settings.poll.confirm_budget_seconds == 30
    assert (settings.logging.format, settings.logging.level) == ("json", "info")
    assert settings.database.url.startswith("sqlite:////var/lib/vodpoller/")


def test_integers_are_accepted_where_a_number_of_seconds_is_expected() -> None:
    settings = accepted(
        {"vod": {"request_timeout_seconds": 10}, "poll": {"rate_limit_per_second": 100}}
    )
    assert settings.vod.request_timeout_seconds == 10.0
    assert settings.poll.rate_limit_per_second == 100.0


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.poll.concurrency = 8  # type: ignore[misc]  # mypy knows it too; so must pydantic


# -- unknown keys and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"verbose": True}, "verbose"),
        ({"vod": {"regoin": "ap-guangzhou"}}, "vod.regoin"),
        ({"poll": {"interval": 1.0}}, "poll.interval"),
        ({"database": {"uri": "sqlite://"}}, "database.uri"),
        ({"logging": {"colour": True}}, "logging.colour"),
    ],
)
def test_an_unknown_key_is_an_error_naming_the_key_and_the_file(
    write_config: Any, document: dict[str, Any], key: str
) -> None:
    path = write_config(document)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert f"unknown key `{key}`" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"poll": {"concurrency": "4"}}, "poll.concurrency"),
        ({"poll": {"concurrency": 4.0}}, "poll.concurrency"),
        ({"poll": {"concurrency": True}}, "poll.concurrency"),
        ({"poll": {"interval_seconds": "1"}}, "poll.interval_seconds"),
        ({"vod": {"request_timeout_seconds": "10"}}, "vod.request_timeout_seconds"),
        ({"vod": {"region": 5}}, "vod.region"),
        ({"vod": {"endpoint": ["a", "b"]}}, "vod.endpoint"),
        ({"vod": {"sub_app_ids": 1400000001}}, "vod.sub_app_ids"),
        ({"vod": {"sub_app_ids": ["1400000001"]}}, "vod.sub_app_ids.0"),
        ({"database": {"url": 5}}, "database.url"),
        ({"logging": {"format": "xml"}}, "logging.format"),
        ({"logging": {"level": "verbose"}}, "logging.level"),
        ({"vod": "ap-guangzhou"}, "vod"),
    ],
)
def test_a_wrong_type_or_value_is_an_error_naming_the_key_and_the_file(
    write_config: Any, document: dict[str, Any], key: str
) -> None:
    path = write_config(document)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert f"`{key}`" in str(caught.value)
    assert str(path) in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    message = refused({"poll": {"concurrency": "4", "typo": 1}, "vod": {"scheme": "ftp"}})
    assert "`poll.concurrency`" in message
    assert "unknown key `poll.typo`" in message
    assert "`vod.scheme`" in message


# -- the endpoint and its scheme -------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["vod.tencentcloudapi.com", "10.0.0.1:8750", "example.com", "127.0.0.1.example.com"],
)
def test_http_is_refused_for_a_host_that_is_not_loopback(endpoint: str) -> None:
    message = refused({"vod": {"endpoint": endpoint, "scheme": "http"}})
    assert "`vod`" in message
    assert "loopback" in message


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:8750", "127.0.0.1", "127.8.9.10:80", "[::1]:8750", "[::1]", "localhost:8750"],
)
def test_http_is_accepted_for_a_loopback_host(endpoint: str) -> None:
    settings = accepted({"vod": {"endpoint": endpoint, "scheme": "http"}})
    assert (settings.vod.endpoint, settings.vod.scheme) == (endpoint, "http")


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://vod.tencentcloudapi.com",
        "http://127.0.0.1:8750",
        "vod.tencentcloudapi.com/",
        "127.0.0.1:8750/api",
        "",
        "   ",
    ],
)
def test_an_endpoint_with_a_scheme_or_a_path_is_refused(endpoint: str) -> None:
    assert "`vod.endpoint`" in refused({"vod": {"endpoint": endpoint}})


def test_a_scheme_other_than_http_or_https_is_refused() -> None:
    assert "`vod.scheme`" in refused({"vod": {"scheme": "ftp"}})


# -- numbers and lists -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("vod", "request_timeout_seconds", 0),
        ("vod", "request_timeout_seconds", -1.0),
        ("poll", "interval_seconds", -0.5),
        ("poll", "concurrency", 0),
        ("poll", "concurrency", -4),
        ("poll", "concurrency", 65),
        ("poll", "rate_limit_per_second", 0),
        ("poll", "confirm_budget_seconds", 0),
        ("poll", "max_backoff_seconds", -1),
        ("poll", "interval_seconds", float("nan")),
    ],
)
def test_a_number_out_of_its_range_is_refused(section: str, key: str, value: float) -> None:
    assert f"`{section}.{key}`" in refused({section: {key: value}})


@pytest.mark.parametrize("seconds", [6.99, 5, 30.01, 60])
def test_a_request_timeout_without_room_for_the_long_poll_or_beyond_the_lease_is_refused(
    seconds: float, write_config: Any
) -> None:
    path = write_config({"vod": {"request_timeout_seconds": seconds}})
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: `vod.request_timeout_seconds`: must be from 7 to 30")
    assert "up to 5 s" in message


@pytest.mark.parametrize("seconds", [7, 7.0, 30])
def test_a_request_timeout_from_seven_to_thirty_seconds_is_accepted(seconds: float) -> None:
    settings = accepted({"vod": {"request_timeout_seconds": seconds}})
    assert settings.vod.request_timeout_seconds == seconds


def test_an_interval_of_zero_is_allowed() -> None:
    assert accepted({"poll": {"interval_seconds": 0}}).poll.interval_seconds == 0


@pytest.mark.parametrize("sub_app_id", [0, -1400000001])
def test_a_sub_app_id_that_is_not_positive_is_refused(sub_app_id: int) -> None:
    assert "`vod.sub_app_ids.0`" in refused({"vod": {"sub_app_ids": [sub_app_id]}})


def test_an_application_listed_twice_is_refused() -> None:
    message = refused({"vod": {"sub_app_ids": [1400000001, 1400000002, 1400000001]}})
    assert "`vod.sub_app_ids`" in message
    assert "twice" in message


def test_applications_are_the_listed_sub_app_ids_in_order() -> None:
    settings = accepted({"vod": {"sub_app_ids": [1400000002, 1400000001]}})
    assert settings.vod.applications == (1400000002, 1400000001)


def test_without_sub_app_ids_the_one_application_is_the_default_one() -> None:
    assert VodSettings().applications == (None,)
    assert accepted({"vod": {"sub_app_ids": []}}).vod.applications == (None,)


# -- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize("present", ["secret_id", "secret_key"])
def test_one_half_of_the_key_pair_is_refused(present: str) -> None:
    message = refused({"vod": {present: "AKIDexample0000"}})
    assert "secret_id and secret_key" in message
    assert SOURCE in message


def test_secrets_are_secret_str_and_stay_out_of_repr_and_str() -> None:
    settings = accepted(
        {
            "vod": {
                "secret_id": "AKIDsecretidvalue",
                "secret_key": "keyvalue-s3cr3t",
                "token": "tok3n",
            }
        }
    )

    assert isinstance(settings.vod.secret_key, SecretStr)
    assert settings.vod.secret_key.get_secret_value() == "keyvalue-s3cr3t"
    for text in (repr(settings), str(settings), repr(settings.vod), str(settings.vod)):
        for secret in ("AKIDsecretidvalue", "keyvalue-s3cr3t", "tok3n"):
            assert secret not in text


def test_the_environment_keys_win_over_the_files_keys() -> None:
    settings = accepted(
        {"vod": {"secret_id": "file-id-0000", "secret_key": "file-key-0000"}},
        {"TENCENTCLOUD_SECRET_ID": "env-id-0000", "TENCENTCLOUD_SECRET_KEY": "env-key-0000"},
    )
    assert settings.vod.secret_id is not None
    assert settings.vod.secret_key is not None
    assert settings.vod.secret_id.get_secret_value() == "env-id-0000"
    assert settings.vod.secret_key.get_secret_value() == "env-key-0000"


def test_environment_keys_are_used_when_the_file_has_none(write_config: Any) -> None:
    env = {
        "TENCENTCLOUD_SECRET_ID": "env-id-0000",
        "TENCENTCLOUD_SECRET_KEY": "env-key-0000",
        "TENCENTCLOUD_TOKEN": "env-token-0000",
    }
    settings = load_settings(write_config({"poll": {"concurrency": 2}}), env=env)
    assert settings.vod.token is not None
    assert settings.vod.token.get_secret_value() == "env-token-0000"
    assert settings.poll.concurrency == 2


def test_half_a_key_pair_in_the_environment_leaves_the_files_keys() -> None:
    settings = accepted(
        {"vod": {"secret_id": "file-id-0000", "secret_key": "file-key-0000"}},
        {"TENCENTCLOUD_SECRET_ID": "env-id-0000"},
    )
    assert settings.vod.secret_id is not None
    assert settings.vod.secret_id.get_secret_value() == "file-id-0000"


# -- the environment -------------------------------------------------------------------------


def test_the_database_url_from_the_environment_wins_over_the_file(write_config: Any) -> None:
    path = write_config({"database": {"url": "sqlite:////srv/file.db"}})
    settings = load_settings(path, env={"VODPOLLER_DATABASE_URL": "sqlite:////srv/env.db"})
    assert settings.database.url == "sqlite:////srv/env.db"


def test_the_database_url_from_the_environment_applies_without_a_database_section(
    write_config: Any,
) -> None:
    settings = load_settings(write_config({}), env={"VODPOLLER_DATABASE_URL": "sqlite://"})
    assert settings.database.url == "sqlite://"


def test_the_file_is_left_unchanged_by_the_environment() -> None:
    document: dict[str, Any] = {"database": {"url": "sqlite:////srv/file.db"}}
    accepted(document, {"VODPOLLER_DATABASE_URL": "sqlite:////srv/env.db"})
    assert document == {"database": {"url": "sqlite:////srv/file.db"}}


def test_vodpoller_config_chooses_the_file_when_no_path_is_given(write_config: Any) -> None:
    path = write_config({"poll": {"concurrency": 7}}, name="from-env.toml")
    assert load_settings(None, env={"VODPOLLER_CONFIG": str(path)}).poll.concurrency == 7


def test_an_explicit_path_wins_over_vodpoller_config(write_config: Any) -> None:
    chosen = write_config({"poll": {"concurrency": 3}}, name="chosen.toml")
    other = write_config({"poll": {"concurrency": 9}}, name="other.toml")
    assert load_settings(chosen, env={"VODPOLLER_CONFIG": str(other)}).poll.concurrency == 3


def test_without_path_or_variable_the_config_is_read_from_etc() -> None:
    assert config_path(None, {}) == DEFAULT_CONFIG_PATH == Path("/etc/vodpoller/config.toml")


# -- unreadable files ------------------------------------------------------------------------


def test_a_missing_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="no such configuration file") as caught:
        load_settings(path, env={})
    assert str(path) in str(caught.value)


def test_invalid_toml_is_an_error_naming_the_path(write_config: Any) -> None:
    path = write_config({}, raw="[vod\nendpoint = ")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(path, env={})
    assert str(path) in str(caught.value)


def test_a_directory_instead_of_a_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})
    assert str(tmp_path) in str(caught.value)


# -- found by review: poison values, secrets in objects, token pairing ----------------------


def test_environment_keys_do_not_inherit_the_files_token() -> None:
    settings = accepted(
        {"vod": {"secret_id": "file-id-0000", "secret_key": "file-key-0000", "token": "file-tok"}},
        {"TENCENTCLOUD_SECRET_ID": "env-id-0000", "TENCENTCLOUD_SECRET_KEY": "env-key-0000"},
    )
    assert settings.vod.token is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://u:pw@h:notaport/db", "not a database URL"),
        ("not a url at all", "not a database URL"),
        ("postgres://u@h/db", "unknown database kind 'postgres'"),
        ("mysql://u@h/db", "not installed"),
        ("postgresql+psycopg://u:S3cr@tPw@127.0.0.1/db", "%40"),
    ],
)
def test_an_unusable_database_url_is_refused_without_repeating_it(url: str, says: str) -> None:
    message = refused({"database": {"url": url}})

    assert "database.url" in message
    assert says in message
    assert "S3cr" not in message
    assert "pw@" not in message


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/vodpoller/events.db",
        "postgresql+psycopg://vodpoller:p%40ss@db.internal:5432/vod",
        "mysql+pymysql://root@127.0.0.1:3306/test",
    ],
)
def test_the_documented_database_urls_are_accepted(url: str) -> None:
    assert accepted({"database": {"url": url}}).database.url == url


# -- both callback modes ------------------------------------------------------------------------

PG = "postgresql+psycopg://vodpoller@db.internal/vod"
TOKEN_PATH = "/vod/callback/0123456789abcdef"


@pytest.mark.parametrize(
    ("database", "named"),
    [
        ({"url": PG, "notify_channel": "VodEvents"}, "lower-case identifier"),
        ({"url": PG, "notify_channel": "vod-events"}, "lower-case identifier"),
        ({"url": PG, "notify_channel": "1vod"}, "lower-case identifier"),
        ({"url": PG, "notify_channel": "v" * 64}, "lower-case identifier"),
        ({"url": "sqlite:////tmp/x.db", "notify_channel": "vod_events"}, "needs a PostgreSQL url"),
    ],
)
def test_a_notify_channel_postgresql_cannot_listen_to_as_written_is_refused(
    database: dict[str, str], named: str
) -> None:
    assert named in refused({"database": database})


def test_a_plain_lower_case_channel_of_63_characters_on_postgresql_is_accepted() -> None:
    channel = "v" + "_" * 61 + "9"
    assert (
        accepted({"database": {"url": PG, "notify_channel": channel}}).database.notify_channel
        == channel
    )


@pytest.mark.parametrize(
    ("receiver", "named"),
    [
        ({"listen": "8760", "path": "/vod/callback/0123456789abcde"}, "at least 16 characters"),
        ({"listen": "8760", "path": "vod/callback/0123456789abcdef"}, "must start with /"),
        ({"listen": "8760", "path": "/vod/call back/0123456789abcdef"}, "hold no spaces"),
        ({"listen": "8760", "path": ""}, "must start with /"),
        ({"listen": "nowhere:x", "path": TOKEN_PATH}, "must be host:port"),
        ({"listen": "8760", "path": TOKEN_PATH, "max_body_bytes": 1023}, "receiver.max_body_bytes"),
    ],
)
def test_a_receiver_without_a_secret_path_or_a_usable_address_is_refused(
    receiver: dict[str, Any], named: str
) -> None:
    assert named in refused({"receiver": receiver})


def test_a_receiver_is_off_without_listen_and_on_loopback_by_default() -> None:
    assert accepted({}).receiver.address is None
    assert accepted({"receiver": {"path": "anything"}}).receiver.address is None
    on = accepted({"receiver": {"listen": "8760", "path": TOKEN_PATH + "/"}}).receiver
    assert on.address == ("127.0.0.1", 8760)
    assert on.max_body_bytes == 1_048_576


@pytest.mark.parametrize(
    ("forward", "named"),
    [
        ({"url": "ftp://app.internal/vod"}, "http:// or https:// URL"),
        ({"url": "https://"}, "http:// or https:// URL"),
        ({"url": "https://app.internal/vod", "since": "2026-12-01"}, "needs a time zone"),
        ({"url": "https://app.internal/vod", "since": "yesterday"}, "RFC 3339"),
        ({"url": "https://app.internal/vod", "max_in_flight": 0}, "forward.max_in_flight"),
        ({"url": "https://app.internal/vod", "timeout_seconds": 0}, "forward.timeout_seconds"),
    ],
)
def test_a_forward_url_or_moment_that_cannot_be_used_is_refused(
    forward: dict[str, Any], named: str
) -> None:
    assert named in refused({"forward": forward})


def test_forwarding_is_off_by_default_and_since_is_a_moment_in_utc() -> None:
    assert accepted({}).forward.url == ""
    forward = accepted(
        {"forward": {"url": "https://app.internal/vod", "since": "2026-12-01T08:00:00+08:00"}}
    ).forward
    assert forward.since_moment is not None
    assert forward.since_moment.isoformat() == "2026-12-01T08:00:00+08:00"
    assert accepted({}).forward.since_moment is None
