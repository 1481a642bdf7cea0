"""Tables for `vodpoller events`: ids are never cut, other text is cut visibly, and only to fit
a terminal."""

from __future__ import annotations

import io

from vodpoller.output import (
    ELLIPSIS,
    EVENT_COLUMNS,
    fit_widths,
    stream_layout,
    write_stream,
    write_table,
)

ROWS = [
    {"task_id": "t-" + "x" * 58, "status": "PROCESSING-AND-WAITING", "received_at": "2026"},
    {"task_id": "t-1", "status": "FINISH", "received_at": "2026-11-25T08:00:00+00:00"},
]
COLUMNS = ("task_id", "status", "received_at")


def _table(width: int | None) -> list[str]:
    out = io.StringIO()
    write_table(ROWS, COLUMNS, out, width)
    return out.getvalue().splitlines()


def test_without_a_width_nothing_is_cut() -> None:
    lines = _table(None)

    assert lines[2].split() == [ROWS[0]["task_id"], "PROCESSING-AND-WAITING", "2026"]
    assert ELLIPSIS not in "".join(lines)


def test_a_table_that_fits_exactly_is_not_cut() -> None:
    natural = max(len(line) for line in _table(None))

    assert _table(natural) == _table(None)
    assert ELLIPSIS in "".join(_table(natural - 1))


def test_to_fit_the_widest_text_column_shrinks_first_and_ends_in_an_ellipsis() -> None:
    natural = max(len(line) for line in _table(None))
    lines = _table(natural - 3)

    assert all(len(line) <= natural - 3 for line in lines)
    # received_at (25 wide) is the widest column that may be cut; status (22) keeps its text
    assert lines[3].split() == ["t-1", "FINISH", "2026-11-25T08:00:00+0" + ELLIPSIS]
    assert "PROCESSING-AND-WAITING" in lines[2].split()
    # then both shrink, the first of equals first
    assert _table(natural - 4)[2].split()[1] == "PROCESSING-AND-WAITI" + ELLIPSIS


def test_ids_stay_whole_however_narrow_the_terminal() -> None:
    lines = _table(20)

    assert lines[2].split()[0] == ROWS[0]["task_id"]
    assert lines[0].split() == ["task_id", "status", "received_at"]  # headers are floors
    assert lines[3].split()[1:] == ["FINISH", "2026-11-25"[:10] + ELLIPSIS]


def test_fit_widths_stops_at_the_floors() -> None:
    columns = ("event_type", "status", "confirmed_at")

    assert fit_widths(columns, [30, 40, 25], None) == [30, 40, 25]
    assert fit_widths(columns, [30, 40, 25], 30 + 40 + 25 + 4) == [30, 40, 25]
    assert fit_widths(columns, [30, 40, 25], 30 + 40 + 25 + 3) == [30, 39, 25]
    assert fit_widths(columns, [30, 40, 25], 1) == [30, 6, 12]


def test_tail_columns_widen_for_the_backlog_and_later_ids_overflow_whole() -> None:
    long_id = "1256712345-Procedure-" + "f" * 60
    layout = stream_layout([{"task_id": long_id}], None)
    out = io.StringIO()

    write_stream([{"task_id": long_id}], "table", out, header=True, layout=layout)
    write_stream([{"task_id": long_id + "-longer"}], "table", out, header=False, layout=layout)

    lines = out.getvalue().splitlines()
    assert layout.widths[EVENT_COLUMNS.index("task_id")] == len(long_id)
    assert lines[1].split() == [long_id]
    assert lines[2].split() == [long_id + "-longer"]


def test_tail_on_a_terminal_cuts_a_long_status_visibly() -> None:
    row = {"task_id": "t-1", "status": "PROCESSING-" + "y" * 40, "received_at": "2026"}
    layout = stream_layout([], 120)
    out = io.StringIO()

    write_stream([row], "table", out, header=False, layout=layout)

    status = next(cell for cell in out.getvalue().split() if cell.startswith("PROC"))
    assert status.endswith(ELLIPSIS)
    assert row["status"].startswith(status[:-1])
