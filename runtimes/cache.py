"""The in-process step-result cache behind `@step(cache=True)` (Realtime runtime).

Keyed by the step's name, a hash of its source, and its inputs encoded with msgpack
after tagging container and record types (so a tuple and a list, or a Struct and a dict
with the same items, are different keys);
entries live `ttl` seconds and the least recently used go first beyond `max_size`.
Inputs msgpack cannot encode (arbitrary objects) make the call uncacheable (a miss), never an error. A
cached value is shared between runs: steps marked cacheable should return values
that nobody mutates.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import time
import uuid
from typing import Any

import msgspec
from prometheus_client import Counter

hits_total = Counter("serving_cache_hits_total", "Step results served from the step cache", ["step"])
misses_total = Counter("serving_cache_misses_total", "Cacheable step calls that ran the step", ["step"])

_MISS = (False, None)
_encoder = msgspec.msgpack.Encoder()


def _canonical(value: Any) -> Any:
    """Inputs as msgpack-able data in which every container carries its type, so equal
    keys mean equal types too (a tuple is never a list, a Struct never a dict)."""
    if isinstance(value, (str, int, float, bool, bytes)) or value is None:
        return value
    if isinstance(value, list):
        return ["L", [_canonical(v) for v in value]]
    if isinstance(value, tuple):
        return ["T", type(value).__qualname__, [_canonical(v) for v in value]]
    if isinstance(value, dict):
        return ["D", sorted(([_canonical(k), _canonical(v)] for k, v in value.items()), key=repr)]
    if isinstance(value, (set, frozenset)):
        return ["S", sorted((_canonical(v) for v in value), key=repr)]
    if isinstance(value, msgspec.Struct):
        fields = value.__struct_fields__
        return ["R", _type_name(value), [_canonical(getattr(value, f)) for f in fields]]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        return ["R", _type_name(value), [_canonical(getattr(value, f)) for f in names]]
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, uuid.UUID, decimal.Decimal)):
        return ["V", _type_name(value), str(value)]
    raise TypeError(f"{type(value).__name__} is not cacheable")


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


class StepCache:
    def __init__(self, ttl: float = 300.0, max_size: int = 1024) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._entries: collections.OrderedDict[tuple[str, bytes], tuple[float, Any]] = (
            collections.OrderedDict()
        )

    def key(self, step: Any, args: list[Any], kwargs: dict[str, Any]) -> tuple[str, bytes] | None:
        try:
            # id(step): steps made by one factory share name and source but not closures.
            key = (id(step), step.code_hash, _canonical(args), _canonical(kwargs))
            return (step.name, _encoder.encode(key))
        except (TypeError, ValueError, OverflowError):  # inputs msgpack cannot carry
            return None

    def get(self, key: tuple[str, bytes] | None) -> tuple[bool, Any]:
        if key is None:
            return _MISS
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            if entry is not None:
                del self._entries[key]
            misses_total.labels(key[0]).inc()
            return _MISS
        self._entries.move_to_end(key)
        hits_total.labels(key[0]).inc()
        return True, entry[1]

    def put(self, key: tuple[str, bytes] | None, value: Any) -> None:
        if key is None:
            return
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
