"""SIGHUP: re-read the configuration file; `[poll]` and `[logging]` apply to the running
daemon at once (nothing in flight is dropped), changes elsewhere are logged as needing a
restart, and a file that does not load leaves the running configuration as it was."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from vodpoller.config import Settings, load_settings

# What the running daemon can take without a restart.
LIVE_SECTIONS: Final = frozenset({"poll", "logging"})


@dataclass(frozen=True)
class Changes:
    """Dotted keys whose value changed, by whether they apply now."""

    live: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return flat
    return {prefix: value}


def changes(old: Settings, new: Settings) -> Changes:
    """Pure: the keys that differ, secrets compared by value but never shown."""
    before = _flatten("", old.model_dump(mode="python"))
    after = _flatten("", new.model_dump(mode="python"))
    differing = sorted(
        key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
    )
    live = [key for key in differing if key.split(".", 1)[0] in LIVE_SECTIONS]
    rest = [key for key in differing if key.split(".", 1)[0] not in LIVE_SECTIONS]
    return Changes(live, rest)


class Reloader:
    """Holds the running configuration; `reload()` reads the file again and hands what can
    change live to `apply`."""

    def __init__(
        self,
        path: Path,
        running: Settings,
        apply: Callable[[Settings], None],
        *,
        load: Callable[[Path], Settings] = load_settings,
    ):
        self.path = path
        self.running = running
        self._apply = apply
        self._load = load

    def reload(self) -> Changes:
        """Raises `ConfigError` (the running configuration stays) if the file does not load."""
        new = self._load(self.path)
        found = changes(self.running, new)
        if found.live:
            # Only [poll] and [logging] take effect; the rest keeps its running values.
            merged = self.running.model_copy(update={"poll": new.poll, "logging": new.logging})
            self._apply(merged)
            self.running = merged
        return found
