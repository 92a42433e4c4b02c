"""The step cache (TTL, LRU, uncacheable inputs) and the runtime registry, including a
runtime published by an installed package under the `serving.runtimes` entry points."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from runtimes import RuntimeOptions, available_runtimes, base, create_runtime, register_runtime, step
from runtimes import cache as cache_module
from runtimes.base import UnknownRuntimeError
from runtimes.cache import StepCache
from runtimes.memory import MemoryOnlyRuntime
from runtimes.realtime import RealtimeRuntime


@step
def cached_double(x: Any) -> int:
    return x * 2


@step
def other_step(x: Any) -> int:
    return x


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(cache_module, "time", fake)
    return fake


def misses(name: str) -> float:
    return REGISTRY.get_sample_value("serving_cache_misses_total", {"step": name}) or 0.0


def hits(name: str) -> float:
    return REGISTRY.get_sample_value("serving_cache_hits_total", {"step": name}) or 0.0


# -- StepCache ------------------------------------------------------------------------------


def test_cache_hit_for_equal_inputs_and_miss_for_others(clock: FakeTime) -> None:
    cache = StepCache(ttl=60, max_size=10)
    key = cache.key(cached_double, [1], {"b": [1, 2]})
    assert cache.key(cached_double, [1], {"b": [1, 2]}) == key
    assert cache.key(cached_double, [2], {"b": [1, 2]}) != key
    assert cache.key(other_step, [1], {"b": [1, 2]}) != key  # the step is part of the key
    before_hits, before_misses = hits("cached_double"), misses("cached_double")
    assert cache.get(key) == (False, None)
    cache.put(key, 42)
    assert cache.get(key) == (True, 42)
    assert hits("cached_double") - before_hits == 1
    assert misses("cached_double") - before_misses == 1


def test_cache_entries_expire_after_ttl(clock: FakeTime) -> None:
    cache = StepCache(ttl=10, max_size=10)
    key = cache.key(cached_double, [1], {})
    cache.put(key, "v")
    clock.now += 10
    assert cache.get(key) == (True, "v")  # still valid at exactly ttl
    clock.now += 0.001
    assert cache.get(key) == (False, None)
    assert len(cache) == 0  # the expired entry is gone


def test_cache_evicts_the_least_recently_used(clock: FakeTime) -> None:
    cache = StepCache(ttl=60, max_size=2)
    a, b, c = (cache.key(cached_double, [i], {}) for i in range(3))
    cache.put(a, "a")
    cache.put(b, "b")
    assert cache.get(a) == (True, "a")  # a is now the most recently used
    cache.put(c, "c")
    assert len(cache) == 2
    assert cache.get(b) == (False, None)
    assert cache.get(a) == (True, "a")
    assert cache.get(c) == (True, "c")


def test_uncacheable_inputs_are_misses_not_errors(clock: FakeTime) -> None:
    cache = StepCache()
    key = cache.key(cached_double, [object()], {})
    assert key is None
    assert cache.key(cached_double, [], {"x": lambda: 1}) is None
    cache.put(key, "never stored")
    assert cache.get(key) == (False, None)
    assert len(cache) == 0


def test_cache_size_zero_keeps_nothing(clock: FakeTime) -> None:
    cache = StepCache(max_size=0)
    key = cache.key(cached_double, [1], {})
    cache.put(key, 1)
    assert cache.get(key) == (False, None)


def test_cache_keys_tell_tuples_from_lists() -> None:
    cache = StepCache()
    assert cache.key(cached_double, [(1, 2)], {}) != cache.key(cached_double, [[1, 2]], {})
    assert cache.key(cached_double, [[1, 2]], {}) == cache.key(cached_double, [[1, 2]], {})


def test_cache_keys_carry_types_and_step_identity() -> None:
    cache = StepCache()
    assert cache.key(cached_double, [["T", 1]], {}) != cache.key(cached_double, [(1,)], {})
    assert cache.key(cached_double, [{"a": 1}], {}) != cache.key(cached_double, [[["a", 1]]], {})
    day = datetime.date(2020, 1, 2)
    assert cache.key(cached_double, [day], {}) != cache.key(cached_double, ["2020-01-02"], {})

    def make(k: int) -> object:
        @step(name="scaled")
        def scaled(x: int) -> int:
            return x * k

        return scaled

    assert cache.key(make(2), [1], {}) != cache.key(make(3), [1], {})


# -- registry -------------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A private copy of the registry: runtimes registered by a test do not leak."""
    copy = dict(base._registry)
    monkeypatch.setattr(base, "_registry", copy)
    return copy


def test_builtin_runtimes() -> None:
    assert {"memory", "realtime"} <= set(available_runtimes())
    assert isinstance(create_runtime("memory"), MemoryOnlyRuntime)
    runtime = create_runtime("realtime", RuntimeOptions(capture_url="jsonl:-"))
    assert isinstance(runtime, RealtimeRuntime)


def test_unknown_runtime_names_the_available_ones(registry: dict[str, Any]) -> None:
    with pytest.raises(UnknownRuntimeError) as info:
        create_runtime("no-such-runtime")
    message = str(info.value)
    assert "'no-such-runtime'" in message
    assert "memory" in message and "realtime" in message


def test_registered_runtime_gets_the_options(registry: dict[str, Any]) -> None:
    seen: list[RuntimeOptions] = []

    def factory(options: RuntimeOptions) -> Any:
        seen.append(options)
        return MemoryOnlyRuntime(options)

    register_runtime("custom", factory)
    options = RuntimeOptions(max_threads=3)
    assert isinstance(create_runtime("custom", options), MemoryOnlyRuntime)
    assert seen == [options]
    assert "custom" in available_runtimes()


def test_entry_point_runtime_is_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: dict[str, Any]
) -> None:
    dist = tmp_path / "fake_rt-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake_rt\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[serving.runtimes]\nfake = fake_rt_mod:FakeRuntime\n")
    (tmp_path / "fake_rt_mod.py").write_text(
        "class FakeRuntime:\n"
        "    name = 'fake'\n"
        "    def __init__(self, options):\n"
        "        self.options = options\n"
    )
    monkeypatch.delitem(sys.modules, "fake_rt_mod", raising=False)
    assert "fake" not in available_runtimes()
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "fake" in available_runtimes()
        options = RuntimeOptions(max_threads=2)
        runtime = create_runtime("fake", options)
        assert type(runtime).__name__ == "FakeRuntime"
        assert runtime.options is options  # type: ignore[attr-defined]
        assert "fake" in registry  # loaded once, then registered
    finally:
        sys.modules.pop("fake_rt_mod", None)
