"""`vodpoller events list/show/stats/rejects/export/tail/purge`: query what is stored.
Thin: arguments in, `EventQueries` and `output` do the work."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from vodpoller.arguments import number
from vodpoller.config import DatabaseSettings, config_path, load_settings
from vodpoller.errors import ConfigError
from vodpoller.migrate import open_at_head
from vodpoller.output import (
    EVENT_COLUMNS,
    FORMATS,
    json_ready,
    stream_layout,
    terminal_width,
    write_json_lines,
    write_rows,
    write_stream,
)
from vodpoller.queries import AGE_EXAMPLES, EventFilter, EventQueries, parse_moment
from vodpoller.retention import count_before, purge_before
from vodpoller.signals import until_stopped

_LIMIT = number(int, at_least=1)
# The entry as received (`raw`) is last: a table cuts it to fit; json shows it whole.
REJECT_COLUMNS = ("id", "received_at", "sub_app_id", "reason", "raw")
STATS_COLUMNS = (
    "event_type",
    "events",
    "deliveries",
    "unconfirmed",
    "first_received_at",
    "last_received_at",
)


def _database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        # Checked as the configuration checks `database.url`: a bad URL is a usage error.
        try:
            return DatabaseSettings(url=args.database_url).url
        except ValidationError as error:
            problem = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"--database-url: {problem}") from None
    return load_settings(config_path(args.config, os.environ)).database.url


@contextlib.contextmanager
def _queries(args: argparse.Namespace, *, write: bool = False) -> Iterator[EventQueries]:
    # Nothing missing is created, and reading never writes: a SQLite file is opened read-only.
    store = open_at_head(_database_url(args), read_only=not write)
    try:
        yield EventQueries(store)
    finally:
        store.dispose()


def _window(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """--since and --until, checked: a window that cannot match is a usage error."""
    since = parse_moment(args.since) if args.since else None
    until = parse_moment(args.until) if args.until else None
    if since is not None and until is not None and since >= until:
        raise ConfigError(
            f"--since {args.since} ({since.isoformat(timespec='seconds')}) is not before "
            f"--until {args.until} ({until.isoformat(timespec='seconds')}): nothing can match"
        )
    return since, until


def _filter(args: argparse.Namespace) -> EventFilter:
    since, until = _window(args)
    return EventFilter(
        event_type=args.type,
        sub_app_id=args.sub_app_id,
        task_id=args.task_id,
        file_id=args.file_id,
        since=since,
        until=until,
    )


def _list(args: argparse.Namespace) -> int:
    where = _filter(args)  # a usage error before the database is opened
    with _queries(args) as queries:
        rows = queries.latest(where, args.limit)
    write_rows(rows, args.format, sys.stdout, EVENT_COLUMNS, terminal_width(sys.stdout))
    return 0


def _show(args: argparse.Namespace) -> int:
    with _queries(args) as queries:
        row = queries.one(args.key)
    if row is None:
        print(f"vodpoller: no event {args.key!r}", file=sys.stderr)
        return 1
    print(json.dumps(json_ready(row), ensure_ascii=False, indent=2))
    return 0


def _stats(args: argparse.Namespace) -> int:
    where = _filter(args)
    with _queries(args) as queries:
        rows = queries.stats(where)
    write_rows(rows, args.format, sys.stdout, STATS_COLUMNS, terminal_width(sys.stdout))
    return 0


def _rejects(args: argparse.Namespace) -> int:
    since, until = _window(args)
    with _queries(args) as queries:
        rows = queries.rejects(args.limit, sub_app_id=args.sub_app_id, since=since, until=until)
    write_rows(rows, args.format, sys.stdout, REJECT_COLUMNS, terminal_width(sys.stdout))
    return 0


def _export(args: argparse.Namespace) -> int:
    where = _filter(args)
    with _queries(args) as queries, _output(args.output) as out:
        count = write_json_lines(queries.every(where), out)
    if args.output:
        print(f"{count} event(s) written to {args.output}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if not path or path == "-":
        yield sys.stdout
        return
    try:
        with Path(path).open("w", encoding="utf-8") as file:
            yield file
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from None


def _purge(args: argparse.Namespace) -> int:
    before = parse_moment(args.before)
    if before > datetime.now(UTC):
        raise ConfigError(
            f"--before {args.before} is in the future: that would remove the events being "
            "stored now too"
        )
    when = before.isoformat(timespec="seconds")
    with _queries(args, write=not args.dry_run) as queries:
        if args.dry_run:
            count = count_before(queries.engine, before)
            print(f"would remove {count} event(s) received before {when}")
            return 0
        with until_stopped() as stopped:
            count = purge_before(queries.engine, before, stop=stopped)
        if stopped.is_set():
            print(f"stopped early: removed {count} event(s) received before {when}")
            return 1
    print(f"removed {count} event(s) received before {when}")
    return 0


# Ids are given at INSERT but seen at COMMIT, and concurrent batches commit out of order:
# tail looks back this long for rows with an id below the newest one it printed.
TAIL_LOOKBACK_SECONDS = 10.0
TAIL_LOOKBACK_IDS = 1000  # at the start: ids below the backlog that may still commit


def _tail(args: argparse.Namespace) -> int:
    where = _filter(args)
    with _queries(args) as queries, until_stopped() as stopped:
        backlog = list(reversed(queries.latest(where, args.limit)))
        layout = stream_layout(backlog, terminal_width(sys.stdout))
        write_stream(backlog, args.format, sys.stdout, header=True, layout=layout)
        sys.stdout.flush()
        first = backlog[0]["id"] if backlog else queries.newest_id() + 1
        low = max(0, first - 1 - TAIL_LOOKBACK_IDS)
        follower = _Follower(queries.ids_after(where, low), low)
        while not stopped.wait(args.interval):
            fresh = follower.unseen(queries.ids_after(where, follower.low))
            if fresh:
                rows = queries.by_ids(fresh)
                write_stream(rows, args.format, sys.stdout, header=False, layout=layout)
                sys.stdout.flush()
    return 0


class _Follower:
    """Which ids `tail` has not printed yet. Ids are given at INSERT but seen at COMMIT, and
    concurrent batches commit out of order: it keeps looking back for late ones."""

    def __init__(self, known: list[int], low: int):
        self.printed: set[int] = set(known)  # shown, or there before tail began
        self.newest = max([low, *known])
        self.marks: deque[tuple[float, int]] = deque([(time.monotonic(), low)])

    @property
    def low(self) -> int:
        """Read above this id: the newest id seen, as it was the lookback ago."""
        return self.marks[0][1]

    def unseen(self, ids: list[int]) -> list[int]:
        fresh = [i for i in ids if i not in self.printed]
        now = time.monotonic()
        self.printed.update(fresh)
        self.newest = max([self.newest, *fresh])
        self.marks.append((now, self.newest))
        while len(self.marks) > 1 and now - self.marks[1][0] >= TAIL_LOOKBACK_SECONDS:
            self.marks.popleft()
        self.printed = {i for i in self.printed if i > self.low}
        return fresh


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", metavar="EVENT_TYPE", help="e.g. PullComplete")
    parser.add_argument("--sub-app-id", type=int, metavar="N")
    parser.add_argument("--task-id", metavar="ID")
    parser.add_argument("--file-id", metavar="ID")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help=f"received at or after: ISO 8601 (UTC by default) or an age: {AGE_EXAMPLES}",
    )
    parser.add_argument("--until", metavar="WHEN", help="received before; same forms as --since")


def add_events_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config: argparse.ArgumentParser
) -> None:
    """`vodpoller events ...`; `config` is the parent parser with `--config`."""
    source = argparse.ArgumentParser(add_help=False, parents=[config])
    source.add_argument(
        "--database-url",
        metavar="URL",
        help="query this database instead of the configuration's (no configuration needed)",
    )
    filters = argparse.ArgumentParser(add_help=False)
    _add_filters(filters)
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=FORMATS, default="table", help="(default %(default)s)")

    events = commands.add_parser("events", help="query the stored events")
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[source, filters, fmt], help="the newest events, newest first"
    )
    listing.add_argument(
        "--limit", type=_LIMIT, default=50, metavar="N", help="1 or more (default %(default)s)"
    )
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", parents=[source], help="one event with its payload, as JSON")
    show.add_argument("key", help="the id, or a dedup key (at least its first 8 characters)")
    show.set_defaults(handler=_show)
    actions.add_parser(
        "stats",
        parents=[source, filters, fmt],
        help="per event type: counts, deliveries, unconfirmed",
    ).set_defaults(handler=_stats)
    rejects = actions.add_parser(
        "rejects",
        parents=[source, fmt],
        help="the entries quarantined in vod_rejects (unreadable, or refused by the database), "
        "newest first",
    )
    rejects.add_argument("--sub-app-id", type=int, metavar="N")
    rejects.add_argument(
        "--since",
        metavar="WHEN",
        help=f"received at or after: ISO 8601 (UTC by default) or an age: {AGE_EXAMPLES}",
    )
    rejects.add_argument("--until", metavar="WHEN", help="received before; same forms as --since")
    rejects.add_argument(
        "--limit", type=_LIMIT, default=50, metavar="N", help="1 or more (default %(default)s)"
    )
    rejects.set_defaults(handler=_rejects)
    export = actions.add_parser(
        "export", parents=[source, filters], help="every matching event as JSON Lines, oldest first"
    )
    export.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    # Export streams: `json` is JSON Lines here, as for `tail` (an array would be held whole).
    export.add_argument(
        "--format",
        choices=("json", "jsonl"),
        default="jsonl",
        help="either way JSON Lines, one event per line (default %(default)s)",
    )
    export.set_defaults(handler=_export)
    tail = actions.add_parser(
        "tail",
        parents=[source, filters, fmt],
        help="the last events, then new ones as they are stored, until Ctrl-C",
    )
    tail.add_argument(
        "--limit", type=_LIMIT, default=10, metavar="N", help="shown first, 1 or more (%(default)s)"
    )
    tail.add_argument(
        "--interval",
        type=number(float, above=0),
        default=1.0,
        metavar="SECONDS",
        help="between looks for new events, more than 0 (%(default)s)",
    )
    tail.set_defaults(handler=_tail)
    purge = actions.add_parser(
        "purge",
        parents=[source],
        help="remove the events received before a time, in small batches; print how many",
    )
    purge.add_argument(
        "--before",
        required=True,
        metavar="WHEN",
        help="ISO 8601 (UTC by default) or an age: 90d removes what is older than 90 days",
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="count what would be removed, remove nothing"
    )
    purge.set_defaults(handler=_purge)
