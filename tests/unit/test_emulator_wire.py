"""`wire`: an entry encoded once, rendered per delivery in a shape, byte for byte what
`json.dumps` would write for the same entry with the shape's null keys added."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vodpoller.emulator import wire
from vodpoller.emulator.shape import OFFICIAL_FIELDS, Shape
from vodpoller.eventtypes import PAYLOAD_FIELD_BY_TYPE, PAYLOAD_FIELDS


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def shaped(entry: dict[str, Any], shape: Shape, handle: str | None) -> dict[str, Any]:
    """What a rendered entry must decode to, built the plain way."""
    result: dict[str, Any] = {} if handle is None else {"EventHandle": handle}
    result.update({k: v for k, v in entry.items() if k != "EventHandle"})
    key = wire.payload_key(entry)
    if key is not None:
        result[key] = {**entry[key], **dict.fromkeys(shape.payload_nulls(tuple(entry[key])))}
    for name in shape.top_level_nulls(tuple(result)):
        result[name] = None
    return result


names = st.text(min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
entries = st.dictionaries(names, values, max_size=5).flatmap(
    lambda rest: st.sampled_from([*PAYLOAD_FIELD_BY_TYPE, "SomethingNew"]).flatmap(
        lambda event_type: st.dictionaries(names, values, max_size=4).map(
            lambda payload: {
                "EventType": event_type,
                PAYLOAD_FIELD_BY_TYPE.get(event_type, "SomethingNewEvent"): payload,
                **{k: v for k, v in rest.items() if not isinstance(v, dict)},
            }
        )
    )
)
shapes = st.builds(
    Shape,
    null_keys=st.lists(names.filter(lambda n: n != "EventHandle"), max_size=3).map(tuple),
    payload_null_keys=st.lists(names, max_size=3).map(tuple),
    official=st.booleans(),
)


@given(entry=entries)
def test_an_entry_is_encoded_exactly_as_json_dumps_writes_it(entry: dict[str, Any]) -> None:
    encoded = wire.encode({"EventHandle": "dropped", **entry})
    assert encoded.text == dumps(entry)
    assert wire.render(encoded) == dumps(entry)
    assert wire.decode(encoded) == entry


@given(entry=entries, shape=shapes, handle=st.none() | st.text(max_size=40))
def test_rendering_in_a_shape_adds_exactly_its_null_keys(
    entry: dict[str, Any], shape: Shape, handle: str | None
) -> None:
    rendered = wire.render(wire.encode(entry), shape, handle)
    expected = shaped(entry, shape, handle)
    assert json.loads(rendered) == expected
    assert rendered == dumps(expected)  # the same order, and no key twice


def test_official_shape_has_every_payload_field_in_the_sdk_order() -> None:
    entry = {"EventType": "PullComplete", "PullCompleteEvent": {"TaskId": "t"}}
    rendered = json.loads(wire.render(wire.encode(entry), Shape(official=True), "h"))
    assert set(OFFICIAL_FIELDS) == PAYLOAD_FIELDS
    assert len(OFFICIAL_FIELDS) == 37
    assert list(rendered) == ["EventHandle", "EventType", "PullCompleteEvent"] + [
        f for f in OFFICIAL_FIELDS if f != "PullCompleteEvent"
    ]
    assert rendered["PullCompleteEvent"] == {"TaskId": "t"}
    assert all(rendered[f] is None for f in OFFICIAL_FIELDS if f != "PullCompleteEvent")


@pytest.mark.parametrize(
    ("entry", "payload"),
    [
        ({"EventType": "FileDeleted", "FileDeleteEvent": {"A": 1}}, "FileDeleteEvent"),
        # The table's field is not an object: the one object-valued key instead.
        ({"EventType": "FileDeleted", "FileDeleteEvent": None, "Other": {}}, "Other"),
        ({"EventType": "Unknown", "Mine": {"A": 1}, "Note": "x"}, "Mine"),
        ({"EventType": "Unknown", "One": {}, "Two": {}}, None),  # which one? none
        ({"EventType": ["not", "a", "name"], "One": {}}, "One"),
        ({"EventType": "Unknown"}, None),
    ],
)
def test_payload_is_the_tables_object_else_the_only_object(
    entry: dict[str, Any], payload: str | None
) -> None:
    assert wire.payload_key(entry) == payload
    rendered = json.loads(wire.render(wire.encode(entry), Shape(payload_null_keys=("New",))))
    for key, value in entry.items():
        if key == payload:
            assert rendered[key] == {**value, "New": None}
        else:
            assert rendered[key] == value


def test_keys_present_keep_their_values() -> None:
    entry = {"EventType": "FileDeleted", "FileDeleteEvent": {"New": 1}, "Top": "kept"}
    shape = Shape(null_keys=("Top", "Added"), payload_null_keys=("New",), official=True)
    rendered = json.loads(wire.render(wire.encode(entry), shape))
    assert rendered["Top"] == "kept"
    assert rendered["FileDeleteEvent"] == {"New": 1}
    assert rendered["Added"] is None


def test_empty_entry_and_empty_payload_render_as_valid_json() -> None:
    shape = Shape(null_keys=("A",), payload_null_keys=("B",))
    assert wire.render(wire.encode({})) == b"{}"
    assert wire.render(wire.encode({}), handle="h") == b'{"EventHandle": "h"}'
    assert json.loads(wire.render(wire.encode({}), shape, "h")) == {"EventHandle": "h", "A": None}
    empty_payload = {"EventType": "FileDeleted", "FileDeleteEvent": {}}
    assert json.loads(wire.render(wire.encode(empty_payload), shape)) == {
        "EventType": "FileDeleted",
        "FileDeleteEvent": {"B": None},
        "A": None,
    }


def test_a_handle_that_needs_escaping_is_escaped() -> None:
    rendered = wire.render(wire.encode({"A": 1}), handle='odd"handle\\')
    assert json.loads(rendered) == {"EventHandle": 'odd"handle\\', "A": 1}


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"Note": "cut \ud83d"}, "lone surrogate (\\ud83d)"),
        ({"\udc00": 1}, "lone surrogate (\\udc00)"),
        ({"Deep": {"In": ["x", "\ud800"]}}, "lone surrogate"),
        ({1: "a key that is not a string"}, "not JSON"),
        ({"Set": {1, 2}}, "not JSON"),
    ],
)
def test_an_entry_that_cannot_be_served_is_refused_with_the_reason(
    entry: dict[Any, Any], reason: str
) -> None:
    with pytest.raises(wire.UnservableError, match=re.escape(reason)):
        wire.encode(entry)


def test_an_entry_nested_deeper_than_the_encoder_goes_is_refused() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(wire.UnservableError, match="nested too deeply"):
        wire.encode({"Deep": deep})


def test_an_answer_with_rendered_entries_is_the_json_of_the_same_answer() -> None:
    entries: list[dict[str, Any]] = [{"EventType": "A", "X": {"Y": 1}}, {"EventType": "B"}]
    rendered = [wire.render(wire.encode(e), handle=f"h{i}") for i, e in enumerate(entries)]
    expected = {
        "Response": {
            "EventSet": [{"EventHandle": f"h{i}", **e} for i, e in enumerate(entries)],
            "RequestId": "r",
        }
    }
    assert wire.answer({"EventSet": rendered, "RequestId": "r"}) == dumps(expected)
    for plain in ({"EventSet": [], "RequestId": "r"}, {"Error": {"Code": "X"}, "RequestId": "r"}):
        assert wire.answer(plain) == dumps({"Response": plain})
