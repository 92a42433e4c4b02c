"""`@step`: a plain function that becomes a node when called inside a pipeline body."""

from __future__ import annotations

import functools
import hashlib
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, overload

import msgspec

from runtimes.errors import PipelineDefinitionError
from runtimes.graph import Handle, contains_placeholder, current_trace

DEFAULT_OUTPUT = "output"


class StepOutput(msgspec.Struct, frozen=True):
    """One named output of a step and its declared type (Any when unannotated)."""

    name: str
    type: Any
    index: int | None  # None: the whole return value; i: element i of the returned tuple


def _annotated_name(tp: Any) -> tuple[Any, str | None]:
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        names = [m for m in meta if isinstance(m, str)]
        return base, (names[0] if names else None)
    return tp, None


def outputs_of(fn: Callable[..., Any], step_name: str) -> tuple[StepOutput, ...]:
    """Read a step's outputs from its return annotation.

    `Annotated[T, "name"]` names the single output; `tuple[Annotated[A, "a"],
    Annotated[B, "b"]]` declares one output per element; anything else is one output
    called `output`.
    """
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: treat the output as untyped
        hints = {}
    ret = hints.get("return", Any)
    base, name = _annotated_name(ret)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return (StepOutput(name or DEFAULT_OUTPUT, _generated_type(base), None),)
    if name is not None:
        return (StepOutput(name, base, None),)
    if typing.get_origin(base) is tuple:
        elements = typing.get_args(base)
        named = [_annotated_name(e) for e in elements]
        if elements and Ellipsis not in elements and any(n for _, n in named):
            missing = [i for i, (_, n) in enumerate(named) if n is None]
            if missing:
                raise PipelineDefinitionError(
                    f"step '{step_name}': element {missing[0]} of its tuple return type has "
                    'no name; annotate every element as Annotated[T, "name"] or none'
                )
            names = [n for _, n in named]
            if len(set(names)) != len(names):
                raise PipelineDefinitionError(
                    f"step '{step_name}': output names repeat in its return type: {names}"
                )
            return tuple(StepOutput(n, t, i) for i, (t, n) in enumerate(named))  # type: ignore[arg-type]
    return (StepOutput(DEFAULT_OUTPUT, base, None),)


def _source(fn: Callable[..., Any]) -> str | None:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):  # defined in a REPL or built dynamically
        return None


def _generated_type(gen_type: Any) -> Any:
    """A generator step's output: the joined string for str items, else the list of items."""
    args = typing.get_args(gen_type)
    item = args[0] if args else Any
    return str if item is str else list[item]  # type: ignore[valid-type]


class Step:
    """A step function plus how to run it (retries, delay, timeout).

    Inside a pipeline body a call records a node and returns handles: one `Handle`, or
    a tuple of them for a step with several named outputs. Elsewhere a call runs the
    function itself, so steps stay plain functions in unit tests.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        cache: bool = False,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.labels = (self.name,)  # its metric labels, built once
        where = f"step '{self.name}'"
        if not self.name.isidentifier():
            raise PipelineDefinitionError(f"{where}: name must be a Python identifier")
        if not isinstance(retries, int) or retries < 0:
            raise PipelineDefinitionError(f"{where}: retries must be an int >= 0, got {retries!r}")
        if retry_delay < 0:
            raise PipelineDefinitionError(f"{where}: retry_delay must be >= 0, got {retry_delay!r}")
        if timeout is not None and timeout <= 0:
            raise PipelineDefinitionError(f"{where}: timeout must be > 0, got {timeout!r}")
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.cache = cache
        self.source = _source(fn)
        self.code_hash = hashlib.sha256((self.source or self.name).encode()).hexdigest()[:16]
        self.is_async = inspect.iscoroutinefunction(fn)
        self.is_async_gen = inspect.isasyncgenfunction(fn)
        self.is_gen = inspect.isgeneratorfunction(fn)
        self.signature = inspect.signature(fn)
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.positional_names = tuple(p.name for p in self.signature.parameters.values() if p.kind in kinds)
        self.outputs = outputs_of(fn, self.name)
        # A step with several named outputs must return a tuple of exactly that many.
        self.tuple_size = len(self.outputs) if self.outputs[0].index is not None else 0
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<step {self.name}>"

    def named_inputs(self, args: list[Any], kwargs: dict[str, Any]) -> dict[Any, Any]:
        """The call's inputs keyed by parameter name (extra positionals by index)."""
        if not args:
            return kwargs
        names = self.positional_names
        named: dict[Any, Any] = dict(zip(names, args, strict=False))  # extras come next
        if len(args) > len(names):
            for i in range(len(names), len(args)):
                named[i] = args[i]
        if kwargs:
            named.update(kwargs)
        return named

    def __call__(self, *args: Any, after: Any = None, **kwargs: Any) -> Any:
        trace = current_trace.get()
        if trace is None:
            if after is not None or contains_placeholder(args) or contains_placeholder(kwargs):
                raise PipelineDefinitionError(
                    f"step '{self.name}' was called with a pipeline handle outside a "
                    "pipeline body; handles only exist while a @pipeline is traced"
                )
            return self.fn(*args, **kwargs)
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PipelineDefinitionError(f"pipeline '{trace.pipeline}', step '{self.name}': {exc}") from None
        node = trace.add(self, args, kwargs, after)
        handles = tuple(Handle(node.id, o.name, o.index, trace) for o in self.outputs)
        if len(handles) == 1 and handles[0].index is None:
            return handles[0]
        return handles


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    cache: bool = False,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    cache: bool = False,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Mark a sync or async function as a pipeline step.

    `retries` re-runs a failing step (after `retry_delay` seconds) before the run fails;
    `timeout` bounds each attempt. A sync step runs in a worker thread, so a timeout
    abandons its thread rather than stopping it; its late result is discarded.

    A generator (or async generator) step streams: each yielded item is sent to
    subscribers as a `chunk` event as it is produced. Its output is the joined string
    when every item is a str, otherwise the list of items.

    `cache=True` lets the Realtime runtime reuse the output for equal inputs within
    SERVING_CACHE_TTL (an in-process LRU of SERVING_CACHE_SIZE entries).
    """

    def wrap(f: Callable[..., Any]) -> Step:
        return Step(f, name=name, retries=retries, retry_delay=retry_delay, timeout=timeout, cache=cache)

    return wrap(fn) if fn is not None else wrap
