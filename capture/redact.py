"""Previews of values for the run store: JSON, truncated, with secret-looking keys hidden."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Collection
from typing import Any

import msgspec

# Secret-looking words: each stem, alone or after one of the words it needs before it
# (and an optional "-" or "_"). The one source of both tests below: the regex is built
# from these alternatives, the substring pre-check from their stems, and every match of
# an alternative contains its stem as it is, so a text without any stem cannot match
# and the pre-check can rule the regex out. Both look at casefolded text (the regex has
# no re.I): re.I and `str.lower()` disagree about some letters ("password" spelt with
# U+017F, the long s, matched the regex but not the lowered stem), and `casefold()` is
# one answer for both. Only ever `search`ed, so "password", "passwd" and
# "authorization" match by their stems.
SECRET_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pass", ()),
    ("secret", ()),
    ("token", ()),
    ("key", ("api", "private")),  # api_key, api-key, apikey, private_key; a bare "key" is no secret
    ("auth", ()),
    ("credential", ()),
)
_SECRET_WORD = re.compile(
    "|".join(
        f"(?:{'|'.join(map(re.escape, before))})[-_]?{re.escape(stem)}" if before else re.escape(stem)
        for stem, before in SECRET_WORDS
    )
)
# Testing the casefolded JSON for these substrings rules out redaction for almost every
# preview at a fraction of what a regex search over the whole text costs (that search
# was the largest single cost of capture per run).
_SECRET_STEMS = tuple(dict.fromkeys(stem for stem, _ in SECRET_WORDS))
_SCALARS = frozenset({str, int, float, bool, type(None)})
REDACTED = "***"
TRUNCATED = "…[truncated]"

_encode = msgspec.json.Encoder().encode


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _looks_secret(k) else _redact(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


def _describe(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    return repr(obj)


def _looks_secret(name: str) -> bool:
    return _SECRET_WORD.search(name.casefold()) is not None


def _may_hold_secret(text: str) -> bool:
    """False when no secret-looking word can be in `text` (it holds none of their stems).

    On `str`, not `bytes`: `bytes in bytes` first tries the needle as an integer and
    pays for a raised and cleared TypeError on every test.
    """
    folded = text.casefold()
    for stem in _SECRET_STEMS:  # noqa: SIM110 - any() over a generator costs a frame more
        if stem in folded:
            return True
    return False


def _cut(data: bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        return data[:max_bytes].decode(errors="ignore") + TRUNCATED
    return data.decode(errors="replace")


def preview(value: Any, max_bytes: int) -> str:
    """A JSON preview of `value`, secret-looking keys replaced, cut at `max_bytes`.

    Runs on the event loop for every captured step, so the common cases cost one
    encode and one decode: a scalar has no keys, and a Struct of scalar fields has
    only keys whose verdict is cached per type. Anything else is scanned for the
    stems of secret-looking words (cheaper, for short texts, than working out which
    keys a dict holds), and only a hit pays for the regex and redaction.
    Truncation and values JSON cannot carry take slower paths. Never raises: capture
    must not fail a run.
    """
    try:
        data = _encode(value)
    except (TypeError, ValueError, OverflowError):
        return _describe_preview(value, max_bytes)
    if len(data) > max_bytes:
        if type(value) not in _SCALARS and _may_hold_secret(data.decode(errors="replace")):
            return _redacted_preview(value, max_bytes)
        return _cut(data, max_bytes)
    kind = type(value)
    if kind in _SCALARS:
        return data.decode()
    safe = _SAFE_SHAPES.get(kind)
    if safe is None:
        safe = _remember(kind, isinstance(value, msgspec.Struct) and _struct_is_flat_and_safe(kind))
    if safe:
        return data.decode()
    text = data.decode()
    if _may_hold_secret(text) and _looks_secret(text):
        return _redacted_preview(value, max_bytes)
    return text


def preview_fields(names: tuple[Any, ...], values: Collection[Any], max_bytes: int) -> str:
    """`preview(dict(zip(names, values)))`, for names that are the same at every call.

    A step's parameter names and a pipeline's output keys are fixed, so whether one
    of them looks like a secret is decided once per tuple of names; when every value
    is a scalar, nothing else could be redacted, and the JSON object comes straight
    from a Struct made for those names, with no dict built and no text scanned. Any
    other case (a secret-looking name, a container value, a preview to cut) takes
    `preview()`'s path and gets the same text it would.
    """
    shape = _FIELD_SHAPES.get(names)
    if shape is None:
        shape = _field_shape(names)
    if shape is not False and len(values) == len(names):
        for value in values:
            if type(value) not in _SCALARS:
                break
        else:
            try:
                data = _encode(shape(*values))
            except (TypeError, ValueError, OverflowError):
                data = None  # an int beyond 64 bits: preview() describes it
            if data is not None and len(data) <= max_bytes:
                return data.decode()
    # strict=False: previews never raise; callers pass one value per name.
    return preview(dict(zip(names, values, strict=False)), max_bytes)


# Per tuple of names: a Struct type whose JSON is the object of those names, or False
# when a name looks like a secret (those always take preview()'s path).
_FIELD_SHAPES: dict[tuple[Any, ...], Any] = {}


def _field_shape(names: tuple[Any, ...]) -> Any:
    shape: Any = False
    if (
        all(type(name) is str for name in names)
        and len(set(names)) == len(names)
        and not any(_looks_secret(name) for name in names)
    ):
        fields = [f"f{i}" for i in range(len(names))]  # any str is a JSON key, not every str a field
        shape = msgspec.defstruct("Fields", fields, rename=dict(zip(fields, names, strict=True)), gc=False)
    if len(_FIELD_SHAPES) < _MAX_SHAPES:
        _FIELD_SHAPES[names] = shape
    return shape


# Types whose JSON cannot hold a secret-looking key (True: Structs of scalar fields
# with harmless names) or can (False: everything else, scanned each time).
_SAFE_SHAPES: dict[Any, bool] = {}
_MAX_SHAPES = 4096  # types made on the fly (msgspec.defstruct) must not grow this forever


def _remember(shape: Any, safe: bool) -> bool:
    if len(_SAFE_SHAPES) < _MAX_SHAPES:
        _SAFE_SHAPES[shape] = safe
    return safe


def _is_scalar_type(tp: Any) -> bool:
    if tp in _SCALARS or tp is None:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(_is_scalar_type(arg) for arg in typing.get_args(tp))
    return False


def _struct_is_flat_and_safe(kind: type[msgspec.Struct]) -> bool:
    """Every field holds a scalar and no field's JSON name looks like a secret.

    False (scan every time) for anything it cannot tell: previews must never raise.
    """
    try:
        fields = msgspec.structs.fields(kind)
        return all(_is_scalar_type(f.type) and not _looks_secret(f.encode_name) for f in fields)
    except Exception:
        return False


def _redacted_preview(value: Any, max_bytes: int) -> str:
    try:
        data = _encode(_redact(msgspec.to_builtins(value, str_keys=True)))
    except (TypeError, ValueError, OverflowError):
        return REDACTED
    return _cut(data, max_bytes)


def _describe_preview(value: Any, max_bytes: int) -> str:
    """Not JSON as it is (a pydantic model, a client object, an int beyond 64 bits):
    describe its parts, still redacted; a bare repr would show a `password` field in clear."""
    try:
        data = _encode(_redact(msgspec.to_builtins(value, str_keys=True, enc_hook=_describe)))
    except Exception:
        text = repr(value)
        return REDACTED if _looks_secret(text) else _cut(text.encode(), max_bytes)
    return _cut(data, max_bytes)
