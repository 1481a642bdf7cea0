"""`pgnotify.payloads`: the new rows of a transaction as NOTIFY payloads under the limit."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from vodpoller.pgnotify import MAX_PAYLOAD_BYTES, payloads

_rows = st.lists(
    st.tuples(st.integers(1, 2**63 - 1), st.text(max_size=40)),
    max_size=400,
    unique_by=lambda r: r[0],
)


def _decoded(texts: list[str]) -> list[tuple[int, str]]:
    rows: list[tuple[int, str]] = []
    for text in texts:
        document = json.loads(text)
        assert set(document) == {"ids", "event_types"}
        rows.extend(zip(document["ids"], document["event_types"], strict=True))
    return rows


def test_nothing_new_is_no_payload() -> None:
    assert list(payloads([])) == []


def test_a_batch_that_fits_is_one_payload_with_ids_and_types_in_order() -> None:
    texts = list(payloads([(7, "NewFileUpload"), (9, "ProcedureStateChanged")]))

    assert texts == ['{"ids":[7,9],"event_types":["NewFileUpload","ProcedureStateChanged"]}']


@given(_rows, st.integers(600, 2000))  # a row alone always fits: real ones are < 1,600 bytes
def test_every_row_is_in_one_payload_in_order_and_each_fits(
    rows: list[tuple[int, str]], limit: int
) -> None:
    texts = list(payloads(rows, limit))

    assert _decoded(texts) == rows
    assert all(len(text.encode()) <= limit for text in texts)


def test_payloads_are_filled_up_to_the_limit_before_the_next_begins() -> None:
    rows = [(row_id, "NewFileUpload") for row_id in range(1000, 2000)]

    texts = list(payloads(rows))

    assert len(texts) > 1
    assert all(len(text) <= MAX_PAYLOAD_BYTES for text in texts)
    # One more row would not have fitted in any full payload.
    per_row = len(',1000,"NewFileUpload"')
    assert all(len(text) + per_row > MAX_PAYLOAD_BYTES for text in texts[:-1])


def test_an_exact_fit_stays_one_payload() -> None:
    rows = [(1, "A"), (2, "B")]
    exact = len('{"ids":[1,2],"event_types":["A","B"]}')

    assert len(list(payloads(rows, exact))) == 1
    assert len(list(payloads(rows, exact - 1))) == 2


def test_a_payload_after_a_split_is_also_filled_to_an_exact_fit() -> None:
    # The long first type pushes row 2 into a second payload, which must count its size afresh
    # (no comma before its first row).
    rows = [(1, "AAAA"), (2, "B"), (3, "C")]
    exact = len('{"ids":[2,3],"event_types":["B","C"]}')

    assert list(payloads(rows, exact)) == [
        '{"ids":[1],"event_types":["AAAA"]}',
        '{"ids":[2,3],"event_types":["B","C"]}',
    ]
    assert len(list(payloads(rows, exact - 1))) == 3
