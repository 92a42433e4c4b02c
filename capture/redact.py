"""Previews of values for the run store: JSON, truncated, with secret-looking keys hidden."""

from __future__ import annotations

import re
from typing import Any

import msgspec

SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|auth(orization)?|credential|private[-_]?key", re.I
)
_SECRET_BYTES = re.compile(SECRET_KEY.pattern.encode(), re.I)
REDACTED = "***"
TRUNCATED = "…[truncated]"

_encoder = msgspec.json.Encoder()


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and SECRET_KEY.search(k) else _redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


def _describe(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    return repr(obj)


def _cut(data: bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        return data[:max_bytes].decode(errors="ignore") + TRUNCATED
    return data.decode(errors="replace")


def preview(value: Any, max_bytes: int) -> str:
    """A JSON preview of `value`, secret-looking keys replaced, cut at `max_bytes`.

    Encodes first and redacts only when the JSON mentions a secret-looking word, so
    the common case costs one encode and one regex scan. Values JSON cannot carry are
    shown by their repr. Never raises: capture must not fail a run.
    """
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError):
        # Not JSON as it is (a pydantic model, a client object): describe its parts,
        # still redacted; a bare repr would show a `password` field in clear.
        try:
            data = _encoder.encode(_redact(msgspec.to_builtins(value, str_keys=True, enc_hook=_describe)))
        except Exception:
            text = repr(value)
            return REDACTED if SECRET_KEY.search(text) else _cut(text.encode(), max_bytes)
        return _cut(data, max_bytes)
    else:
        if _SECRET_BYTES.search(data) is not None:
            try:
                data = _encoder.encode(_redact(msgspec.to_builtins(value, str_keys=True)))
            except (TypeError, ValueError, OverflowError):
                return REDACTED
        if len(data) > max_bytes:
            return data[:max_bytes].decode(errors="ignore") + TRUNCATED
        return data.decode()
    if len(text) > max_bytes:
        return text.encode()[:max_bytes].decode(errors="ignore") + TRUNCATED
    return text
