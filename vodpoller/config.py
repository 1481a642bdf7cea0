"""Settings: the TOML file plus environment overrides -> one frozen, validated `Settings`."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from vodpoller.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/vodpoller/config.toml")
DEFAULT_DATABASE_URL = "sqlite:////var/lib/vodpoller/events.db"
# PullEvents holds a request up to 5 s when no event waits; a request needs that and some
# time to connect and to read the answer. A pulled event's handle expires 30 s after the pull.
LONG_POLL_SECONDS = 5.0
MIN_TOKEN_CHARS = 16  # the receiver's path ends in a secret of at least this many characters
MIN_REQUEST_TIMEOUT_SECONDS = 7.0
MAX_REQUEST_TIMEOUT_SECONDS = 30.0
# host[:port]: a DNS name, an IPv4 address, or an IPv6 address in brackets.
# A PostgreSQL channel name that needs no quoting: lower case, since an unquoted
# `LISTEN VodEvents` listens on vodevents, and pg_notify('VodEvents') would reach nobody.
_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_ENDPOINT = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_host(endpoint: str) -> str:
    """The host of `host[:port]` (IPv6 in brackets)."""
    if endpoint.startswith("["):
        return endpoint[: endpoint.index("]") + 1]
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


class VodSettings(_Section):
    region: str = ""
    endpoint: str = "vod.tencentcloudapi.com"
    scheme: Literal["https", "http"] = "https"
    sub_app_ids: list[Annotated[int, Field(gt=0, lt=2**63)]] = Field(default_factory=list)
    request_timeout_seconds: float = 10.0
    secret_id: SecretStr | None = None
    secret_key: SecretStr | None = None
    token: SecretStr | None = None

    @field_validator("endpoint")
    @classmethod
    def _bare_endpoint(cls, value: str) -> str:
        if not _ENDPOINT.fullmatch(value.strip()):
            raise ValueError("must be host[:port], without scheme or path (use `scheme`)")
        return value.strip()

    @field_validator("request_timeout_seconds")
    @classmethod
    def _room_for_the_long_poll(cls, value: float) -> float:
        if not MIN_REQUEST_TIMEOUT_SECONDS <= value <= MAX_REQUEST_TIMEOUT_SECONDS:
            raise ValueError(
                f"must be from {MIN_REQUEST_TIMEOUT_SECONDS:g} to {MAX_REQUEST_TIMEOUT_SECONDS:g} "
                f"seconds, not {value:g}: PullEvents holds a request up to "
                f"{LONG_POLL_SECONDS:g} s before it answers, and the handles it returns expire "
                f"{MAX_REQUEST_TIMEOUT_SECONDS:g} s after it was sent"
            )
        return value

    @field_validator("sub_app_ids")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("lists an application twice")
        return value

    @model_validator(mode="after")
    def _http_only_on_loopback(self) -> VodSettings:
        if self.scheme == "http" and not is_loopback(endpoint_host(self.endpoint)):
            raise ValueError(
                f'scheme "http" is accepted only for loopback endpoints, not {self.endpoint}'
            )
        if (self.secret_id is None) != (self.secret_key is None):
            raise ValueError("secret_id and secret_key go together: set both or neither")
        return self

    @property
    def applications(self) -> tuple[int | None, ...]:
        """The applications to drain; `None` is the default application (no SubAppId sent)."""
        return tuple(self.sub_app_ids) or (None,)


class PollSettings(_Section):
    interval_seconds: float = Field(1.0, ge=0)
    # The most pullers per application; pacing.PullerLimit finds the level below it.
    concurrency: int = Field(32, ge=1, le=64)
    rate_limit_per_second: float = Field(100.0, gt=0)
    # VOD refuses a handle 30 s after the pull answered: a longer budget would only waste calls.
    confirm_budget_seconds: float = Field(30.0, gt=0, le=30)
    max_backoff_seconds: float = Field(60.0, gt=0)
    # `run` writes a backlog from a child process on a machine of two cores or more, so that
    # storing and pulling do not share one interpreter lock (storeprocess.OnDemand).
    store_in_child: bool = True


class DatabaseSettings(_Section):
    url: str = Field(DEFAULT_DATABASE_URL, repr=False)  # may hold a password
    # PostgreSQL only: after each batch commits, NOTIFY this channel with the new rows.
    notify_channel: str = ""

    @field_validator("notify_channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if value and not _CHANNEL.fullmatch(value):
            raise ValueError(
                "must be a plain lower-case identifier (a-z, digits, _; at most 63 "
                f"characters, not starting with a digit), not {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _notify_needs_postgres(self) -> DatabaseSettings:
        if self.notify_channel and make_url(self.url).get_backend_name() != "postgresql":
            raise ValueError("notify_channel needs a PostgreSQL url (NOTIFY is PostgreSQL's)")
        return self

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str) -> str:
        # Messages never repeat the URL: it may carry a password.
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a database URL (e.g. postgresql+psycopg://user:password@host:5432/db)"
            ) from None
        if url.host and "@" in url.host:
            raise ValueError("an @ in the password must be written %40 (percent-encoded)")
        try:
            url.get_dialect().import_dbapi()
        except (ArgumentError, ValueError):
            raise ValueError(
                f"unknown database kind {url.drivername!r}: use sqlite, postgresql+psycopg "
                "or mysql+pymysql"
            ) from None
        except ImportError as error:
            raise ValueError(
                f"the driver for {url.drivername} is not installed ({error.name}): use "
                "postgresql+psycopg:// with vodpoller[postgres], or mysql+pymysql:// with "
                "vodpoller[mysql]"
            ) from None
        return value


class LoggingSettings(_Section):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


# [host]:port, host[:port] or a bare port; IPv6 in brackets.
_LISTEN = re.compile(r"(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):)?(?P<port>\d{1,5})")


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` -> (host, port). No host means 127.0.0.1: nothing listens beyond this
    machine unless an address says so. The host is an IP address or `localhost`."""
    match = _LISTEN.fullmatch(value.strip())
    if not match:
        raise ValueError(f"must be host:port, e.g. 127.0.0.1:9464 or [::1]:9464, not {value!r}")
    host = (match["host"] or "127.0.0.1").strip("[]")
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is above 65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is neither an IP address nor localhost") from None
    return host, port


