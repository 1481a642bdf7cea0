"""Rows to text for `vodpoller events`: an aligned table, one JSON array, CSV, JSON Lines."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

FORMATS = ("table", "json", "csv")
# What a table or CSV shows of an event; JSON and JSON Lines carry every column.
EVENT_COLUMNS = (
    "id",
    "received_at",
    "sub_app_id",
    "event_type",
    "task_id",
    "file_id",
    "status",
    "err_code",
    "deliveries",
    "confirmed_at",
)
# What a user pastes back into a filter or `show` (ids, types, numbers): never cut, whatever
# the width. Other text (status, timestamps) is cut with an ellipsis, and only to fit a terminal.
WHOLE = frozenset(
    {
        "id",
        "dedup_key",
        "content_key",
        "event_type",
        "task_id",
        "file_id",
        "sub_app_id",
        "err_code",
        "deliveries",
        "events",
        "unconfirmed",
    }
)
ELLIPSIS = "\u2026"
_NARROWEST = 6  # a cut column keeps at least this many characters (or its header)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def terminal_width(out: TextIO) -> int | None:
    """The width of the terminal `out` writes to; None when it is a pipe or a file."""
    try:
        interactive = out.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return None
    return shutil.get_terminal_size().columns if interactive else None


def fit_widths(columns: Sequence[str], natural: Sequence[int], limit: int | None) -> list[int]:
    """Column widths: the `natural` ones, or, for a line longer than `limit`, the widest
    columns that may be cut (not in `WHOLE`) made narrower until it fits or none can shrink."""
    widths = list(natural)
    if limit is None:
        return widths
    floors = [len(c) if c in WHOLE else max(len(c), _NARROWEST) for c in columns]
    while sum(widths) + 2 * (len(widths) - 1) > limit:
        shrinkable = [i for i, c in enumerate(columns) if c not in WHOLE and widths[i] > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _fit(value: str, width: int, *, cut: bool) -> str:
    if not cut or len(value) <= width:
        return value.ljust(width)  # longer values overflow: shifted, never cut silently
    return value[: width - 1] + ELLIPSIS


def _line(
    columns: Sequence[str], values: Sequence[str], widths: Sequence[int], *, fitted: bool
) -> str:
    """One aligned line; with `fitted` (a terminal), text beyond its width ends in an ellipsis."""
    cells = (
        _fit(v, w, cut=fitted and c not in WHOLE)
        for c, v, w in zip(columns, values, widths, strict=True)
    )
    return "  ".join(cells).rstrip()


def json_ready(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in row.items()}


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    out: TextIO,
    width: int | None = None,
) -> None:
    """An aligned table; with a `width` (a terminal's), cut text other than ids to fit it."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    natural = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    widths = fit_widths(columns, natural, width)
    fitted = width is not None
    print(_line(columns, columns, widths, fitted=fitted), file=out)
    print(_line(columns, ["-" * w for w in widths], widths, fitted=fitted), file=out)
    for row in cells:
        print(_line(columns, row, widths, fitted=fitted), file=out)


def write_rows(
    rows: Sequence[Mapping[str, Any]],
    fmt: str,
    out: TextIO,
    columns: Sequence[str],
    width: int | None = None,
) -> None:
    """`table` and `csv` show `columns`; `json` is one array of whole rows. `width` (a
    terminal's) is for tables only."""
    if fmt == "json":
        json.dump([json_ready(r) for r in rows], out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    else:
        write_table(rows, columns, out, width)


def write_json_lines(rows: Iterable[Mapping[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(json_ready(row), ensure_ascii=False) + "\n")
        count += 1
    return count


# Starting widths for `tail`, whose rows arrive a few at a time: the backlog shown first widens
# them; a later, longer value shifts its line (an id) or, on a terminal, ends in an ellipsis.
_STREAM_WIDTHS = {
    "id": 8,
    "received_at": 25,
    "sub_app_id": 10,
    "event_type": 22,
    "task_id": 20,
    "file_id": 19,
    "status": 10,
    "err_code": 8,
    "deliveries": 10,
    "confirmed_at": 25,
}


@dataclass(frozen=True)
class StreamLayout:
    widths: tuple[int, ...]
    fitted: bool  # to a terminal's width: text other than ids may be cut


def stream_layout(backlog: Sequence[Mapping[str, Any]], width: int | None) -> StreamLayout:
    """The column widths of a `tail`: wide enough for its backlog, fitted to `width` if any."""
    columns = EVENT_COLUMNS
    natural = [
        max([_STREAM_WIDTHS[c], len(c), *(len(_cell(row.get(c))) for row in backlog)])
        for c in columns
    ]
    return StreamLayout(tuple(fit_widths(columns, natural, width)), fitted=width is not None)


def write_stream(
    rows: Sequence[Mapping[str, Any]],
    fmt: str,
    out: TextIO,
    *,
    header: bool,
    layout: StreamLayout | None = None,
) -> None:
    """Rows of a growing listing: JSON Lines for `json`, else CSV or aligned lines."""
    if fmt == "json":
        write_json_lines(rows, out)
        return
    columns = EVENT_COLUMNS
    if fmt == "csv":
        writer = csv.writer(out)
        if header:
            writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
        return
    layout = layout or stream_layout(rows, None)
    if header:
        print(_line(columns, columns, layout.widths, fitted=layout.fitted), file=out)
    for row in rows:
        values = [_cell(row.get(c)) for c in columns]
        print(_line(columns, values, layout.widths, fitted=layout.fitted), file=out)
