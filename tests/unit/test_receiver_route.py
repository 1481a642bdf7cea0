"""The receiver's pure parts: which request targets are its own and for which application
(`route`), and a pushed entry as an event or a reject (`entry_of`). Over real HTTP in
tests/integration/test_receiver.py."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from vodpoller.envelope import Delivery, read_pushed
from vodpoller.receiver import MAX_SUB_APP_ID, entry_of, route
from vodpoller.store import Reject

PATH = "/vod/callback/0123456789abcdef0123"


@pytest.mark.parametrize("target", [PATH, f"{PATH}/", f"{PATH}?sign=1&t=2", f"{PATH}/?a=b"])
def test_the_path_itself_is_the_primary_application(target: str) -> None:
    assert route(target, PATH) == (True, None)


@pytest.mark.parametrize(
    ("target", "sub_app_id"),
    [(f"{PATH}/1", 1), (f"{PATH}/9", 9), (f"{PATH}/1500000001", 1500000001),
     (f"{PATH}/1500000001?sign=1", 1500000001), (f"{PATH}/{MAX_SUB_APP_ID}", 2**63 - 1)],
)  # fmt: skip
def test_the_path_and_a_number_is_that_application(target: str, sub_app_id: int) -> None:
    assert route(target, PATH) == (True, sub_app_id)


def test_a_configured_path_with_a_trailing_slash_matches_with_or_without_it() -> None:
    assert route(PATH, f"{PATH}/") == (True, None)
    assert route(f"{PATH}/", f"{PATH}/") == (True, None)
    assert route(f"{PATH}/7", f"{PATH}/") == (True, 7)


def test_only_slashes_are_taken_off_the_end_of_the_configured_path() -> None:
    token_path = "/vod/callback/0123456789abcdefXX"

    assert route(token_path, token_path) == (True, None)
    assert route(token_path[:-2], token_path) == (False, None)  # a shorter token is another


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "",
        "/vod/callback/wrong-token-0123456789",
        PATH[:-1],  # the token less its last character
        f"{PATH}x",
        f"{PATH}12",  # digits right after the token are not an application
        f"{PATH}x12",
        f"{PATH}//12",
        f"{PATH}/0",
        f"{PATH}/012",
        f"{PATH}/-1",
        f"{PATH}/+1",
        f"{PATH}/1.0",
        f"{PATH}/ 1",
        f"{PATH}/12/",
        f"{PATH}/12/3",
        f"{PATH}/{2**63}",  # past the largest SubAppId
        f"{PATH}/99999999999999999999",
        f"{PATH}/{'1' * 20}",
        f"/prefix{PATH}",
        f"{PATH}/x?sign=1",
    ],
)
def test_any_other_target_is_not_the_receivers(target: str) -> None:
    assert route(target, PATH) == (False, None)


def test_a_query_is_cut_at_its_first_question_mark_only() -> None:
    assert route(f"{PATH}?next=/12?x", PATH) == (True, None)
    assert route(f"/vod?{PATH}", PATH) == (False, None)


def test_a_target_outside_latin_1_is_refused_rather_than_an_error() -> None:
    # http.server decodes request lines as Latin-1, so it never passes one; route stays total.
    assert route(f"{PATH}\u20ac", PATH) == (False, None)
    assert route(f"{PATH}/\u20ac", PATH) == (False, None)


def test_the_path_is_compared_as_the_bytes_sent() -> None:
    # A non-ASCII byte in the request line arrives as its Latin-1 character.
    token = "/vod/callback/t\u00e9-0123456789abcdef"
    assert route(token.encode("utf-8").decode("latin-1"), token) == (True, None)
    assert route(token, token) == (False, None)  # é sent as one Latin-1 byte is not its UTF-8


def test_a_pushed_event_is_one_event_of_that_application() -> None:
    text = '{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "52858"}}'

    events, rejects = entry_of(read_pushed(text.encode()), 1500000001)

    assert rejects == []
    [event] = events
    assert (event.event_type, event.file_id, event.sub_app_id) == (
        "NewFileUpload",
        "52858",
        1500000001,
    )
    assert event.payload_text == text


def test_an_entry_with_a_problem_is_a_reject_with_that_problem() -> None:
    problem = "EventType is not a string"
    delivery = Delivery('{"EventType": 7}', None, None, problem)

    assert entry_of(delivery, None) == ([], [Reject('{"EventType": 7}', None, problem)])


def test_an_entry_with_no_object_and_no_stated_problem_is_not_an_object() -> None:
    delivery = Delivery("[1]", None, "h-1", None)

    assert entry_of(delivery, 5) == ([], [Reject("[1]", None, "not an object")])


def test_an_entry_the_parser_fails_on_is_kept_as_a_reject_naming_the_error() -> None:
    # No entry read from JSON makes parse_entry fail; a value JSON cannot hold stands in.
    delivery = Delivery('{"X": 1}', {"X": object()}, None, None)

    with capture_logs() as logs:
        kept = entry_of(delivery, None)

    assert kept == ([], [Reject('{"X": 1}', None, "vodpoller could not parse it: TypeError")])
    [line] = logs
    assert (line["event"], line["log_level"]) == ("a pushed entry could not be parsed", "error")
    assert isinstance(line["exc_info"], TypeError)  # the traceback of a bug in vodpoller
