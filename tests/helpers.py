"""Builders shared by the integration and acceptance tests."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from vodpoller.config import DatabaseSettings, PollSettings, Settings, VodSettings
from vodpoller.emulator.server import Emulator


@contextlib.contextmanager
def reaped(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """Kill the process on the way out if it still runs: no test leaves one behind."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for(
    emulator: Emulator,
    database_url: str,
    *,
    sub_app_ids: tuple[int, ...] = (),
    **poll: Any,
) -> Settings:
    """Settings that point the real SDK at the emulator and store into `database_url`."""
    return Settings(
        vod=VodSettings(
            endpoint=emulator.endpoint,
            scheme="http",
            sub_app_ids=list(sub_app_ids),
            secret_id=SecretStr(emulator.options.secret_id),
            secret_key=SecretStr(emulator.options.secret_key),
        ),
        poll=PollSettings(**poll),
        database=DatabaseSettings(url=database_url),
    )


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A TOML file from `{section: {key: value}}`."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def emulator_config(
    path: Path, emulator: Emulator, database_url: str, **extra: dict[str, Any]
) -> Path:
    """A configuration file for the CLI that points at the emulator."""
    sections: dict[str, dict[str, Any]] = {
        "vod": {
            "endpoint": emulator.endpoint,
            "scheme": "http",
            "secret_id": emulator.options.secret_id,
            "secret_key": emulator.options.secret_key,
        },
        "poll": {"interval_seconds": 0.2},
        "database": {"url": database_url},
        "logging": {"format": "json", "level": "info"},
    }
    for section, values in extra.items():
        sections.setdefault(section, {}).update(values)
    return write_config(path, sections)
