"""Which Python types may be pipeline parameters, and how they are validated.

Parameters arrive as JSON, so only types with a lossless JSON form are accepted. The
check runs at load so a bad annotation stops the daemon before it serves anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import types
import typing
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import msgspec

if TYPE_CHECKING:  # pydantic is optional at run time; the dev tools have it
    from pydantic import BaseModel

_SCALARS: frozenset[Any] = frozenset(
    {
        int,
        float,
        str,
        bool,
        type(None),
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        uuid.UUID,
        decimal.Decimal,
    }
)
_SEQUENCES: frozenset[Any] = frozenset({list, tuple, set, frozenset})


def pydantic_model(tp: Any) -> type[BaseModel] | None:
    """Return `tp` if it is a pydantic model class; pydantic stays an optional import."""
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic is optional
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _is_typeddict(tp: Any) -> bool:
    return typing.is_typeddict(tp)


def json_type_problem(tp: Any, _seen: set[int] | None = None, _nested: bool = False) -> str | None:
    """Explain why `tp` cannot carry a JSON value, or return None when it can.

    A pydantic model must be a parameter's whole type: msgspec decodes the request and
    hands the object to pydantic, which it cannot do inside a union or a container.
    """
    seen = _seen if _seen is not None else set()
    if id(tp) in seen:  # recursive structures are fine once checked
        return None
    if tp is Any or tp in _SCALARS:
        return None
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return json_type_problem(typing.get_args(tp)[0], seen, _nested)
    if origin is Literal:
        bad = [v for v in typing.get_args(tp) if not isinstance(v, (str, int, bool, type(None)))]
        return f"Literal values must be str, int, bool or None, not {bad[0]!r}" if bad else None
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if (problem := json_type_problem(arg, seen, True)) is not None:
                return problem
        return None
    if tp in _SEQUENCES or tp is dict:
        return None
    if origin in (set, frozenset):
        for arg in typing.get_args(tp):
            if not _hashable(arg):
                return f"set items must be hashable, not {_name(arg)}"
    if origin in _SEQUENCES:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        for arg in args:
            if (problem := json_type_problem(arg, seen, True)) is not None:
                return problem
        return None
    if origin is dict:
        key, value = typing.get_args(tp) or (str, Any)
        if key not in (str, int) and not (isinstance(key, type) and issubclass(key, enum.Enum)):
            return f"dict keys must be str, not {_name(key)}"
        return json_type_problem(value, seen, True)
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return None
        if issubclass(tp, msgspec.Struct) or dataclasses.is_dataclass(tp) or _is_typeddict(tp):
            seen.add(id(tp))
            try:
                hints = typing.get_type_hints(tp, include_extras=True)
            except Exception as exc:  # an unresolved forward reference, say
                return f"cannot resolve the fields of {_name(tp)}: {exc}"
            for field, hint in hints.items():
                if typing.get_origin(hint) is typing.ClassVar:
                    continue
                while typing.get_origin(hint) in (typing.Required, typing.NotRequired):
                    hint = typing.get_args(hint)[0]
                if (problem := json_type_problem(hint, seen, True)) is not None:
                    return f"{_name(tp)}.{field}: {problem}"
            return None
        if pydantic_model(tp) is not None:
            if _nested:
                return f"pydantic model {_name(tp)} must be the whole parameter type, not part of one"
            return None
    return f"{_name(tp)} is not a JSON type"


def _hashable(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _hashable(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return all(_hashable(a) for a in typing.get_args(tp))
    if tp in (list, dict, set) or origin in (list, dict, set):
        return False
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return bool(tp.__struct_config__.frozen)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp.__hash__ is not None
    return not _is_typeddict(tp)


def _name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def struct_field_type(tp: Any) -> Any:
    """The type msgspec decodes a parameter as; pydantic models are decoded as objects
    first and validated by pydantic afterwards, since msgspec cannot build them."""
    return dict[str, Any] if pydantic_model(tp) is not None else tp
