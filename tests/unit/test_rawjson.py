"""`rawjson`: numbers a float cannot hold come back as written, nesting is bounded without
recursion, and the output is valid JSON, the same for the same value."""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vodpoller import rawjson
from vodpoller.rawjson import RawNumber, TooDeepError

ORDINARY = [
    {"EventHandle": "h", "EventType": "NewFileUpload", "N": [1, -2, 0.5, 1e300, True, None]},
    [],
    {},
    "text with \u4e8b and \ud83d a lone half",
    {"b": {"c": [1, {"d": "x"}]}, "a": 2.25},
]


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_json_reads_and_writes_as_the_json_module_does(value: Any) -> None:
    text = json.dumps(value)
    assert rawjson.loads(text) == json.loads(text)
    assert rawjson.dumps(value) == json.dumps(value, ensure_ascii=False)
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert rawjson.dumps(value, sort_keys=True, separators=(",", ":")) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "1e400",
        "-1E+400",
        "1e-400",
        "12345678901234567890.123456789",
        "0.10000000000000000555",
        "9" * 5000,
        "-" + "1" * 4301,
    ],
)
def test_a_number_a_float_or_int_cannot_hold_is_kept_as_written(text: str) -> None:
    value = rawjson.loads(f'{{"n": {text}}}')

    assert value == {"n": RawNumber(text)}
    assert rawjson.dumps(value) == f'{{"n": {text}}}'


@pytest.mark.parametrize(
    ("text", "value"),
    [("1.50", 1.5), ("1e2", 100.0), ("0.1", 0.1), ("-0.0", -0.0), ("5e-324", 5e-324)],
)
def test_a_float_that_means_the_same_value_stays_a_float(text: str, value: float) -> None:
    parsed = rawjson.loads(text)
    assert type(parsed) is float
    assert parsed == value


def test_integers_up_to_the_conversion_limit_stay_exact_ints() -> None:
    text = "1" * rawjson.MAX_INT_DIGITS
    assert rawjson.loads(text) == int(text)
    assert rawjson.loads("123456789012345678901234567890") == 123456789012345678901234567890


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_nan_and_infinity_are_not_json(text: str) -> None:
    with pytest.raises(ValueError, match="is not a JSON value"):
        rawjson.loads(text)


@pytest.mark.parametrize("value", [float("inf"), [float("nan")], {"a": float("-inf")}])
def test_writing_a_float_that_is_not_finite_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        rawjson.dumps(value)


@pytest.mark.parametrize("text", ["", "{", '{"a":1} x', "[1,]", "\ufeff{}"])
def test_text_that_is_not_one_json_document_is_refused(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        rawjson.loads(text)


def test_writing_something_json_does_not_know_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        rawjson.dumps({"a": {1, 2}})


# -- depth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 0), ("s", 0), ({}, 1), ([1, 2], 1), ({"a": [1, {"b": []}]}, 4), ([[], [[[]]]], 4)],
)
def test_depth_counts_nested_objects_and_lists(value: Any, expected: int) -> None:
    assert rawjson.depth(value) == expected


def test_depth_of_a_very_deep_value_is_measured_without_recursion() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    assert rawjson.depth(value) == 100_001
    assert rawjson.depth(value, beyond=64) == 65
    assert rawjson.depth([[[]]], beyond=64) == 3


def test_max_depth_is_the_deepest_allowed() -> None:
    assert rawjson.loads("[" * 64 + "]" * 64, max_depth=64) is not None
    with pytest.raises(TooDeepError, match="nested more than 64 levels deep"):
        rawjson.loads("[" * 65 + "]" * 65, max_depth=64)


def test_a_document_too_deep_for_the_parser_is_too_deep_not_a_recursion_error() -> None:
    with pytest.raises(TooDeepError):
        rawjson.loads("[" * 200_000 + "]" * 200_000)


def test_decode_gives_where_the_value_ends() -> None:
    assert rawjson.decode('xx {"a": 1e400} yy', 3) == ({"a": RawNumber("1e400")}, 15)


# -- writing ----------------------------------------------------------------------------------


def test_raw_numbers_are_written_in_place_with_any_options() -> None:
    value = {"z": RawNumber("1e400"), "a": [RawNumber("-0.1000000000000000055"), 2]}

    assert rawjson.dumps(value, sort_keys=True, separators=(",", ":")) == (
        '{"a":[-0.1000000000000000055,2],"z":1e400}'
    )


def test_the_same_value_is_written_the_same_way_every_time() -> None:
    value = {"n": [RawNumber("1e400")] * 3, "s": "事"}
    assert len({rawjson.dumps(value, ensure_ascii=True) for _ in range(5)}) == 1


def test_a_value_holding_the_marker_text_is_still_written_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = iter(["a" * 32, "b" * 32])
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(tokens))
    sneaky = f"rawjson-{'a' * 32}-0"
    value = {"s": sneaky, "n": RawNumber("1e400")}

    text = rawjson.dumps(value)

    assert text == f'{{"s": "{sneaky}", "n": 1e400}}'


def test_a_raw_number_compares_by_its_text() -> None:
    assert RawNumber("1e400") == RawNumber("1e400")
    assert RawNumber("1e400") != RawNumber("1E400")
    assert RawNumber("1e400") != "1e400"
    assert len({RawNumber("1"), RawNumber("1")}) == 1
    assert repr(RawNumber("1e400")) == "RawNumber('1e400')"
    assert float(RawNumber("1e400")) == float("inf")


NUMBER_TEXT = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?\Z", fullmatch=True
)


@given(NUMBER_TEXT)
def test_every_json_number_is_written_back_with_the_same_value(text: str) -> None:
    written = rawjson.dumps(rawjson.loads(text))
    assert Decimal(written) == Decimal(text)
    assert json.loads(written) is not None  # valid JSON


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | NUMBER_TEXT.map(rawjson.loads),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_what_is_written_reads_back_as_the_same_value(value: Any) -> None:
    assert rawjson.loads(rawjson.dumps(value)) == value
    assert rawjson.loads(rawjson.dumps(value, sort_keys=True, ensure_ascii=True)) == value
