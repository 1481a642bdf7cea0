"""`reload.py`: what a re-read configuration changes, and what it takes a restart for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_config
from vodpoller.config import Settings, load_settings
from vodpoller.errors import ConfigError
from vodpoller.reload import Reloader, changes


def settings(**sections: dict[str, object]) -> Settings:
    return Settings.model_validate(sections)


def test_poll_and_logging_apply_live_the_rest_needs_a_restart() -> None:
    old = settings(poll={"interval_seconds": 1.0}, logging={"level": "info"})
    new = settings(
        poll={"interval_seconds": 2.0, "store_in_child": False},
        logging={"level": "debug"},
        database={"url": "sqlite:////tmp/other.db"},
        vod={"region": "ap-shanghai"},
    )

    found = changes(old, new)

    assert found.live == ["logging.level", "poll.interval_seconds"]
    assert found.needs_restart == ["database.url", "poll.store_in_child", "vod.region"]


def test_nothing_changed_is_nothing() -> None:
    assert changes(settings(), settings()) == changes(settings(), settings())
    found = changes(settings(), settings())
    assert (found.live, found.needs_restart) == ([], [])


def test_a_secret_that_changed_is_named_never_shown() -> None:
    old = settings(vod={"secret_id": "AKIDa", "secret_key": "first-secret"})
    new = settings(vod={"secret_id": "AKIDa", "secret_key": "second-secret"})
    found = changes(old, new)
    assert found.needs_restart == ["vod.secret_key"]
    assert "second-secret" not in repr(found)


def test_a_reload_applies_only_poll_and_logging_and_keeps_the_rest_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    write_config(path, {"poll": {"interval_seconds": 1.0}, "vod": {"region": "a"}})
    running = load_settings(path, {})
    applied: list[Settings] = []
    reloader = Reloader(path, running, applied.append, load=lambda p: load_settings(p, {}))
    write_config(path, {"poll": {"interval_seconds": 3.0}, "vod": {"region": "b"}})

    found = reloader.reload()

    assert found.live == ["poll.interval_seconds"]
    assert found.needs_restart == ["vod.region"]
    assert [s.poll.interval_seconds for s in applied] == [3.0]
    assert (reloader.running.poll.interval_seconds, reloader.running.vod.region) == (3.0, "a")


def test_a_file_that_does_not_load_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    write_config(path, {"poll": {"interval_seconds": 1.0}})
    running = load_settings(path, {})
    applied: list[Settings] = []
    reloader = Reloader(path, running, applied.append, load=lambda p: load_settings(p, {}))
    path.write_text("[poll]\ninterval_seconds = 'soon'\n")

    with pytest.raises(ConfigError, match=r"poll\.interval_seconds"):
        reloader.reload()

    assert applied == []
    assert reloader.running is running
