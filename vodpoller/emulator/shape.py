"""How entries are laid out on every delivery (`POST /_emulator/shape`): the `null` keys that a
later VOD release adds, at the top level and inside the payload, and the official example's
shape, where all 37 payload fields are present and `null` where they do not apply."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from vodpoller.eventtypes import PAYLOAD_FIELD_BY_TYPE

# The SDK's field order, which the official example follows.
OFFICIAL_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(PAYLOAD_FIELD_BY_TYPE.values()))


class Shape(BaseModel):
    """`{}` is the shape entries were enqueued in. Keys already present keep their values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    null_keys: tuple[StrictStr, ...] = Field(default=())
    payload_null_keys: tuple[StrictStr, ...] = Field(default=())
    official: StrictBool = False

    @field_validator("null_keys", "payload_null_keys", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        # A string is a sequence too: "Foo" would become the keys F, o, o.
        if not isinstance(value, list | tuple):
            raise ValueError("must be a list of key names")  # noqa: TRY004 (a user's value)
        return tuple(value)

    @field_validator("null_keys", "payload_null_keys")
    @classmethod
    def _servable_names(cls, names: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for name in names:
            if not name:
                raise ValueError("a key name must not be empty")
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"the key name {name!r} holds a lone surrogate, which UTF-8 cannot carry"
                ) from None
        if info.field_name == "null_keys" and "EventHandle" in names:
            raise ValueError("EventHandle is the handle of a delivery, not a null key")
        return tuple(dict.fromkeys(names))  # a key twice would be a duplicate JSON member

    @property
    def plain(self) -> bool:
        """True when entries go out as they were enqueued."""
        return not (self.null_keys or self.payload_null_keys or self.official)

    @classmethod
    def parse(cls, document: Any) -> Shape:
        """A shape posted by a user; `ValueError` with a readable message."""
        if not isinstance(document, dict):
            raise ValueError(  # noqa: TRY004 (a user's document: reported as a bad value)
                'the shape must be a JSON object: {"null_keys": [...], '
                '"payload_null_keys": [...], "official": true|false}'
            )
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise ValueError(f"bad shape: {problems}") from None

    def top_level_nulls(self, present: frozenset[str] | tuple[str, ...]) -> list[str]:
        """Keys to add, with `null`, to an entry that has the keys `present`."""
        wanted = (*OFFICIAL_FIELDS, *self.null_keys) if self.official else self.null_keys
        return [key for key in dict.fromkeys(wanted) if key not in present]

    def payload_nulls(self, present: frozenset[str] | tuple[str, ...]) -> list[str]:
        """Keys to add, with `null`, to a payload object that has the keys `present`."""
        return [key for key in self.payload_null_keys if key not in present]


PLAIN = Shape()
