"""Pure: the body of an API answer -> its `Response`, each `EventSet` entry kept as received
(its raw text, the object, the handle, what is wrong with it) so that one bad entry never
spoils the rest of its batch. Only an answer that cannot be read as a whole is refused."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from vodpoller import rawjson

# Deepest nesting an entry may have, itself included: real events nest under ten levels, and
# MariaDB's JSON refuses more than 31 (MySQL's 100), so whatever passes can be stored, even
# wrapped once. Deeper entries are reported, not parsed into the batch.
MAX_DEPTH: Final = 30
MAX_REQUEST_ID: Final = 128
_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
# Strings and brackets: enough to find where a value ends when json cannot parse it.
_TOKENS: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
# Bytes that were not UTF-8, as `surrogateescape` decoding leaves them in the text.
_NOT_UTF8: Final = re.compile("[\udc80-\udcff]")
_PRINTABLE_ID: Final = re.compile(r"[\x21-\x7e]{1,128}")


class UnreadableError(ValueError):
    """The answer as a whole cannot be read (not JSON, no Response, ...): nothing in it is used."""


@dataclass(frozen=True)
class Delivery:
    """One `EventSet` entry as it came.

    `text`: its JSON text as received (bytes that were not UTF-8 shown as U+FFFD).
    `entry`: the parsed object when nothing is wrong with it, else None.
    `handle`: the `EventHandle` to confirm, exactly as received, or None if it has none usable.
    `problem`: why the entry cannot be stored as an event (it can be kept raw), or None.
    An entry can have a problem and still a handle: confirm it once the entry is kept."""

    text: str
    entry: dict[str, Any] | None
    handle: str | None
    problem: str | None


@dataclass(frozen=True)
class Answer:
    """A `Response` object: its error, if any, its RequestId and its other fields."""

    request_id: str | None = None
    error_code: str | None = None
    error_message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    event_set: tuple[Delivery, ...] | None = None  # None: no EventSet, or null


@dataclass(frozen=True)
class _Malformed:
    """A value json could not parse; the cursor has moved past it."""

    reason: str


def kind(value: Any) -> str:
    """What a JSON value is, for messages: 'a string', 'null', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | rawjson.RawNumber):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


