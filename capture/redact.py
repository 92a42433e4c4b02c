"""Previews of values for the run store: JSON, truncated, with secret-looking keys hidden."""

from __future__ import annotations

import re
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

    `finish(snapshot(value))` in one go; capture itself takes the snapshot on the event
    loop and finishes it in the writer thread. Never raises: capture must not fail a run.
    """
    return finish(snapshot(value, max_bytes), max_bytes) or ""


def preview_fields(names: tuple[Any, ...], values: Collection[Any], max_bytes: int) -> str:
    """`preview(dict(zip(names, values)))`, through `snapshot_fields`."""
    return finish(snapshot_fields(names, values, max_bytes), max_bytes) or ""


Snapshot = bytes | str
"""What the event loop keeps of a value for its preview: its JSON as `bytes`, not yet
checked for secrets (`finish()` does that in the writer thread), or, for a value too
long or not JSON as it is, the finished preview as `str`."""


def snapshot(value: Any, max_bytes: int) -> Snapshot:
    """The value's JSON, taken now: later changes to the value cannot reach it.

    The one part of a preview that cannot wait for the writer thread, so on the event
    loop a preview costs one encode. Anything longer than `max_bytes` is finished here
    (cut, and redacted if it must be), so that a queue of records never holds more
    than `max_bytes` per preview whatever the steps pass around. Never raises.
    """
    try:
        data = _encode(value)
    except (TypeError, ValueError, OverflowError):
        return _describe_preview(value, max_bytes)
    if len(data) > max_bytes:
        return _finish_json(data, max_bytes)
    return data


def snapshot_fields(names: tuple[Any, ...], values: Collection[Any], max_bytes: int) -> Snapshot:
    """`snapshot(dict(zip(names, values)))`, for names that are the same at every call.

    The JSON object comes from a Struct type made once per tuple of names, so no dict
    is built per call; whether a name or a value holds a secret is `finish()`'s
    question, in the writer thread.
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
            return data if len(data) <= max_bytes else _finish_json(data, max_bytes)
    return snapshot(dict(zip(names, values, strict=False)), max_bytes)


def finish(data: Snapshot | None, max_bytes: int) -> str | None:
    """The stored preview of a snapshot: secret-looking keys hidden, cut at `max_bytes`.

    Runs in the capture writer thread (and in `preview()`). Never raises.
    """
    if data is None or type(data) is str:
        return data
    assert isinstance(data, bytes)
    return _finish_json(data, max_bytes)


def _finish_json(data: bytes, max_bytes: int) -> str:
    """The stems test rules out the regex for almost every text; a text without a
    secret-looking word anywhere has no such key, so redacting it would change nothing."""
    text = data.decode(errors="replace")
    if _may_hold_secret(text) and _looks_secret(text):
        try:
            data = _encode(_redact(msgspec.json.decode(data)))
        except (msgspec.DecodeError, TypeError, ValueError, OverflowError):
            return REDACTED
        return _cut(data, max_bytes)
    if len(data) > max_bytes:
        return data[:max_bytes].decode(errors="ignore") + TRUNCATED
    return text


# Per tuple of names: a Struct type whose JSON is the object of those names, or False
# when they cannot be JSON keys of one object (not all str, or repeated).
_FIELD_SHAPES: dict[tuple[Any, ...], Any] = {}


def _field_shape(names: tuple[Any, ...]) -> Any:
    shape: Any = False
    if all(type(name) is str for name in names) and len(set(names)) == len(names):
        fields = [f"f{i}" for i in range(len(names))]  # any str is a JSON key, not every str a field
        shape = msgspec.defstruct("Fields", fields, rename=dict(zip(fields, names, strict=True)), gc=False)
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
