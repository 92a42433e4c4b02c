"""Previews of values for the run store: JSON, truncated, with secret-looking keys hidden."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Collection, Mapping
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
_OBJECT_OR_ARRAY = (ord("{"), ord("["))  # the first byte of the only JSON that can hold a key
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
    return data.decode()  # always UTF-8 from msgspec or str.encode(); errors= costs a keyword parse


def preview(value: Any, max_bytes: int) -> str:
    """A JSON preview of `value`, secret-looking keys replaced, cut at `max_bytes`.

    `finish(snapshot(value))` in one go; capture itself takes the snapshot on the event
    loop and finishes it in the writer thread. Never raises: capture must not fail a run.
    """
    return finish(snapshot(value, max_bytes), max_bytes) or ""


def preview_fields(names: tuple[Any, ...], values: Collection[Any], max_bytes: int) -> str:
    """`preview(dict(zip(names, values)))`, through `snapshot_fields`."""
    return finish(snapshot_fields(names, values, max_bytes), max_bytes) or ""


Snapshot = bytes | str
"""What the event loop keeps of a value for its preview: the finished preview (`str`)
when it can tell cheaply that nothing in it needs hiding, else its JSON (`bytes`),
which `finish()` checks for secrets in the capture writer thread."""


def snapshot(value: Any, max_bytes: int) -> Snapshot:
    """The value's JSON, taken now: later changes to the value cannot reach it.

    On the event loop this costs one encode, and a decode when the value cannot hold a
    secret-looking key (a scalar, a Struct of scalar fields with harmless names: the
    verdict is cached per type). Anything else is left as bytes for the writer thread
    to scan and redact, unless it is longer than `max_bytes`: that is finished here, so
    that queued records never hold more than `max_bytes` per preview. Never raises.
    """
    try:
        data = _encode(value)
    except (TypeError, ValueError, OverflowError):
        return _describe_preview(value, max_bytes)
    if len(data) > max_bytes:
        return _finish_json(data, max_bytes)
    kind = type(value)
    if kind in _SCALARS:
        return data.decode()
    safe = _SAFE_SHAPES.get(kind)
    if safe is None:
        safe = _remember(kind, isinstance(value, msgspec.Struct) and _struct_is_flat_and_safe(kind))
    return data.decode() if safe else data


def snapshot_fields(names: tuple[Any, ...], values: Collection[Any], max_bytes: int) -> Snapshot:
    """`snapshot(dict(zip(names, values)))`, for names that are the same at every call.

    A step's parameter names and a pipeline's output keys are fixed, so whether one of
    them looks like a secret is decided once per tuple of names, and the JSON object
    comes from a Struct type made for those names, with no dict built per call. With
    harmless names and scalar values nothing can need hiding, and the preview is
    finished here; otherwise the bytes go to the writer thread.
    """
    shape = _FIELD_SHAPES.get(names)
    if shape is None:
        shape = _field_shape(names)
    if shape is not False and len(values) == len(names):
        try:
            data = _encode(shape(*values))
        except (TypeError, ValueError, OverflowError):
            pass  # an int beyond 64 bits, an object JSON cannot hold: snapshot() describes it
        else:
            if len(data) > max_bytes:
                return _finish_json(data, max_bytes)
            if shape in _SAFE_NAMES:
                for value in values:
                    if type(value) not in _SCALARS:
                        return data
                return data.decode()
            return data
    return snapshot(dict(zip(names, values, strict=False)), max_bytes)


def snapshot_mapping(mapping: Mapping[str, Any], names_safe: bool, max_bytes: int) -> Snapshot:
    """`snapshot(mapping)` for a dict whose keys are known in advance (a pipeline's
    outputs): `names_safe` is `names_look_harmless(keys)`, worked out once, so with
    scalar values the preview is finished here and nothing is scanned."""
    try:
        data = _encode(mapping)
    except (TypeError, ValueError, OverflowError):
        return _describe_preview(mapping, max_bytes)
    if len(data) > max_bytes:
        return _finish_json(data, max_bytes)
    if names_safe:
        for value in mapping.values():
            if type(value) not in _SCALARS:
                return data
        return data.decode()
    return data


def names_look_harmless(names: Collection[Any]) -> bool:
    """No name is a secret-looking word (and every one is a str): their values may be
    previewed as they are, if the values themselves hold no keys."""
    return all(type(name) is str and not _looks_secret(name) for name in names)


def finish(data: Snapshot | None, max_bytes: int) -> str | None:
    """The stored preview of a snapshot: secret-looking keys hidden, cut at `max_bytes`.

    Runs in the capture writer thread (and in `preview()`). Never raises.
    """
    if data is None or type(data) is str:
        return data
    assert isinstance(data, bytes)
    return _finish_json(data, max_bytes)


def _finish_json(data: bytes, max_bytes: int) -> str:
    """Only an object or an array can hold a key. For those, the stems test rules out
    the regex for almost every text; a text without a secret-looking word anywhere has
    no such key, so redacting it would change nothing."""
    if data and data[0] in _OBJECT_OR_ARRAY:
        text = data.decode()  # msgspec writes valid UTF-8; errors= would cost a keyword parse
        if _may_hold_secret(text) and _looks_secret(text):
            try:
                data = _encode(_redact(msgspec.json.decode(data)))
            except (msgspec.DecodeError, TypeError, ValueError, OverflowError):
                return REDACTED
            return _cut(data, max_bytes)
        if len(data) <= max_bytes:
            return text
    return _cut(data, max_bytes)


def _is_scalar_type(tp: Any) -> bool:
    if tp in _SCALARS or tp is None:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(_is_scalar_type(arg) for arg in typing.get_args(tp))
    return False


def struct_is_flat(kind: type[msgspec.Struct]) -> bool:
    """Every field holds a scalar: a value of this type cannot change in place, nor can
    any of its fields. False for anything it cannot tell."""
    try:
        return all(_is_scalar_type(f.type) for f in msgspec.structs.fields(kind))
    except Exception:
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


# Types whose JSON cannot hold a secret-looking key (True: Structs of scalar fields
# with harmless names) or can (False: everything else, scanned each time).
_SAFE_SHAPES: dict[Any, bool] = {}


def _remember(shape: Any, safe: bool) -> bool:
    if len(_SAFE_SHAPES) < _MAX_SHAPES:
        _SAFE_SHAPES[shape] = safe
    return safe


# Per tuple of names: a Struct type whose JSON is the object of those names, or False
# when they cannot be JSON keys of one object (not all str, or repeated).
_FIELD_SHAPES: dict[tuple[Any, ...], Any] = {}
_SAFE_NAMES: set[Any] = set()  # the shapes whose names none looks like a secret


def _field_shape(names: tuple[Any, ...]) -> Any:
    shape: Any = False
    if all(type(name) is str for name in names) and len(set(names)) == len(names):
        fields = [f"f{i}" for i in range(len(names))]  # any str is a JSON key, not every str a field
        shape = msgspec.defstruct("Fields", fields, rename=dict(zip(fields, names, strict=True)), gc=False)
        if not any(_looks_secret(name) for name in names) and len(_SAFE_NAMES) < _MAX_SHAPES:
            _SAFE_NAMES.add(shape)
    if len(_FIELD_SHAPES) < _MAX_SHAPES:
        _FIELD_SHAPES[names] = shape
    return shape


_MAX_SHAPES = 4096  # types made on the fly (msgspec.defstruct) must not grow this forever


def _describe_preview(value: Any, max_bytes: int) -> str:
    """Not JSON as it is (a pydantic model, a client object, an int beyond 64 bits):
    describe its parts, still redacted; a bare repr would show a `password` field in clear."""
    try:
        data = _encode(_redact(msgspec.to_builtins(value, str_keys=True, enc_hook=_describe)))
    except Exception:
        text = repr(value)
        return REDACTED if _looks_secret(text) else _cut(text.encode(), max_bytes)
    return _cut(data, max_bytes)
