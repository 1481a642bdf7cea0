"""`envelope`: an answer's Response read by hand around json, each EventSet entry kept as
received with its handle and its problem; `Batch` views over them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vodpoller.envelope import (
    MAX_DEPTH,
    Delivery,
    UnreadableError,
    delivery_of,
    kind,
    read_answer,
    read_pushed,
)
from vodpoller.events import content_key
from vodpoller.rawjson import RawNumber
from vodpoller.source import Batch


def event_set(*entries: str, extra: str = "") -> bytes:
    return ('{"Response": {' + extra + '"EventSet": [' + ", ".join(entries) + "]}}").encode()


def deliveries(*entries: str) -> tuple[Delivery, ...]:
    answer = read_answer(event_set(*entries))
    assert answer.event_set is not None
    return answer.event_set


def test_an_entry_keeps_its_text_exactly_as_received() -> None:
    text = '{ "EventHandle" :"h\\u0041\\/1",\n  "N": 1.50, "X": 1e400 }'

    [delivery] = deliveries(text)

    assert delivery.text == text
    assert delivery.handle == "hA/1"
    assert delivery.entry == {"EventHandle": "hA/1", "N": 1.5, "X": RawNumber("1e400")}
    assert delivery.problem is None


def test_valid_utf8_beyond_ascii_is_no_problem() -> None:
    [delivery] = deliveries('{"EventHandle": "句柄", "Note": "✓ 😀"}')
    assert (delivery.handle, delivery.problem) == ("句柄", None)


@pytest.mark.parametrize(
    ("levels", "problem"),
    [(MAX_DEPTH - 1, None), (MAX_DEPTH, "nested more than 30 levels deep")],
)
def test_an_entry_may_nest_30_levels_itself_included(levels: int, problem: str | None) -> None:
    [delivery] = deliveries('{"EventHandle": "h", "D": ' + "[" * levels + "]" * levels + "}")
    assert delivery.problem == problem
    assert delivery.handle == "h"


def test_the_handle_of_an_entry_json_refuses_is_found_beside_the_trouble() -> None:
    entries = deliveries(
        '{"EventType": "X", "Bad": [1, 2,], "EventHandle": "after"}',
        '{"EventHandle": "before", "Bad": tru}',
        '{"Bad": "\x01", "EventHandle": 5}',
    )

    assert [(d.handle, d.problem) for d in entries] == [
        ("after", "not valid JSON: Expecting value"),
        ("before", "not valid JSON: Expecting value"),
        (
            None,
            "not valid JSON: Invalid control character at; EventHandle is a number, not a string",
        ),
    ]


def test_problems_are_reported_together() -> None:
    [delivery] = (
        read_answer(
            b'{"Response": {"EventSet": [{"A": "\xff", "D": ' + b"[" * 70 + b"]" * 70 + b"}]}}"
        ).event_set
        or ()
    )

    assert delivery.problem == (
        "the entry is not valid UTF-8; nested more than 30 levels deep; no EventHandle"
    )
    assert delivery.text.startswith('{"A": "\ufffd", "D": [[[')


def test_an_element_that_is_no_entry_at_all_is_a_bad_entry_not_a_bad_answer() -> None:
    entries = deliveries("[" * 3000 + "]" * 3000, '{"EventHandle": "h"}', '"unterminated')

    assert [(d.handle, d.problem) for d in entries] == [
        (None, "nested more than 30 levels deep"),
        ("h", None),
        (None, "not valid JSON: Unterminated string starting at"),
    ]


def test_duplicate_keys_mean_the_last_one_as_json_reads_them() -> None:
    answer = read_answer(
        b'{"Response": {"EventSet": []}, "Response": {"EventSet": [{"EventHandle": "a",'
        b' "EventHandle": "b"}], "RequestId": "r2"}}'
    )
    assert answer.request_id == "r2"
    assert [d.handle for d in answer.event_set or ()] == ["b"]


def test_whitespace_anywhere_json_allows_it_is_fine() -> None:
    answer = read_answer(b' \r\n\t{ "Response" : { "EventSet" : [ ] , "RequestId" : "r" } }\n ')
    assert (answer.event_set, answer.request_id) == ((), "r")


@pytest.mark.parametrize(
    ("request_id", "expected"),
    [("6f0d-req", "6f0d-req"), ("", None), ("a b", None), (12, None), ("x" * 129, None)],
)
def test_a_request_id_is_kept_only_when_fit_to_print(request_id: Any, expected: str | None) -> None:
    answer = read_answer(json.dumps({"Response": {"RequestId": request_id}}).encode())
    assert answer.request_id == expected


def test_an_error_keeps_its_code_and_message_and_other_fields() -> None:
    answer = read_answer(
        b'{"Response": {"Error": {"Code": "InternalError", "Message": 5}, "Extra": [1]}}'
    )
    assert (answer.error_code, answer.error_message, answer.fields) == (
        "InternalError",
        "",
        {"Extra": [1]},
    )
    assert answer.event_set is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"   ", "an empty body"),
        (b"42", "the answer is a number, not a JSON object"),
        (b"{", "expected a key at character 1, found the end"),
        (b'{"Response": {"EventSet": [1 2]}}', "expected ',' or ']' at character 29"),
        (b'{"Response": {"EventSet": [,]}}', "a value is missing at character 27"),
        (b'{"Response": {"EventSet": [{"EventHandle": "h", "A": "x', "ends inside a value"),
        (b'{"Response": {} "x": 1}', "expected ',' or '}'"),
        (b'{"Response" 1}', "expected ':'"),
        (b"{1: 2}", "expected a key"),
        (
            b'{"Response": {"EventSet": ' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}}",
            "EventSet is nested more than 30 levels deep",
        ),
        (b'{"Response": {"EventSet": {"a": tru}}}', "EventSet is not valid JSON: Expecting"),
        (b'{"Response": nul}', "Response is not valid JSON: Expecting value"),
        (b'{"Response": {"Error": ' + b"[" * 70 + b"]" * 70 + b"}}", "Error without a Code"),
    ],
)
def test_an_answer_that_cannot_be_read_as_a_whole_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(UnreadableError) as caught:
        read_answer(body)
    assert reason in str(caught.value)


# -- entries handed over parsed (the in-process queue) ----------------------------------------


def test_an_entry_handed_over_parsed_is_judged_as_one_from_the_network() -> None:
    good = delivery_of({"EventHandle": "h", "Note": "cut \ud83d"})
    assert (good.handle, good.problem, good.text) == (
        "h",
        None,
        '{"EventHandle": "h", "Note": "cut \\ud83d"}',
    )
    assert delivery_of(["not", "an", "object"]).problem == "the entry is a list, not an object"
    assert delivery_of({"EventHandle": ""}).problem == "EventHandle is empty"


def test_a_deep_entry_handed_over_parsed_keeps_its_handle() -> None:
    deep: Any = "bottom"
    for _ in range(5000):
        deep = {"d": deep}

    delivery = delivery_of({"EventHandle": "h-deep", "D": deep})

    assert delivery.handle == "h-deep"
    assert delivery.problem == "nested more than 30 levels deep"
    assert delivery.text == "<an entry json cannot write: RecursionError>"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "null"),
        (True, "a boolean"),
        (1, "a number"),
        (RawNumber("1e400"), "a number"),
        ("", "a string"),
        ([], "a list"),
        ({}, "an object"),
    ],
)
def test_kinds_of_json_values_read_well_in_messages(value: Any, said: str) -> None:
    assert kind(value) == said


# -- Batch ------------------------------------------------------------------------------------


def test_a_batch_counts_every_entry_and_sorts_good_from_bad() -> None:
    batch = Batch(None, deliveries('{"EventHandle": "a"}', "5", '{"EventHandle": "b", "X": NaN}'))

    assert len(batch) == 3
    assert batch.entries == ({"EventHandle": "a"},)
    assert [d.handle for d in batch.rejects] == [None, "b"]
    assert bool(Batch(None)) is False


def test_a_pushed_body_drops_the_callback_signature_and_keeps_its_numbers_as_written() -> None:
    unsigned = b'{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"5285","Size":1e400}}'
    signed = unsigned[:-1] + b',"Sign":"ab12","T":"6f1e"}'

    delivery = read_pushed(signed)

    assert delivery.entry is not None
    assert set(delivery.entry) == {"EventType", "FileUploadEvent"}
    assert "1e400" in delivery.text
    assert "Sign" not in delivery.text
    assert content_key(delivery.entry, None) == content_key(read_pushed(unsigned).entry or {}, None)


def test_a_pushed_body_without_signature_is_kept_byte_for_byte() -> None:
    body = '{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["1"]}}'

    assert read_pushed(body.encode()).text == body
