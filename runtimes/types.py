"""Which Python types may be pipeline parameters, and how they are validated.

Parameters arrive as JSON, so only types with a lossless JSON form are accepted. The
check runs at load so a bad annotation stops the daemon before it serves anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import re
import types
import typing
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union

import msgspec

if TYPE_CHECKING:  # pydantic is optional at run time; the dev tools have it
    from pydantic import BaseModel

T = TypeVar("T")

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


MAX_INT_FIXES = 1000  # integral floats one request may send for int fields; bounds the retries
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[(\.\.\.)\]")


def convert_json(raw: Any, tp: type[T]) -> T:
    """`msgspec.convert(raw, tp)` for decoded JSON, accepting integral floats (`1.0`) where
    an int is declared, as JSON Schema does (`1.0` is an integer there).

    msgspec's strict mode refuses them, and its lax mode would also turn `"1"` into 1;
    so each "expected int, got float" error is fixed where it points, and only there,
    so an `Any` or `float` field keeps the float it was sent. This is the error path of
    a decode: a body that decodes at once never comes here.
    """
    for _ in range(MAX_INT_FIXES):
        try:
            return msgspec.convert(raw, tp)
        except msgspec.ValidationError as exc:
            message, _, path = str(exc).partition(" - at `$")
            if not (message.startswith("Expected `int") and message.endswith("got `float`")):
                raise
            segments: list[str | int | None] = []
            for name, index, _any in _SEGMENT.findall(path.rstrip("`")):
                segments.append(name if name else int(index) if index else None)
            if not segments and type(raw) is float and raw.is_integer():
                raw = int(raw)
            elif not _integral_to_int(raw, segments):
                raise
    return msgspec.convert(raw, tp)


def _integral_to_int(node: Any, segments: list[str | int | None]) -> bool:
    """Replace integral floats at `segments` in `node` (in place); None is msgspec's `[...]`,
    any key of a dict, whose values all share one declared type."""
    if not segments:
        return False
    seg, rest = segments[0], segments[1:]
    if isinstance(node, dict):
        keys: list[Any] = list(node) if seg is None else [seg] if seg in node else []
    elif isinstance(node, list) and isinstance(seg, int) and seg < len(node):
        keys = [seg]
    else:
        return False
    changed = False
    for key in keys:
        child = node[key]
        if rest:
            changed = _integral_to_int(child, rest) or changed
        elif type(child) is float and child.is_integer():
            node[key] = int(child)
            changed = True
    return changed


def non_finite_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in `value`, or None when there is
    none. JSON has no such numbers: encoded, they would become a silent `null`."""
    if type(value) is float:
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    elif isinstance(value, msgspec.Struct):
        items = ((f, getattr(value, f)) for f in value.__struct_fields__)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, float):  # a float subclass
        return None if math.isfinite(value) else path
    else:
        return None
    for key, item in items:
        found = non_finite_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None
