"""The runtime plug-in point: what a runtime must do, and the registry that names them.

A runtime decides what happens around the DAG executor (capture, caching); the daemon
picks one by name from `SERVING_RUNTIME`. Third parties register theirs with
`register_runtime` before the daemon starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec

from runtimes.cancel import RunControl
from runtimes.executor import EventCallback, RunResult
from runtimes.pipeline import Pipeline


def default_capture_url() -> str:
    """`$SERVING_HOME/runs.db` as an absolute sqlite URL, the home read as the daemon's
    settings read it (stripped, empty means unset, `~` expanded).

    The sink takes a URL's path literally, so `sqlite:///~/.serving/runs.db` named the
    directory `/~`: a `RealtimeRuntime()` built in a script wrote outside the home.
    """
    home = os.environ.get("SERVING_HOME", "").strip() or "~/.serving"
    return f"sqlite://{(Path(home).expanduser() / 'runs.db').resolve()}"


class RuntimeOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the daemon's settings tell a runtime; kept here so runtimes never import serving."""

    max_threads: int = 32
    capture_url: str = msgspec.field(default_factory=default_capture_url)
    capture_max_bytes: int = 4096
    capture_queue_size: int = 10_000
    capture_batch_size: int = 500
    capture_batch_interval: float = 0.25
    capture_breaker_failures: int = 5
    capture_breaker_cooldown: float = 10.0
    capture_write_deadline: float = 2.5
    capture_sample: float = 1.0  # the fraction of runs captured, each drawn at random
    capture_overrides: dict[str, bool] = {}
    cache_ttl: float = 300.0
    cache_size: int = 1024
    deployment_name: str | None = None


@runtime_checkable
class Runtime(Protocol):
    name: str

    async def start(self) -> None:
        """Acquire resources (threads, sinks); called once before the first run."""

    async def stop(self) -> None:
        """Release resources; in-flight runs have finished or been cancelled by then."""

    async def run(
        self,
        pipeline: Pipeline,
        parameters: msgspec.Struct,
        *,
        run_id: str | None = None,
        run_name: str | None = None,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Run once with validated parameters; see DagExecutor.run for what it raises."""
        ...


RuntimeFactory = Callable[[RuntimeOptions], Runtime]
ENTRY_POINT_GROUP = "serving.runtimes"
_registry: dict[str, RuntimeFactory] = {}


class UnknownRuntimeError(LookupError):
    pass


def register_runtime(name: str, factory: RuntimeFactory) -> None:
    _registry[name] = factory


def available_runtimes() -> list[str]:
    return sorted({*_registry, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})


def create_runtime(name: str, options: RuntimeOptions | None = None) -> Runtime:
    """Build the runtime registered as `name`, or published by an installed package under
    the entry-point group `serving.runtimes`; raises UnknownRuntimeError listing the known ones."""
    factory = _registry.get(name) or _from_entry_point(name)
    if factory is None:
        raise UnknownRuntimeError(f"unknown runtime '{name}' (available: {', '.join(available_runtimes())})")
    return factory(options or RuntimeOptions())


def _from_entry_point(name: str) -> RuntimeFactory | None:
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        factory: RuntimeFactory = entry.load()
        register_runtime(name, factory)
        return factory
    return None
