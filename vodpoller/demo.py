"""`vodpoller demo`: a sample of every event type drained from the emulator into a SQLite file
with the real SDK over HTTP. The emulator refuses the confirms of the first few; they come back
after their lease and land in their rows again. Then a table of what was stored."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr

from vodpoller import logs
from vodpoller.app import components
from vodpoller.config import DatabaseSettings, PollSettings, Settings, VodSettings
from vodpoller.emulator.faults import FaultPlan
from vodpoller.emulator.samples import load_samples
from vodpoller.emulator.server import Emulator, EmulatorOptions
from vodpoller.output import terminal_width, write_table

DEMO_DATABASE = Path("vodpoller-demo.db")
_EXAMPLE_QUERY = "SELECT event_type, task_id, status, deliveries FROM vod_events"
_COLUMNS = ("id", "event_type", "task_id", "file_id", "status", "deliveries")
LEASE_SECONDS = 1.0
# A refused confirm (the answer VOD gives a handle older than 30 s): the event comes back.
REFUSED_CONFIRMS = {"ConfirmEvents": {"error_rate": 1.0, "error_codes": ["InvalidParameterValue"]}}
REFUSED = 12  # the first samples, drained while the emulator refuses every confirm


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


def _fresh(database: Path) -> None:
    """Each run starts from an empty demo database: the story is the same every time."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def run_demo(out: TextIO, database: Path = DEMO_DATABASE) -> int:
    logs.configure("error", "console")
    _fresh(database)
    samples = load_samples()
    refused, rest = samples[:REFUSED], samples[REFUSED:]
    options = EmulatorOptions(port=0, long_poll_seconds=0.5, lease_seconds=LEASE_SECONDS)
    with Emulator(options) as emulator:
        print(
            f"Emulator on {emulator.url} with {len(samples)} sample events, one of every known "
            "type.",
            file=out,
        )
        settings = demo_settings(emulator, database)
        with components(settings, command="demo") as built:
            emulator.queue.enqueue(None, refused)
            emulator.faults = FaultPlan.parse(REFUSED_CONFIRMS, actions=emulator.api.actions)
            first = built.drain()
            print(
                f"Drained {len(refused)} with the Tencent Cloud SDK over HTTP, the emulator "
                f"refusing every confirm on purpose: {first.summary()}",
                file=out,
            )
            emulator.faults = FaultPlan()
            time.sleep(LEASE_SECONDS + 0.2)  # their leases run out: VOD delivers them again
            emulator.queue.enqueue(None, rest)
            again = built.drain()
            rows = built.store.rows()
        left = emulator.stats()
    print(
        f"Their leases ran out; they came back with the other {len(rest)}: {again.summary()} "
        "(a redelivery adds no row, it counts in `deliveries`).",
        file=out,
    )
    print(f"Emulator after the drain: Queued={left['Queued']} Leased={left['Leased']}", file=out)
    print(file=out)
    write_table(rows, _COLUMNS, out, terminal_width(out))
    print(file=out)
    where = database.absolute()
    url = shlex.quote(f"sqlite:///{where}")
    print(f"{len(rows)} rows in {where} (table vod_events). Query it:", file=out)
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
