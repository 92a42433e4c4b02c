"""The traced DAG: where each step input comes from, and the handles a trace hands out.

While a `@pipeline` body is traced, step calls do not run: they record a `StepNode`
and return `Handle`s that stand for outputs not computed yet. Each input of a node is a
`Source` that resolves to a value at run time from the request parameters and the
results of upstream steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec

from runtimes.errors import PipelineDefinitionError

if TYPE_CHECKING:
    from runtimes.step import Step


class Source:
    """Where one step input comes from."""

    __slots__ = ()
    upstream: tuple[str, ...] = ()

    def resolve(self, params: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        raise NotImplementedError


class Const(Source):
    """A literal written in the pipeline body."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def resolve(self, params: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        return self.value


class _Placeholder(Source):
    """Refuses the Python operations a trace cannot see, with a message saying why.

    A pipeline body runs once, at load, with placeholders instead of values: `if city:`
    or `f"{city}"` there would silently bake one branch or a repr into the DAG.
    """

    __slots__ = ()

    def _misuse(self, what: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(
            f"{self!r} has no value while the pipeline is traced ({what}); "
            "pass it to a step and do the work inside the step"
        )

    def __bool__(self) -> bool:
        raise self._misuse("used as a condition")

    def __str__(self) -> str:
        raise self._misuse("converted to str")

    def __format__(self, spec: str) -> str:
        raise self._misuse("formatted into a string")

    def __iter__(self) -> Any:
        raise self._misuse("iterated")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._misuse(f"attribute {name!r} read")

    def __getitem__(self, key: Any) -> Any:
        raise self._misuse("indexed")

    def __len__(self) -> int:
        raise self._misuse("measured with len()")

    def __index__(self) -> int:
        raise self._misuse("used as an int")

    def __eq__(self, other: object) -> bool:
        raise self._misuse("compared with ==")

    def __ne__(self, other: object) -> bool:
        raise self._misuse("compared with !=")

    def __lt__(self, other: object) -> bool:
        raise self._misuse("compared with <")

    def __gt__(self, other: object) -> bool:
        raise self._misuse("compared with >")

    def __le__(self, other: object) -> bool:
        raise self._misuse("compared with <=")

    def __ge__(self, other: object) -> bool:
        raise self._misuse("compared with >=")

    def __hash__(self) -> int:
        return id(self)


class ParamRef(_Placeholder):
    """A pipeline parameter, filled from the request at run time."""

    __slots__ = ("name", "pipeline")

    def __init__(self, name: str, pipeline: str) -> None:
        self.name = name
        self.pipeline = pipeline

    def __repr__(self) -> str:
        return f"parameter '{self.name}' of pipeline '{self.pipeline}'"

    def resolve(self, params: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        return params[self.name]


class Handle(_Placeholder):
    """One output of a traced step call, resolved from that step's result at run time."""

    __slots__ = ("index", "node_id", "output", "trace", "upstream")

    def __init__(self, node_id: str, output: str, index: int | None, trace: Trace) -> None:
        self.node_id = node_id
        self.output = output
        self.index = index  # None: the whole return value; i: element i of a tuple
        self.trace = trace
        self.upstream = (node_id,)

    def __repr__(self) -> str:
        return f"output '{self.output}' of step '{self.node_id}'"

    def resolve(self, params: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        value = results[self.node_id]
        return value if self.index is None else value[self.index]


class Composite(Source):
    """A list, tuple or dict literal that holds handles (fan-in: `merge([a, b, c])`)."""

    __slots__ = ("items", "kind", "upstream")

    def __init__(self, kind: type, items: list[tuple[Any, Source]]) -> None:
        self.kind = kind
        self.items = items
        self.upstream = tuple(dict.fromkeys(u for _, s in items for u in s.upstream))

    def resolve(self, params: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        if self.kind is dict:
            return {k: s.resolve(params, results) for k, s in self.items}
        values = [s.resolve(params, results) for _, s in self.items]
        if self.kind is list:
            return values
        if hasattr(self.kind, "_fields"):  # a namedtuple takes its fields as arguments
            return self.kind(*values)
        return self.kind(values)


Resolver = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


def resolver(source: Source) -> Resolver:
    """`source.resolve` as a plain function made once, at load.

    Reading an attribute of a `ParamRef` or a `Handle` at run time goes through their
    `__getattr__` hook (which turns misuse in a pipeline body into a clear error), the
    slow path of every attribute read; a closure over the values read once skips it.
    """
    if isinstance(source, ParamRef):
        name = source.name
        return lambda params, results: params[name]
    if isinstance(source, Handle):
        node_id, index = source.node_id, source.index
        if index is None:
            return lambda params, results: results[node_id]
        return lambda params, results: results[node_id][index]
    if isinstance(source, Const):
        value = source.value
        return lambda params, results: value
    return source.resolve


def to_source(value: Any, trace: Trace, where: str) -> Source:
    """Turn one argument of a traced step call into the `Source` that feeds it."""
    if isinstance(value, (Handle, ParamRef)):
        if isinstance(value, Handle) and value.trace is not trace:
            raise PipelineDefinitionError(
                f"{where}: {value!r} belongs to another pipeline; a handle is only "
                "valid inside the pipeline body that created it"
            )
        return value
    if isinstance(value, (list, tuple, dict)):
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        items = [(k, to_source(v, trace, where)) for k, v in pairs]
        if any(not isinstance(s, Const) for _, s in items):
            return Composite(dict if isinstance(value, dict) else type(value), items)
    elif _hides_placeholder(value):
        raise PipelineDefinitionError(
            f"{where}: a step handle or parameter inside a {type(value).__name__} is not resolved; "
            "pass it to the step directly, or in a list, tuple or dict"
        )
    return Const(value)


def _hides_placeholder(value: Any) -> bool:
    """A handle inside a set, dataclass or Struct would reach the step unresolved."""
    if isinstance(value, (set, frozenset)):
        return any(contains_placeholder(v) or _hides_placeholder(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(contains_placeholder(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, msgspec.Struct):
        return any(contains_placeholder(getattr(value, f)) for f in value.__struct_fields__)
    return False


def contains_placeholder(value: Any) -> bool:
    if isinstance(value, _Placeholder):
        return True
    if isinstance(value, (list, tuple)):
        return any(contains_placeholder(v) for v in value)
    if isinstance(value, dict):
        return any(contains_placeholder(v) for v in value.values())
    return False


class StepNode:
    """One invocation of a step in the DAG, with its id (`greet`, `greet_2`, ...)."""

    __slots__ = ("after", "arg_resolvers", "args", "id", "kwarg_resolvers", "kwargs", "step", "upstream")

    def __init__(
        self,
        node_id: str,
        step: Step,
        args: tuple[Source, ...],
        kwargs: dict[str, Source],
        after: tuple[Handle | str, ...],
    ) -> None:
        self.id = node_id
        self.step = step
        self.args = args
        self.kwargs = kwargs
        self.after = after
        self.upstream: tuple[str, ...] = ()
        # What the executor calls per run to fill the step's arguments (see `resolver`).
        self.arg_resolvers = tuple(resolver(s) for s in args)
        self.kwarg_resolvers = tuple((k, resolver(s)) for k, s in kwargs.items())

    def __repr__(self) -> str:
        return f"StepNode({self.id!r}, upstream={self.upstream!r})"


class Trace:
    """The recording of one pipeline body; active only while that body runs at load."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.nodes: list[StepNode] = []
        self._counts: dict[str, int] = {}

    def add(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any], after: Any) -> StepNode:
        count = self._counts.get(step.name, 0) + 1
        node_id = step.name if count == 1 else f"{step.name}_{count}"
        taken = {n.id for n in self.nodes}
        while node_id in taken:  # a step may itself be named like `greet_2`
            count += 1
            node_id = f"{step.name}_{count}"
        self._counts[step.name] = count
        where = f"pipeline '{self.pipeline}', step '{node_id}'"
        src_args = tuple(to_source(a, self, where) for a in args)
        src_kwargs = {k: to_source(v, self, where) for k, v in kwargs.items()}
        if after is None:
            after_items: tuple[Any, ...] = ()
        elif isinstance(after, (list, tuple)):
            after_items = tuple(after)
        else:
            after_items = (after,)
        for item in after_items:
            if isinstance(item, Handle):
                to_source(item, self, where)
            elif not isinstance(item, str):
                raise PipelineDefinitionError(
                    f"{where}: after= takes step handles or step ids, not {type(item).__name__}"
                )
        node = StepNode(node_id, step, src_args, src_kwargs, after_items)
        self.nodes.append(node)
        return node


current_trace: ContextVar[Trace | None] = ContextVar("serving_current_trace", default=None)
