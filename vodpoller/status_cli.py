"""`vodpoller status`: the daemons registered on a database and the unconfirmed rows, as a table
or one JSON object. Thin: `status.py` reads and judges, this prints."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from vodpoller.database import safe_url

# The same opening as `vodpoller events`: the database of --database-url or of the
# configuration, opened for reading the way every reading command opens it.
from vodpoller.events_cli import _database_url, _queries
from vodpoller.output import write_table
from vodpoller.status import (
    TABLE_COLUMNS,
    StatusReport,
    as_json,
    error_lines,
    read_status,
    table_rows,
)


def _status(args: argparse.Namespace) -> int:
    with _queries(args) as queries:
        report = read_status(queries.engine)
    database = safe_url(_database_url(args))
    if args.format == "json":
        json.dump(as_json(report, database), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        write_text(report, database, sys.stdout)
    return 0


def write_text(report: StatusReport, database: str, out: TextIO) -> None:
    daemons = report.daemons
    dead = len(daemons) - len(report.alive)
    print(
        f"{len(daemons)} daemon(s) registered on {database}"
        + (f" ({len(report.alive)} alive, {dead} dead)" if daemons else ""),
        file=out,
    )
    if daemons:
        print(file=out)
        write_table(table_rows(report), TABLE_COLUMNS, out)
        for line in error_lines(report):
            print(line, file=out)
    print(file=out)
    print(
        f"unconfirmed rows: {report.unconfirmed}, of which {report.held} held by a daemon "
        "(its confirm pending; see holding)",
        file=out,
    )
    if report.pushed_only:
        print(
            f"rows that came only by normal callback (nothing to confirm): {report.pushed_only}",
            file=out,
        )


def add_status_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config: argparse.ArgumentParser
) -> None:
    """`vodpoller status`; `config` is the parent parser with `--config`."""
    parser = commands.add_parser(
        "status",
        parents=[config],
        help="the daemons registered on the database, how long ago each polled, the "
        "unconfirmed rows",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="read this database instead of the configuration's (no configuration needed)",
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="(default %(default)s)"
    )
    parser.set_defaults(handler=_status)
