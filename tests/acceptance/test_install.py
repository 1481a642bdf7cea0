"""The README's install: `make dist`, then the wheel in a fresh virtual environment, which runs
`migrate`, `check` and `demo` with nothing from the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.acceptance.test_cli import _env
from tests.helpers import write_config
from vodpoller.migrate import head_revision

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _readme_install_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Install and run") :]
    block = section[section.index("```sh\n") + len("```sh\n") :].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines()]


def _unit_program() -> str:
    unit = (ROOT / "systemd" / "vodpoller.service").read_text(encoding="utf-8")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return exec_start.removeprefix("ExecStart=").split()[0]


def _make_dist(dist: Path) -> Path:
    make = shutil.which("make")
    assert make is not None, "the README's install needs make"
    made = subprocess.run(
        [make, "--no-print-directory", "dist", f"DIST={dist}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    (wheel,) = dist.glob("vodpoller-*.whl")
    return wheel


def _install(wheel: Path, target: Path) -> None:
    """A fresh venv with the wheel in it; its dependencies come from this test's environment
    (appended to sys.path after the venv's own packages), so no index is needed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    python = target / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run(
        [*pip, "--no-deps", "--no-index", f"{wheel}[postgres]"],
        check=True,
        env=_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = target / "lib" / version / "site-packages"
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def test_the_wheel_installs_as_the_readme_says_and_runs_without_the_source_tree(
    tmp_path: Path,
) -> None:
    wheel = _make_dist(tmp_path / "dist")

    # The README builds this wheel and installs it where the systemd unit looks for vodpoller.
    lines = _readme_install_lines()
    assert lines[0] == "make dist"
    venv = next(line for line in lines if " -m venv " in line).split()[-1]
    assert f"{venv}/bin/pip install 'dist/{wheel.name}[postgres]'" in lines
    assert _unit_program() == f"{venv}/bin/vodpoller"

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{wheel.name.split('-py3')[0]}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    migrations = {
        f"vodpoller/migrations/{path.relative_to(ROOT / 'migrations')}"
        for path in (ROOT / "migrations").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    samples = {n for n in names if n.startswith("vodpoller/emulator/samples/")}
    assert migrations >= {"vodpoller/migrations/env.py", "vodpoller/migrations/script.py.mako"}
    assert migrations <= names
    assert len(samples) == len(list((ROOT / "vodpoller/emulator/samples").glob("*.json"))) == 37
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert f"vodpoller = {script['vodpoller']}" in entry_points.splitlines()
    assert {"Provides-Extra: postgres", "Provides-Extra: mysql"} <= set(metadata.splitlines())

    target = tmp_path / "opt" / "vodpoller"
    _install(wheel, target)
    work = tmp_path / "work"
    work.mkdir()
    vodpoller = target / "bin" / "vodpoller"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(vodpoller), *args],
            cwd=work,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    where = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import vodpoller; print(vodpoller.__file__)"],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(target))  # the wheel's copy, not the source tree's

    config = write_config(
        work / "config.toml",
        {
            "vod": {"secret_id": "AKIDinstalled", "secret_key": "k"},
            "database": {"url": f"sqlite:///{work / 'state' / 'events.db'}"},
        },
    )
    checked = run("check", "--config", str(config))
    migrated = run("migrate", "--config", str(config))
    demo = run("demo")

    assert "ok    schema: will be created on first run (run migrates)" in checked.stdout
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout == f"schema at revision {head_revision()} (the newest)\n"
    assert demo.returncode == 0, demo.stderr
    assert "pulled=37 stored=25 duplicates=12 confirmed=37" in demo.stdout
    assert "37 rows in " in demo.stdout
    assert f"  {vodpoller} events stats --database-url" in demo.stdout
