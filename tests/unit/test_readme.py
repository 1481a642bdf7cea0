"""What the README promises about the table holds for the code."""

from __future__ import annotations

import re
from pathlib import Path

from vodpoller.events import parse_entry

ROOT = Path(__file__).resolve().parents[2]
TEXT_COLUMNS = {
    "event_type",
    "event_handle",
    "task_id",
    "file_id",
    "status",
    "message",
    "file_url",
    "session_context",
    "session_id",
}


def _cuts_in_the_readme() -> dict[str, int]:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    paragraph = readme[readme.index("The typed columns are conveniences") :].split("```", 1)[0]
    cuts: dict[str, int] = {}
    for columns, length in re.findall(
        r"((?:`[a-z_]+`,? )+and `[a-z_]+`) at (\d+) characters", paragraph
    ):
        for column in re.findall(r"`([a-z_]+)`", columns):
            cuts[column] = int(length)
    return cuts


def test_the_readme_says_where_each_text_column_is_cut_and_payload_keeps_everything() -> None:
    cuts = _cuts_in_the_readme()
    long = "v" * 10_000
    entry = {
        "EventHandle": "h" + long,
        "EventType": "T" + long,  # unknown: the payload is the one object in the entry
        "SomeNewEvent": {
            "TaskId": long,
            "FileId": long,
            "Status": long,
            "Message": long,
            "FileUrl": long,
            "SessionContext": long,
            "SessionId": long,
        },
    }

    event = parse_entry(entry, None)

    assert set(cuts) == TEXT_COLUMNS
    assert {column: len(getattr(event, column)) for column in TEXT_COLUMNS} == cuts
    assert event.payload == entry
