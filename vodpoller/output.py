"""Rows to text for `vodpoller events`: an aligned table, one JSON array, CSV, JSON Lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
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
_WIDEST = 48


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


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v[:w].ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


def json_ready(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in row.items()}


def write_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [
        min(_WIDEST, max([len(c), *(len(r[i]) for r in cells)])) for i, c in enumerate(columns)
    ]

    print(_line(columns, widths), file=out)
    print(_line(["-" * w for w in widths], widths), file=out)
    for row in cells:
        print(_line(row, widths), file=out)


def write_rows(
    rows: Sequence[Mapping[str, Any]], fmt: str, out: TextIO, columns: Sequence[str]
) -> None:
    """`table` and `csv` show `columns`; `json` is one array of whole rows."""
    if fmt == "json":
        json.dump([json_ready(r) for r in rows], out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    else:
        write_table(rows, columns, out)


def write_json_lines(rows: Iterable[Mapping[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(json_ready(row), ensure_ascii=False) + "\n")
        count += 1
    return count


# Fixed widths for `tail`, whose rows arrive a few at a time.
_STREAM_WIDTHS = {
    "id": 8,
    "received_at": 25,
    "sub_app_id": 10,
    "event_type": 34,
    "task_id": 40,
    "file_id": 19,
    "status": 10,
    "err_code": 8,
    "deliveries": 10,
    "confirmed_at": 25,
}


def write_stream(rows: Sequence[Mapping[str, Any]], fmt: str, out: TextIO, *, header: bool) -> None:
    """Rows of a growing listing: JSON Lines for `json`, else CSV or fixed-width lines."""
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
    widths = [_STREAM_WIDTHS[c] for c in columns]
    if header:
        print(_line(columns, widths), file=out)
    for row in rows:
        print(_line([_cell(row.get(c)) for c in columns], widths), file=out)