def listen_or_off(value: str) -> str:
    """A `listen` setting: empty (off) or a valid `host:port`."""
    if value.strip():
        parse_listen(value)
    return value.strip()


class MetricsSettings(_Section):
    # Off while empty. Anything but a loopback address exposes /metrics and /healthz to the
    # network: that is the user's explicit choice.
    listen: str = ""
    health_window_seconds: float = Field(120.0, gt=0)
    # DescribeEventsState per application, for the backlog gauge: a modest pace, far inside
    # the API's 100 requests per second.
    backlog_interval_seconds: float = Field(60.0, ge=5)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return listen_or_off(value)

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to serve on, or None when metrics are off."""
        return parse_listen(self.listen) if self.listen else None


class RetentionSettings(_Section):
    days: int = Field(0, ge=0)  # 0: keep every row


class ReceiverSettings(_Section):
    """Normal callback: VOD POSTs events here (receiver.py). Off while `listen` is empty."""

    listen: str = ""
    # The URL path VOD is given, with a secret token in it: /vod/callback/<token>.
    path: str = Field("", repr=False)
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return listen_or_off(value)

    @model_validator(mode="after")
    def _secret_path(self) -> ReceiverSettings:
        if not self.listen:
            return self
        if not self.path.startswith("/") or any(c.isspace() for c in self.path):
            raise ValueError("path must start with / and hold no spaces, e.g. /vod/callback/TOKEN")
        token = self.path.rstrip("/").rsplit("/", 1)[-1]
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"path must end in a secret token of at least {MIN_TOKEN_CHARS} characters "
                "(e.g. /vod/callback/ and the output of `openssl rand -hex 16`)"
            )
        return self

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to serve on, or None when the receiver is off."""
        return parse_listen(self.listen) if self.listen else None


class ForwardSettings(_Section):
    """Every stored event POSTed to the user's handler (forwarder.py). Off while `url` is
    empty."""

    url: str = Field("", repr=False)  # may hold credentials
    event_types: list[str] = Field(default_factory=list)  # empty: every type
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    max_in_flight: int = Field(8, ge=1, le=64)
    # After a failure a row waits, doubling from the first pause up to the longest.
    retry_seconds: float = Field(1.0, gt=0)
    max_retry_seconds: float = Field(300.0, gt=0)
    # Rows received before this moment are never forwarded (enabling it on a database with
    # history); RFC 3339, e.g. "2026-12-01T00:00:00Z". Empty: every row not yet forwarded.
    since: str = ""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("must be an http:// or https:// URL, e.g. https://app.internal/vod")
        return value

    @field_validator("since")
    @classmethod
    def _moment(cls, value: str) -> str:
        if value:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"must be RFC 3339, e.g. 2026-12-01T00:00:00Z, not {value!r}"
                ) from None
            if moment.tzinfo is None:
                raise ValueError(f"needs a time zone (Z or +08:00): {value!r}")
        return value

    @property
    def since_moment(self) -> datetime | None:
        return datetime.fromisoformat(self.since) if self.since else None


