"""Shared schema pieces."""

from __future__ import annotations

import types
import typing
import unicodedata
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


class _WrongJsonType:
    """Stands in for a value of the wrong JSON type, so the field's own type check fails
    on it, at the field's location, with pydantic's message ("Input should be a valid
    integer"): ``"nodes": "2"`` and ``"nodes": true`` are refused, not coerced."""

    def __repr__(self) -> str:
        return "<wrong JSON type>"


_WRONG = _WrongJsonType()


def _scalar_kind(annotation: Any) -> str | None:
    """'int', 'float' or 'bool' for a field of that type (optional or annotated), else None."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    return {int: "int", float: "float", bool: "bool"}.get(annotation)


def _wrong_type(kind: str, value: Any) -> bool:
    if kind == "bool":
        return not isinstance(value, bool)
    if kind in ("int", "float"):
        return isinstance(value, bool | str)
    return False


#: The error type of a NUL in a body; its ``where`` (``environment.K``) is where the API's
#: 422 says it is (a model's own errors are located at the body).
NUL_ERROR = "nul_character"


def nul_at(value: Any) -> str | None:
    """Where in a decoded JSON value a string (or a key) holds NUL: "name",
    "environment.FOO", "inputs.0.path"; None if nowhere. Walked with a stack of its own,
    not by recursion: a body nested as deep as the JSON parser allows (~980 levels) would
    otherwise exhaust Python's stack under the framework's frames (a 500)."""
    stack: list[tuple[Any, Any]] = [(value, None)]  # (value, (parent's place, key))
    while stack:
        item, place = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return _place(place)
        elif isinstance(item, dict):
            if any(isinstance(k, str) and "\x00" in k for k in item):
                return _place(place)
            stack.extend((v, (place, k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, (place, n)) for n, v in reversed(list(enumerate(item))))
    return None


def _place(place: Any) -> str:
    parts: list[str] = []
    while place is not None:
        place, key = place
        parts.append(str(key))
    return ".".join(reversed(parts)) or "body"


class StrictModel(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 naming it; numbers and
    booleans must be JSON numbers and booleans (no ``"2"``, no ``true`` for 1)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @classmethod
    @cache
    def _scalar_fields(cls) -> dict[str, str]:
        found = {n: _scalar_kind(f.annotation) for n, f in cls.model_fields.items()}
        return {n: k for n, k in found.items() if k is not None}

    @model_validator(mode="before")
    @classmethod
    def _strict_scalars(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        where = nul_at(data)
        if where is not None:  # PostgreSQL's text and jsonb cannot hold it: a 503 there
            raise PydanticCustomError(NUL_ERROR, "must not contain NUL (U+0000) characters",
                                      {"where": where})  # fmt: skip
        kinds = cls._scalar_fields()
        wrong = [n for n, k in kinds.items() if n in data and _wrong_type(k, data[n])]
        if not wrong:
            return data
        return {**data, **dict.fromkeys(wrong, _WRONG)}


#: Categories refused anywhere in a name: controls, format characters (bidi overrides,
#: zero-width), surrogates, private use, unassigned.
_REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn"}
NAME_RULE = "must start with a letter or digit (any script) and hold no control characters"


def display_name_error(value: str) -> str | None:
    """Why ``value`` cannot be a display name, or None."""
    if not value:
        return "must not be empty"
    if unicodedata.category(value[0])[0] not in ("L", "N"):
        return NAME_RULE
    if any(unicodedata.category(ch) in _REFUSED for ch in value):
        return NAME_RULE
    return None


def _display_name(value: str) -> str:
    why = display_name_error(value)
    if why is not None:
        raise ValueError(why)
    return value


#: A name people read (enterprise, project, job): any script, no control characters.
DisplayName = Annotated[str, AfterValidator(_display_name)]

#: A query parameter's text: anything but NUL, which PostgreSQL's text cannot hold (a
#: filter with one failed there as a database error, 503, where SQLite matched nothing).
NO_NUL = r"^[^\x00]*$"


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorRead(BaseModel):
    error: str
    detail: str