class _Cursor:
    """Walks a JSON text by hand where the shape matters (the envelope, an EventSet), and
    lets the json module parse each value in between at C speed."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        self.pos = _WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
        return self.text[self.pos : self.pos + 1]

    def _expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            found = repr(self.text[self.pos : self.pos + 12]) if self.pos < len(self.text) else ""
            raise UnreadableError(
                f"expected {what} at character {self.pos}"
                + (f", found {found}" if found else ", found the end")
            )
        self.pos += 1

    def members(self) -> Iterator[str]:
        """The keys of the object here; the caller reads each value before asking for more."""
        self._expect("{", "an object")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            if self.peek() != '"':
                self._expect('"', "a key")
            try:
                key, self.pos = rawjson.decode(self.text, self.pos)
            except ValueError:
                raise UnreadableError(f"a key that is not a string at {self.pos}") from None
            self._expect(":", "':'")
            yield key
            if self.peek() == ",":
                self.pos += 1
                continue
            self._expect("}", "',' or '}'")
            return

    def elements(self) -> Iterator[int]:
        """Where each element of the array here begins; the caller reads it in between."""
        self._expect("[", "a list")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            self.peek()
            yield self.pos
            if self.peek() == ",":
                self.pos += 1
                continue
            self._expect("]", "',' or ']'")
            return

    def value(self) -> Any:
        """The value here, or `_Malformed` when json refuses it but its end can be found."""
        self.peek()
        start = self.pos
        try:
            value, self.pos = rawjson.decode(self.text, start, max_depth=MAX_DEPTH)
        except rawjson.TooDeepError:
            reason = f"nested more than {MAX_DEPTH} levels deep"
        except ValueError as error:
            detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
            reason = f"not valid JSON: {detail}"
        else:
            return value
        self.pos = _extent(self.text, start)
        if self.pos == start:
            raise UnreadableError(f"a value is missing at character {start}")
        return _Malformed(reason)

    def finish(self) -> None:
        if self.peek():
            raise UnreadableError(f"more text after the answer, at character {self.pos}")


def _extent(text: str, start: int) -> int:
    """Where the value that begins at `start` ends, by strings and brackets alone."""
    depth = 0
    for match in _TOKENS.finditer(text, start):
        piece = match.group()
        if piece in ("[", "{"):
            depth += 1
        elif piece in ("]", "}", ","):
            if depth == 0:
                return match.start()  # the container around the value goes on or ends
            if piece != ",":
                depth -= 1
                if depth == 0:
                    return match.end()
        elif depth == 0:
            return match.end()  # a string on its own
    raise UnreadableError("the answer ends inside a value (truncated?)")


def read_answer(body: bytes) -> Answer:
    """The `Response` of an answer. Raises `UnreadableError` if it has none that can be read."""
    if body.startswith(codecs.BOM_UTF8):  # not JSON, but harmless to ignore (RFC 8259)
        body = body[len(codecs.BOM_UTF8) :]
    text = body.decode("utf-8", "surrogateescape")
    if not text.strip():
        raise UnreadableError("an empty body")
    cursor = _Cursor(text)
    if cursor.peek() != "{":
        try:
            what = kind(rawjson.loads(text, max_depth=MAX_DEPTH))
        except ValueError:
            raise UnreadableError("the answer is not JSON") from None
        raise UnreadableError(f"the answer is {what}, not a JSON object")
    answer: Answer | None = None
    for key in cursor.members():
        if key == "Response":
            answer = _response(cursor)
        else:
            cursor.value()
    cursor.finish()
    if answer is None:
        raise UnreadableError("the answer has no Response")
    return answer


def _response(cursor: _Cursor) -> Answer:
    if cursor.peek() != "{":
        raise _not_a("Response", cursor.value(), "an object")
    fields: dict[str, Any] = {}
    event_set: tuple[Delivery, ...] | None = None
    for key in cursor.members():
        if key == "EventSet":
            event_set = _event_set(cursor)
        else:
            fields[key] = cursor.value()
    error = fields.pop("Error", None)
    request_id = fields.pop("RequestId", None)
    if not (isinstance(request_id, str) and _PRINTABLE_ID.fullmatch(request_id)):
        request_id = None  # absent, or nothing fit to print: the answer is still good
    if error is None:
        return Answer(request_id, fields=fields, event_set=event_set)
    if not isinstance(error, dict) or not isinstance(error.get("Code"), str):
        raise UnreadableError("Response.Error without a Code")
    message = error.get("Message")
    return Answer(
        request_id,
        error_code=error["Code"],
        error_message=message if isinstance(message, str) else "",
        fields=fields,
    )


def _not_a(name: str, value: Any, wanted: str) -> UnreadableError:
    if isinstance(value, _Malformed):
        return UnreadableError(f"{name} is {value.reason}")
    return UnreadableError(f"{name} is {kind(value)}, not {wanted}")


def _event_set(cursor: _Cursor) -> tuple[Delivery, ...] | None:
    if cursor.peek() != "[":
        value = cursor.value()
        if value is None:
            return None
        raise _not_a("EventSet", value, "a list")
    deliveries = []
    for start in cursor.elements():
        value = cursor.value()
        deliveries.append(_delivery(cursor.text[start : cursor.pos], value))
    return tuple(deliveries)


def _members_of_malformed(text: str) -> dict[str, Any]:
    """The top-level members of an entry json refused, as far as they can be read: enough to
    find its EventHandle when the trouble is elsewhere (too deep, a bad value)."""
    cursor = _Cursor(text)
    found: dict[str, Any] = {}
    if cursor.peek() != "{":
        return found
    try:
        for key in cursor.members():
            found[key] = cursor.value()
    except UnreadableError:
        pass
    return found


def _delivery(text: str, value: Any, *, depth_checked: bool = True) -> Delivery:
    problems: list[str] = []
    shown = text
    not_utf8 = _NOT_UTF8.search(text) is not None
    if not_utf8:
        problems.append("the entry is not valid UTF-8")
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, _Malformed):
        problems.append(value.reason)
        if not text.lstrip().startswith("{"):
            return Delivery(shown, None, None, "; ".join(problems))
        members = _members_of_malformed(text)
    elif isinstance(value, dict):
        members = value
        if not depth_checked and rawjson.depth(value, beyond=MAX_DEPTH) > MAX_DEPTH:
            problems.append(f"nested more than {MAX_DEPTH} levels deep")
    else:
        problems.append(f"the entry is {kind(value)}, not an object")
        return Delivery(shown, None, None, "; ".join(problems))
    handle, problem = _handle(members.get("EventHandle", _MISSING), not_utf8)
    if problem:
        problems.append(problem)
    if problems:
        return Delivery(shown, None, handle, "; ".join(problems))
    return Delivery(shown, value, handle, None)


_MISSING: Final = _Malformed("missing")


def _handle(value: Any, not_utf8: bool) -> tuple[str | None, str | None]:
    """The handle to confirm, or why there is none."""
    if value is _MISSING:
        return None, "no EventHandle"
    if isinstance(value, _Malformed):
        return None, "EventHandle is not valid JSON"
    if not isinstance(value, str):
        return None, f"EventHandle is {kind(value)}, not a string"
    if not value:
        return None, "EventHandle is empty"
    if not_utf8 and _NOT_UTF8.search(value):
        # Its bytes cannot be sent back as they came: a request must be UTF-8 JSON.
        return None, "EventHandle is not valid UTF-8"
    return value, None


def delivery_of(entry: Any) -> Delivery:
    """An entry already parsed (the in-process queue), judged as one from the network is."""
    try:
        text = rawjson.dumps(entry, ensure_ascii=True)
    except (RecursionError, ValueError, TypeError) as error:
        text = f"<an entry json cannot write: {type(error).__name__}>"
    return _delivery(text, entry, depth_checked=False)


# With a callback SignKey, VOD may add these to a pushed event (where exactly is not
# documented; PROTOCOL.md has nothing on it). They are no part of the event, a pulled copy
# lacks them, and no event type has a top-level key of these names: a pushed body drops them,
# so its content key is the pulled copy's whichever way VOD sends them (body, query, header).
PUSH_SIGNATURE_KEYS: Final = frozenset({"Sign", "T"})


def read_pushed(body: bytes) -> Delivery:
    """A normal-callback body: one entry, as a JSON object (an `EventHandle` in it is no
    problem: a push has nothing to confirm). An object that cannot be an event (nested too
    deep) comes back with its `problem`, to be kept raw; `UnreadableError` for a body that is
    not a UTF-8 JSON object, which nobody can keep."""
    if body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8) :]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableError(f"the body is not UTF-8 (byte {error.start})") from None
    if not text.strip():
        raise UnreadableError("an empty body")
    cursor = _Cursor(text)
    if cursor.peek() != "{":
        try:
            what = kind(rawjson.loads(text, max_depth=MAX_DEPTH))
        except rawjson.TooDeepError:
            what = "a list"  # only a list or an object nests
        except ValueError:
            raise UnreadableError("the body is not JSON") from None
        raise UnreadableError(f"the body is {what}, not a JSON object")
    start = cursor.pos
    try:
        value = cursor.value()
        end = cursor.pos
        cursor.finish()
    except UnreadableError as error:
        raise UnreadableError(str(error).replace("the answer", "the body")) from None
    entry = text[start:end]
    if isinstance(value, _Malformed):
        if value.reason.startswith("nested"):
            return Delivery(text, None, None, value.reason)
        raise UnreadableError(f"the body is {value.reason}")
    if PUSH_SIGNATURE_KEYS & value.keys():
        value = {key: item for key, item in value.items() if key not in PUSH_SIGNATURE_KEYS}
        entry = rawjson.dumps(value)
    return Delivery(entry, value, None, None)