class Settings(_Section):
    vod: VodSettings = VodSettings()
    poll: PollSettings = PollSettings()
    database: DatabaseSettings = DatabaseSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    retention: RetentionSettings = RetentionSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    forward: ForwardSettings = ForwardSettings()


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """`--config`, else `$VODPOLLER_CONFIG`, else /etc/vodpoller/config.toml."""
    if explicit:
        return Path(explicit)
    if env.get("VODPOLLER_CONFIG"):
        return Path(env["VODPOLLER_CONFIG"])
    return DEFAULT_CONFIG_PATH


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file (pass --config PATH or set VODPOLLER_CONFIG; "
            "config.example.toml documents every key)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key `{key}`")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: `{key}`: {message}")
    return "; ".join(lines)


# Secrets as files in $CREDENTIALS_DIRECTORY (systemd's LoadCredential=): file name -> key.
CREDENTIALS_VARIABLE: Final = "CREDENTIALS_DIRECTORY"
CREDENTIAL_KEYS: Final = {
    "secret_id": ("vod", "secret_id"),
    "secret_key": ("vod", "secret_key"),
    "token": ("vod", "token"),
    "database_url": ("database", "url"),
}


def read_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """The credential files present in `$CREDENTIALS_DIRECTORY`, by name; a file that is not
    there is not used. Messages name the file, never its content."""
    directory = env.get(CREDENTIALS_VARIABLE)
    if not directory:
        return {}
    if not Path(directory).is_dir():
        raise ConfigError(f"{CREDENTIALS_VARIABLE}={directory} is not a directory")
    found: dict[str, str] = {}
    for name in CREDENTIAL_KEYS:
        path = Path(directory) / name
        try:
            # A trailing newline (echo, an editor) is not part of a key or a URL.
            value = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            continue
        except UnicodeDecodeError:
            raise ConfigError(f"credential {path}: not UTF-8 text") from None
        except OSError as error:
            raise ConfigError(f"credential {path}: cannot read: {error.strerror}") from None
        if not value:
            raise ConfigError(f"credential {path}: empty")
        found[name] = value
    pair = {"secret_id", "secret_key"} & found.keys()
    if len(pair) == 1 or ("token" in found and not pair):
        given = sorted(found.keys() & {"secret_id", "secret_key", "token"})
        missing = sorted({"secret_id", "secret_key"} - found.keys())
        raise ConfigError(
            f"credentials in {directory}: {' and '.join(given)} without "
            f"{' and '.join(missing)}: a key pair (and its token) go together"
        )
    return found


def _set(document: dict[str, Any], section: str, key: str, value: Any) -> None:
    document.setdefault(section, {})
    if isinstance(document[section], dict):  # else validation names the wrong type
        document[section][key] = value


def _apply_environment(document: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Credential files win over the TOML; environment variables win over both."""
    merged = {
        key: dict(value) if isinstance(value, dict) else value for key, value in document.items()
    }
    credentials = read_credentials(env)
    if "database_url" in credentials:
        _set(merged, "database", "url", credentials["database_url"])
    if "secret_id" in credentials:
        _set(merged, "vod", "secret_id", credentials["secret_id"])
        _set(merged, "vod", "secret_key", credentials["secret_key"])
        _set(merged, "vod", "token", credentials.get("token"))
    if env.get("VODPOLLER_DATABASE_URL"):
        merged.setdefault("database", {})
        if isinstance(merged["database"], dict):
            merged["database"]["url"] = env["VODPOLLER_DATABASE_URL"]
    if env.get("TENCENTCLOUD_SECRET_ID") and env.get("TENCENTCLOUD_SECRET_KEY"):
        merged.setdefault("vod", {})
        if isinstance(merged["vod"], dict):
            merged["vod"]["secret_id"] = env["TENCENTCLOUD_SECRET_ID"]
            merged["vod"]["secret_key"] = env["TENCENTCLOUD_SECRET_KEY"]
            # A token belongs to its key pair: never pair the file's token with other keys.
            merged["vod"]["token"] = env.get("TENCENTCLOUD_TOKEN") or None
    return merged


def settings_from(document: Mapping[str, Any], env: Mapping[str, str], source: str) -> Settings:
    """Validate a parsed configuration document with the environment's overrides."""
    try:
        return Settings(**_apply_environment(dict(document), env))
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read and validate the configuration; every problem is a `ConfigError` naming key and file."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    return settings_from(read_toml(file), env, str(file))
