"""JSON that keeps what it was given: numbers a float cannot hold (1e400, more digits than a
double keeps) survive `loads` -> `dumps` as their original text, nesting is bounded, and the
output is always valid JSON (never Infinity or NaN)."""

from __future__ import annotations

import json
import math
import re
import secrets
from decimal import Decimal
from typing import Any, Final

# Python refuses to turn longer digit strings into int (CVE-2020-10735); such an integer is
# kept as text instead of failing the whole document.
MAX_INT_DIGITS: Final = 4300


class RawNumber:
    """A JSON number kept as the text it was written with, because float would change it."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"RawNumber({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __float__(self) -> float:
        """The nearest float: may be rounded, or infinite."""
        return float(self.text)


class TooDeepError(ValueError):
    """The document nests objects and arrays deeper than allowed."""


def _number_from_float_text(text: str) -> float | RawNumber:
    number = float(text)
    if repr(number) == text:  # the common case: "1.5", "0.25"
        return number
    # Same value written differently ("1.50", "1e2") is fine; a value float rounded or
    # overflowed (12345678901234567890.123456789, 1e400, 1e-400) is not.
    if not math.isinf(number) and Decimal(repr(number)) == Decimal(text):
        return number
    return RawNumber(text)


def _number_from_int_text(text: str) -> int | RawNumber:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return RawNumber(text)
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER: Final = json.JSONDecoder(
    parse_float=_number_from_float_text, parse_constant=_refuse_constant
)
_HUGE_INT_DECODER: Final = json.JSONDecoder(
    parse_float=_number_from_float_text,
    parse_int=_number_from_int_text,
    parse_constant=_refuse_constant,
)
_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")


def depth(value: Any, *, beyond: int | None = None) -> int:
    """How many objects and arrays nest at the deepest point (a scalar: 0, `{}`: 1), level by
    level without recursion; with `beyond`, counting stops once past that many levels."""
    # Exact type checks: values come from the JSON decoder, and this runs for every entry.
    level = [value] if type(value) in (dict, list) else []
    deepest = 0
    while level and (beyond is None or deepest <= beyond):
        deepest += 1
        below: list[Any] = []
        add = below.append
        for container in level:
            for child in container.values() if type(container) is dict else container:
                kind = type(child)
                if kind is dict or kind is list:
                    add(child)
        level = below
    return deepest


def _raw_decode(text: str, start: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # An integer with more digits than int() accepts: decode again keeping it as text.
        return _HUGE_INT_DECODER.raw_decode(text, start)


def decode(text: str, start: int = 0, *, max_depth: int | None = None) -> tuple[Any, int]:
    """The JSON value that begins at `start` and where it ends. Raises `TooDeepError` beyond
    `max_depth` (or deeper than the interpreter can parse), `ValueError` if not JSON."""
    try:
        value, end = _raw_decode(text, start)
    except RecursionError:
        raise TooDeepError("nested too deep to parse") from None
    if (
        max_depth is not None
        and not _shallow(text, start, end, max_depth)
        and depth(value, beyond=max_depth) > max_depth
    ):
        raise TooDeepError(f"nested more than {max_depth} levels deep")
    return value, end


def _shallow(text: str, start: int, end: int, max_depth: int) -> bool:
    """No deeper than `max_depth` for sure: it opens no more objects and arrays than that in
    all (brackets inside strings counted too). Two C-speed counts spare most documents the
    walk; the others are walked."""
    return text.count("{", start, end) + text.count("[", start, end) <= max_depth


def loads(text: str, *, max_depth: int | None = None) -> Any:
    """Parse a JSON document; numbers a float cannot hold come back as `RawNumber`."""
    start = _WHITESPACE.match(text).end()  # type: ignore[union-attr]  # always matches
    value, end = decode(text, start, max_depth=max_depth)
    end = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def dumps(
    value: Any,
    *,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
    ensure_ascii: bool = False,
) -> str:
    """`json.dumps` at C speed, writing each `RawNumber` back as its text; the same value and
    options give the same text. Floats that are not finite are refused (`ValueError`)."""
    numbers: list[str] = []
    marker = ""

    def default(item: Any) -> Any:
        nonlocal marker
        if isinstance(item, RawNumber):
            # The encoder cannot write raw text: leave a unique string and swap it afterwards.
            marker = marker or f"rawjson-{secrets.token_hex(16)}-"
            numbers.append(item.text)
            return f"{marker}{len(numbers) - 1}"
        raise TypeError(f"{type(item).__name__} is not JSON serializable")

    text = json.dumps(
        value,
        default=default,
        sort_keys=sort_keys,
        separators=separators,
        ensure_ascii=ensure_ascii,
        allow_nan=False,
    )
    if not numbers:
        return text
    if text.count(marker) != len(numbers):
        # The value itself holds the random marker: astronomically unlikely; draw another.
        return dumps(value, sort_keys=sort_keys, separators=separators, ensure_ascii=ensure_ascii)
    pattern = re.compile(f'"{re.escape(marker)}([0-9]+)"')
    return pattern.sub(lambda match: numbers[int(match[1])], text)
