"""Settings: the TOML file plus environment overrides -> one frozen, validated `Settings`."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

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
# host[:port]: a DNS name, an IPv4 address, or an IPv6 address in brackets.
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
    request_timeout_seconds: float = Field(10.0, gt=0)
    secret_id: SecretStr | None = None
    secret_key: SecretStr | None = None
    token: SecretStr | None = None

    @field_validator("endpoint")
    @classmethod
    def _bare_endpoint(cls, value: str) -> str:
        if not _ENDPOINT.fullmatch(value.strip()):
            raise ValueError("must be host[:port], without scheme or path (use `scheme`)")
        return value.strip()

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
    concurrency: int = Field(4, ge=1, le=64)
    rate_limit_per_second: float = Field(100.0, gt=0)
    # VOD refuses a handle 30 s after the pull answered: a longer budget would only waste calls.
    confirm_budget_seconds: float = Field(30.0, gt=0, le=30)
    max_backoff_seconds: float = Field(60.0, gt=0)


class DatabaseSettings(_Section):
    url: str = Field(DEFAULT_DATABASE_URL, repr=False)  # may hold a password

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


class Settings(_Section):
    vod: VodSettings = VodSettings()
    poll: PollSettings = PollSettings()
    database: DatabaseSettings = DatabaseSettings()
    logging: LoggingSettings = LoggingSettings()


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


def _apply_environment(document: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    merged = {
        key: dict(value) if isinstance(value, dict) else value for key, value in document.items()
    }
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
