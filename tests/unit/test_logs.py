"""`logs.py`: structlog set-up, stdlib logging through the same formatter, and redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
import structlog

from vodpoller import logs
from vodpoller.config import DatabaseSettings
from vodpoller.logs import REDACTED, SecretRedactor

SECRET = "Zq8sKEYsecretVALUE42"
SECRET_ID = "AKIDexampleSecretId0001"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every test leaves logging as it found it: root handlers and level, the SDK's and
    APScheduler's levels, structlog's configuration and the registered secrets."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {
        name: logging.getLogger(name).level
        for name in ("tencentcloud_sdk_common", "apscheduler", "alembic")
    }
    secrets = list(logs._redactor.secrets)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in named.items():
        logging.getLogger(name).setLevel(saved)
    logs._redactor.secrets = secrets
    structlog.reset_defaults()


def redact(**event: Any) -> dict[str, Any]:
    """Run one event dict through a redactor that knows SECRET and SECRET_ID."""
    return dict(SecretRedactor([SECRET, SECRET_ID])(None, "info", dict(event)))


def configured(level: str = "info", fmt: str = "json") -> io.StringIO:
    stream = io.StringIO()
    logs.configure(level, fmt, stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- the redactor on its own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "path"),
    [
        ({"value": SECRET}, ["value"]),
        ({"nested": {"deeper": {"value": SECRET}}}, ["nested", "deeper", "value"]),
        ({"items": ["a", SECRET, "b"]}, ["items", 1]),
        ({"pair": ("x", SECRET)}, ["pair", 1]),
        ({"mixed": [{"value": SECRET}]}, ["mixed", 0, "value"]),
    ],
    ids=["top-level", "nested-dict", "list", "tuple", "dict-in-list"],
)
def test_a_registered_secret_is_replaced_wherever_it_sits(
    event: dict[str, Any], path: list[Any]
) -> None:
    value: Any = redact(**event)
    for step in path:
        value = value[step]
    assert value == REDACTED


def test_a_secret_inside_a_longer_string_is_cut_out_and_the_rest_kept() -> None:
    out = redact(event=f"request signed with {SECRET} failed; id {SECRET_ID}.")
    assert out["event"] == f"request signed with {REDACTED} failed; id {REDACTED}."


def test_a_secret_in_an_exception_message_is_redacted() -> None:
    out = redact(error=ValueError(f"bad key {SECRET}"))
    assert out["error"] == f"bad key {REDACTED}"


def test_other_values_are_left_alone() -> None:
    event = {"event": "batch", "pulled": 16, "ratio": 0.5, "ok": True, "none": None, "app": "x"}
    assert redact(**event) == event


@pytest.mark.parametrize(
    "key",
    [
        "secret_key",
        "secret_id",
        "SecretKey",
        "token",
        "access_token",
        "Authorization",
        "password",
        "db_passwd",
        "credential",
    ],
)
def test_a_value_under_a_secret_looking_key_is_redacted_whatever_it_is(key: str) -> None:
    out = redact(**{key: "not-registered-anywhere", "nested": {key: 12345}})
    assert out[key] == REDACTED
    assert out["nested"][key] == REDACTED


def test_an_empty_value_under_a_secret_looking_key_stays_visibly_empty() -> None:
    assert redact(token="", password=None) == {"token": "", "password": None}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "mysql+pymysql://root:p%40ss@db.internal:3306/vod",
            "mysql+pymysql://root:***@db.internal:3306/vod",
        ),
        ("http://proxyuser:hunter2@proxy:3128", "http://proxyuser:***@proxy:3128"),
        ("sqlite:////var/lib/vodpoller/events.db", "sqlite:////var/lib/vodpoller/events.db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_a_password_in_a_url_is_hidden_and_the_rest_of_the_url_kept(url: str, shown: str) -> None:
    assert redact(event=f"connecting to {url} now")["event"] == f"connecting to {shown} now"


def test_a_tc3_authorization_header_is_redacted_inside_a_message() -> None:
    header = (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID[:-1]}X/2025-06-12/vod/tc3_request, "
        "SignedHeaders=content-type;host, Signature=0f5c" + "a" * 60
    )
    out = redact(event=f"request headers: {{'Authorization': '{header}', 'Host': 'vod'}}")
    assert "Signature" not in out["event"]
    assert "SignedHeaders" not in out["event"]
    assert SECRET_ID[:-1] not in out["event"]
    assert "'Host': 'vod'" in out["event"]
    assert redact(authorization_header=header)["authorization_header"] == REDACTED
    assert redact(event=header)["event"] == f"TC3-HMAC-SHA256 Credential={REDACTED}"


def test_short_secrets_are_not_registered() -> None:
    # Redacting "ab" everywhere would mangle every line and hide nothing worth hiding.
    assert SecretRedactor(["ab", "", "abcd"]).secrets == ["abcd"]


def test_add_secrets_extends_what_is_redacted_from_then_on() -> None:
    stream = configured()
    log = logs.get_logger("test")
    log.info("before", value="later-secret-value")
    logs.add_secrets(["later-secret-value"])
    log.info("after", value="later-secret-value")

    before, after = json_lines(stream)
    assert before["value"] == "later-secret-value"
    assert after["value"] == REDACTED


# -- rendered output -------------------------------------------------------------------------


def test_json_format_writes_one_object_per_line_with_event_level_and_timestamp() -> None:
    stream = configured()
    log = logs.get_logger("vodpoller.poller")

    log.info("batch", sub_app_id=1400000001, pulled=16)
    log.warning("confirm budget spent", handles=3)

    first, second = json_lines(stream)
    assert first["event"] == "batch"
    assert (first["level"], second["level"]) == ("info", "warning")
    assert first["pulled"] == 16
    assert first["logger"] == "vodpoller.poller"
    assert first["timestamp"].endswith("Z")


def test_console_format_writes_readable_lines() -> None:
    stream = configured(fmt="console")
    logs.get_logger("vodpoller.poller").info("batch", pulled=16)

    (line,) = stream.getvalue().splitlines()
    assert "batch" in line
    assert "pulled=16" in line
    assert "info" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_lines_below_the_level_are_dropped() -> None:
    stream = configured(level="warning")
    log = logs.get_logger("test")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in json_lines(stream)] == ["loud"]


def test_a_registered_secret_never_reaches_the_rendered_line() -> None:
    logs.add_secrets([SECRET])
    stream = configured(level="debug")
    log = logs.get_logger("test")

    log.info("call", params={"SecretKey": "x", "Note": f"k={SECRET}"}, items=[SECRET])
    try:
        raise RuntimeError(f"signing with {SECRET} failed")
    except RuntimeError:
        log.exception("failed")

    output = stream.getvalue()
    assert SECRET not in output
    assert output.count(REDACTED) >= 4
    assert "RuntimeError" in json_lines(stream)[1]["exception"]


def test_stdlib_records_use_the_same_json_formatter() -> None:
    stream = configured()

    logging.getLogger("alembic").warning("upgrade %s -> %s", "base", "0001")

    (line,) = json_lines(stream)
    assert line["event"] == "upgrade base -> 0001"
    assert (line["level"], line["logger"]) == ("warning", "alembic")
    assert "timestamp" in line


def test_stdlib_records_are_redacted_too() -> None:
    logs.add_secrets([SECRET])
    stream = configured()

    logging.getLogger("alembic").warning(
        "connecting to postgresql+psycopg://u:pw@h/db with %s", SECRET
    )
    try:
        raise OSError(f"refused {SECRET}")
    except OSError:
        logging.getLogger("sqlalchemy.pool").exception("pool error")

    output = stream.getvalue()
    assert SECRET not in output
    assert ":pw@" not in output
    first, second = json_lines(stream)
    assert first["event"] == f"connecting to postgresql+psycopg://u:{REDACTED}@h/db with {REDACTED}"
    assert "OSError" in second["exception"]


def test_the_sdk_logger_is_not_enabled_for_debug_even_at_debug_level() -> None:
    stream = configured(level="debug")
    sdk = logging.getLogger("tencentcloud_sdk_common")

    sdk.debug("GetResponse: Authorization: TC3-HMAC-SHA256 Credential=AKID/x")

    assert logging.getLogger().isEnabledFor(logging.DEBUG)
    assert not sdk.isEnabledFor(logging.DEBUG)
    assert stream.getvalue() == ""


def test_configure_replaces_the_root_handlers_instead_of_adding_more() -> None:
    configured()
    stream = configured()
    logs.get_logger("test").info("once")
    assert len(logging.getLogger().handlers) == 1
    assert len(json_lines(stream)) == 1


# -- found by review: poison values, secrets in objects, token pairing ----------------------


@pytest.mark.parametrize(
    "value",
    [
        DatabaseSettings(url="postgresql+psycopg://u:pw-in-a-model@h/db"),
        SECRET.encode(),
        frozenset({SECRET}),
        MappingProxyType({"note": SECRET}),
    ],
    ids=["pydantic-model", "bytes", "frozenset", "mappingproxy"],
)
def test_a_secret_inside_any_logged_object_stays_out_of_the_line(value: object) -> None:
    logs.add_secrets([SECRET])
    stream = configured()

    logs.get_logger("test").info("object", value=value)

    assert SECRET not in stream.getvalue()
    assert "pw-in-a-model" not in stream.getvalue()
