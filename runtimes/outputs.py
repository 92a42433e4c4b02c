"""Checking a run's outputs against the types their steps declare.

`/info` and `/openapi.json` promise each output's type (`-> Annotated[dict, "weather"]`
is a required object), so a step that returns something else fails the run with a
message naming the step, the output and both types, instead of answering 200 with a
`null` the schema forbids. A NaN or an infinity fails it too: JSON has no such number,
and encoding one would turn it into a silent `null`.

The checks are worked out once per pipeline (`OutputCheck`), and the common outputs
(a str, an int, a finite float) cost one `type()` comparison per run.
"""

from __future__ import annotations

import contextlib
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from runtimes.types import non_finite_path

if TYPE_CHECKING:
    from runtimes.pipeline import OutputSpec

_encode = msgspec.json.encode
_EXACT = (str, int, bool, type(None))  # no NaN can hide in these


class OutputError(Exception):
    """A run produced an output its declared type does not allow (or a non-finite
    number); the message is safe to show to a client."""

    def __init__(self, step_id: str, output: str, message: str) -> None:
        self.step_id = step_id
        self.output = output
        super().__init__(message)


def type_name(tp: Any) -> str:
    """How a type reads in an error message: `dict[str, Reading] | None`, not its repr."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is Ellipsis:
        return "..."
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None:
        inner = f"[{', '.join(type_name(a) for a in args)}]" if args else ""
        return f"{getattr(origin, '__qualname__', repr(origin))}{inner}"
    if isinstance(tp, type):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _non_finite(spec: OutputSpec, value: Any) -> OutputError | None:
    path = non_finite_path(value)
    if path is None:
        return None
    where = f"output '{spec.key}'" + (f" at {path}" if path else "")
    return OutputError(
        spec.node_id,
        spec.key,
        f"step '{spec.node_id}' returned a non-finite number (NaN or infinity) in {where}; "
        "JSON cannot carry it",
    )


def _checker(spec: OutputSpec) -> Callable[[Any], OutputError | None]:
    """One output's check. Scalars cost a `type()` comparison. Anything else is encoded
    once (C): a NaN or infinity always encodes as `null`, so only an encoding holding
    `null` is walked for one (Python); and the declared type is checked by decoding
    that encoding with a decoder built here, several times cheaper than
    `msgspec.convert`, which stays the judge when the decode fails (custom classes)."""
    tp = spec.type
    declared = type_name(tp)
    try:
        info = msgspec.inspect.type_info(tp)
    except (TypeError, ValueError):  # a type msgspec cannot describe: nothing to enforce
        info = msgspec.inspect.AnyType()
    untyped = isinstance(info, (msgspec.inspect.AnyType, msgspec.inspect.CustomType))
    decoder: msgspec.json.Decoder[Any] | None = None
    if not untyped:
        with contextlib.suppress(TypeError, ValueError):
            decoder = msgspec.json.Decoder(tp)

    def mismatch(value: Any, exc: msgspec.ValidationError) -> OutputError:
        message, _, path = str(exc).partition(" - at `$")
        detail = message.replace("`", "")
        if path:
            detail += f" at {path.rstrip('`').lstrip('.') or '$'}"
        return OutputError(
            spec.node_id,
            spec.key,
            f"step '{spec.node_id}' returned {type_name(type(value))} for output '{spec.key}', "
            f"which is declared {declared} ({detail})",
        )

    def check(value: Any) -> OutputError | None:
        kind = type(value)
        if kind in _EXACT and (untyped or kind is tp):
            return None
        if kind is float and (untyped or tp is float):
            return None if math.isfinite(value) else _non_finite(spec, value)
        if kind is int and tp is float:
            return None
        try:
            encoded: bytes | None = _encode(value)
        except (TypeError, ValueError, OverflowError):
            encoded = None  # not JSON: the reply says so; its numbers are still checked
        if (encoded is None or b"null" in encoded) and (bad := _non_finite(spec, value)) is not None:
            return bad
        if untyped:
            return None
        if decoder is not None and encoded is not None:
            try:
                decoder.decode(encoded)
                return None
            except msgspec.ValidationError:
                pass
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError as exc:
            return mismatch(value, exc)
        return None

    return check


class OutputCheck:
    """The checks of one pipeline's outputs, built at load."""

    __slots__ = ("_checks",)

    def __init__(self, outputs: Iterable[OutputSpec]) -> None:
        self._checks = tuple((o.key, _checker(o)) for o in outputs)

    def __call__(self, outputs: dict[str, Any]) -> OutputError | None:
        """The first output that breaks its declared type, or None."""
        for key, check in self._checks:
            error = check(outputs[key])
            if error is not None:
                return error
        return None
