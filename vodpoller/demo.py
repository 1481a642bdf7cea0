"""`vodpoller demo`: the emulator with a sample of every event type, drained into a SQLite file
with the real SDK over HTTP, then a table of what was stored."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr

from vodpoller import logs
from vodpoller.app import components
from vodpoller.config import DatabaseSettings, PollSettings, Settings, VodSettings
from vodpoller.emulator.server import Emulator, EmulatorOptions
from vodpoller.output import terminal_width, write_table

DEMO_DATABASE = Path("vodpoller-demo.db")
_EXAMPLE_QUERY = "SELECT event_type, task_id, status, deliveries FROM vod_events"
_COLUMNS = ("id", "event_type", "task_id", "file_id", "status", "deliveries")


def demo_settings(emulator: Emulator, database: Path) -> Settings:
    return Settings(
        vod=VodSettings(
            endpoint=emulator.endpoint,
            scheme="http",
            secret_id=SecretStr(emulator.options.secret_id),
            secret_key=SecretStr(emulator.options.secret_key),
        ),
        poll=PollSettings(interval_seconds=0.0),
        database=DatabaseSettings(url=f"sqlite:///{database}"),
    )


def run_demo(out: TextIO, database: Path = DEMO_DATABASE) -> int:
    logs.configure("warning", "console")
    options = EmulatorOptions(port=0, samples=True, long_poll_seconds=0.5)
    with Emulator(options) as emulator:
        queued = emulator.stats()["Queued"]
        print(
            f"Emulator on {emulator.url} with {queued} sample events, one of every known type.",
            file=out,
        )
        settings = demo_settings(emulator, database)
        with components(settings) as built:
            result = built.drain()
            rows = built.store.rows()
        left = emulator.stats()
    print(f"Drained with the Tencent Cloud SDK over HTTP: {result.summary()}", file=out)
    print(f"Emulator after the drain: Queued={left['Queued']} Leased={left['Leased']}", file=out)
    print(file=out)
    write_table(rows, _COLUMNS, out, terminal_width(out))
    print(file=out)
    print(
        f"{len(rows)} rows in {database} (table vod_events). Run the demo again: the same "
        "events are recognised, no row is added, `deliveries` goes up.",
        file=out,
    )
    where = database.absolute()
    url = shlex.quote(f"sqlite:///{where}")
    print("Query it:", file=out)
    print(f"  {running_command()} events stats --database-url {url}", file=out)
    print(f"  {running_command()} events show 1 --database-url {url}", file=out)
    print(f'  sqlite3 {shlex.quote(str(where))} "{_EXAMPLE_QUERY}"', file=out)
    return 0


def running_command() -> str:
    """How to start the vodpoller that runs now, wherever it is installed, for a shell."""
    program = sys.argv[0]
    if Path(program).name == "__main__.py":  # python -m vodpoller
        return f"{shlex.quote(sys.executable)} -m vodpoller"
    if os.sep not in program:
        program = shutil.which(program) or program
    return shlex.quote(os.path.abspath(program))
