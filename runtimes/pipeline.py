"""`@pipeline`: trace a function body once into a DAG with typed inputs and outputs."""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import typing
import warnings
from collections.abc import Callable, Mapping
from typing import Any, overload

import msgspec

from capture import Capture
from runtimes.errors import ParameterError, PipelineDefinitionError
from runtimes.graph import Handle, ParamRef, StepNode, Trace, current_trace, resolver
from runtimes.outputs import OutputCheck
from runtimes.types import json_type_problem, non_finite_path, pydantic_model, struct_field_type

_IMMUTABLE = (int, float, str, bool, type(None), bytes, frozenset, tuple)
DEPLOY_ENTRY_POINT_GROUP = "serving.deploy"  # where `Pipeline.deploy` finds the deployer


class Parameter(msgspec.Struct, frozen=True):
    """One request parameter: its type and default."""

    name: str
    type: Any
    default: Any


class OutputSpec(msgspec.Struct, frozen=True):
    """One key of the response's `outputs` and the step output that fills it."""

    key: str
    node_id: str
    handle: Any  # the Handle that resolves this output from the step results
    type: Any


def _topological(nodes: list[StepNode], pipeline: str) -> list[StepNode]:
    """Order nodes so each comes after its upstream; a cycle is a definition error."""
    by_id = {n.id: n for n in nodes}
    for node in nodes:
        ups: list[str] = []
        for src in (*node.args, *node.kwargs.values()):
            ups.extend(src.upstream)
        for item in node.after:
            target = item.node_id if isinstance(item, Handle) else item
            if target not in by_id:
                raise PipelineDefinitionError(
                    f"pipeline '{pipeline}', step '{node.id}': after= names unknown step "
                    f"'{target}' (known: {', '.join(by_id)})"
                )
            ups.append(target)
        node.upstream = tuple(dict.fromkeys(ups))
    order: list[StepNode] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: StepNode, path: list[str]) -> None:
        mark = state.get(node.id)
        if mark == 2:
            return
        if mark == 1:
            cycle = [*path[path.index(node.id) :], node.id]
            raise PipelineDefinitionError(f"pipeline '{pipeline}': steps form a cycle: {' -> '.join(cycle)}")
        state[node.id] = 1
        for up in node.upstream:
            visit(by_id[up], [*path, node.id])
        state[node.id] = 2
        order.append(node)

    for node in nodes:
        visit(node, [])
    return order


def _parameters(fn: Callable[..., Any], pipeline: str) -> list[Parameter]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise PipelineDefinitionError(
            f"pipeline '{pipeline}': cannot resolve its annotations: {exc}"
        ) from None
    params: list[Parameter] = []
    for p in inspect.signature(fn).parameters.values():
        where = f"pipeline '{pipeline}', parameter '{p.name}'"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise PipelineDefinitionError(f"{where}: *args and **kwargs cannot be request parameters")
        if p.default is p.empty:
            raise PipelineDefinitionError(f"{where}: has no default; every parameter needs one")
        tp = hints.get(p.name)
        if tp is None:
            default_type = type(p.default)
            tp = default_type if default_type in (int, float, str, bool) else Any
        if (problem := json_type_problem(tp)) is not None:
            raise PipelineDefinitionError(f"{where}: {problem}")
        model = pydantic_model(tp)
        try:
            if model is not None:
                if not isinstance(p.default, model):
                    model.model_validate(p.default)
            else:
                msgspec.convert(msgspec.to_builtins(p.default), tp, strict=False)
        except Exception as exc:
            raise PipelineDefinitionError(f"{where}: default {p.default!r} does not fit: {exc}") from None
        params.append(Parameter(p.name, tp, p.default))
    return params


def _field(param: Parameter) -> tuple[str, Any, Any]:
    ftype = struct_field_type(param.type)
    default = param.default
    if pydantic_model(param.type) is not None:
        dumped = default.model_dump(mode="json") if not isinstance(default, dict) else default
        return (param.name, ftype, msgspec.field(default_factory=functools.partial(copy.deepcopy, dumped)))
    if isinstance(default, _IMMUTABLE) or (
        isinstance(default, msgspec.Struct) and type(default).__struct_config__.frozen
    ):
        return (param.name, ftype, default)
    return (param.name, ftype, msgspec.field(default_factory=functools.partial(copy.deepcopy, default)))


class Pipeline:
    """A traced pipeline: its DAG, request parameters, output keys and JSON types.

    Calling it (`weather(city="Rome")`) runs it in-process and returns its outputs as
    the mapping `/invoke` answers with (`{"weather": ..., "advice": ...}`), whatever
    shape the body returned them in, so code moves between the two unchanged.
    """

    def __init__(
        self, fn: Callable[..., Any], *, name: str | None = None, capture: Capture | None = None
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.capture = capture or Capture()
        if not isinstance(self.capture, Capture):
            raise PipelineDefinitionError(f"pipeline '{self.name}': capture= must be a Capture")
        self.parameters = _parameters(fn, self.name)
        self.nodes, self.outputs, self.return_shape = self._trace()
        self.node_by_id = {n.id: n for n in self.nodes}
        self.output_resolvers = tuple((o.key, resolver(o.handle)) for o in self.outputs)  # see graph.resolver
        self.input_type: type[msgspec.Struct] = msgspec.defstruct(
            "PipelineInput",
            [_field(p) for p in self.parameters],
            kw_only=True,
            forbid_unknown_fields=True,
        )
        self.output_type: type[msgspec.Struct] = msgspec.defstruct(
            "PipelineOutput", [(o.key, o.type) for o in self.outputs], kw_only=True
        )
        self.check_outputs = OutputCheck(self.outputs)
        self.pydantic_params = {
            p.name: m for p in self.parameters if (m := pydantic_model(p.type)) is not None
        }
        self._warned_memory_only = False
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<pipeline {self.name}: {len(self.nodes)} steps>"

    def _trace(self) -> tuple[list[StepNode], list[OutputSpec], str]:
        trace = Trace(self.name)
        refs = {p.name: ParamRef(p.name, self.name) for p in self.parameters}
        token = current_trace.set(trace)
        try:
            returned = self.fn(**refs)
        except PipelineDefinitionError:
            raise
        except Exception as exc:
            raise PipelineDefinitionError(
                f"pipeline '{self.name}': its body raised {type(exc).__name__}: {exc}"
            ) from None
        finally:
            current_trace.reset(token)
        if not trace.nodes:
            raise PipelineDefinitionError(f"pipeline '{self.name}': its body calls no step")
        nodes = _topological(trace.nodes, self.name)
        outputs, shape = self._outputs(returned, trace)
        return nodes, outputs, shape

    def _outputs(self, returned: Any, trace: Trace) -> tuple[list[OutputSpec], str]:
        where = f"pipeline '{self.name}'"
        if returned is None:
            raise PipelineDefinitionError(
                f"{where}: returns nothing; return a step's handle, a tuple or a dict of handles"
            )
        pairs: list[tuple[Any, Any]]  # (key, handle), both checked below
        if isinstance(returned, Handle):
            shape, pairs = "single", [(returned.output, returned)]
        elif isinstance(returned, tuple):
            shape, pairs = "tuple", [(getattr(h, "output", None), h) for h in returned]
        elif isinstance(returned, dict):
            shape, pairs = "dict", list(returned.items())
        else:
            raise PipelineDefinitionError(
                f"{where}: returns {type(returned).__name__}; return a step's handle, "
                "a tuple or a dict of handles"
            )
        if not pairs:
            raise PipelineDefinitionError(f"{where}: returns an empty {shape}")
        specs: list[OutputSpec] = []
        seen: dict[str, Handle] = {}
        for key, handle in pairs:
            if not isinstance(handle, Handle):
                raise PipelineDefinitionError(f"{where}: returns {handle!r} where a step handle is expected")
            if handle.trace is not trace:
                raise PipelineDefinitionError(f"{where}: returns a handle of another pipeline")
            if not isinstance(key, str) or not key:
                raise PipelineDefinitionError(f"{where}: output keys must be non-empty strings, got {key!r}")
            if key in seen:
                raise PipelineDefinitionError(
                    f"{where}: output name '{key}' is used by both {seen[key]!r} and "
                    f'{handle!r}; name them with Annotated[T, "name"] or return a dict'
                )
            seen[key] = handle
            node = next(n for n in trace.nodes if n.id == handle.node_id)
            out_type = next(o.type for o in node.step.outputs if o.name == handle.output)
            specs.append(OutputSpec(key, handle.node_id, handle, out_type))
        return specs, shape

    # -- validation -------------------------------------------------------------------

    def parse_parameters(self, params: Mapping[str, Any] | msgspec.Struct) -> msgspec.Struct:
        """Validate plain values into the `PipelineInput` struct.

        Raises ParameterError naming the bad field.
        """
        if isinstance(params, self.input_type):
            return params
        try:
            values = msgspec.structs.asdict(params) if isinstance(params, msgspec.Struct) else dict(params)
            parsed = msgspec.convert(values, self.input_type, strict=False)
        except msgspec.ValidationError as exc:
            loc, msg = split_validation_error(exc, prefix="")
            if not loc and "unknown field" in msg:  # name the parameter, as /invoke does
                name = msg.rsplit(" ", 1)[-1]
                loc, msg = name, "unknown parameter"
            raise ParameterError([(loc, msg)]) from None
        # JSON cannot carry NaN or infinity (a request with 1e400 is refused as it is
        # decoded); a Python caller can, and a run would turn them into a silent null.
        for name, value in values.items():
            if (path := non_finite_path(value)) is not None:
                loc = f"{name}.{path}" if path else name
                raise ParameterError([(loc, "not a finite number (NaN and infinity are not JSON)")])
        return parsed

    def call_kwargs(self, inputs: msgspec.Struct) -> dict[str, Any]:
        """The values steps receive: pydantic parameters become model instances."""
        values = msgspec.structs.asdict(inputs)
        if self.pydantic_params:
            errors: list[tuple[str, str]] = []
            for name, model in self.pydantic_params.items():
                try:
                    values[name] = model.model_validate(values[name])
                except Exception as exc:  # pydantic.ValidationError, kept optional
                    details: list[dict[str, Any]] = getattr(exc, "errors", list)() or [
                        {"loc": (), "msg": str(exc)}
                    ]
                    for err in details:
                        loc = ".".join(str(p) for p in (name, *err.get("loc", ())))
                        errors.append((loc, err.get("msg", str(exc))))
            if errors:
                raise ParameterError(errors)
        return values

    # -- schemas ----------------------------------------------------------------------

    def input_schema(self) -> dict[str, Any]:
        schema = msgspec.json.schema(self.input_type, schema_hook=any_json_schema)
        self.patch_input_schema(schema["$defs"]["PipelineInput"], schema["$defs"], "#/$defs/{model}")
        return schema

    def patch_input_schema(self, body: dict[str, Any], defs: dict[str, Any], ref_template: str) -> None:
        """Close the input object, show every default, and describe pydantic parameters
        with pydantic's own schema (its definitions moved up into `defs`)."""
        body["additionalProperties"] = False
        props = body.setdefault("properties", {})
        for p in self.parameters:
            model = self.pydantic_params.get(p.name)
            if model is None:
                props.setdefault(p.name, {})["default"] = msgspec.to_builtins(p.default)
                continue
            sub = model.model_json_schema(ref_template=ref_template)
            defs.update(sub.pop("$defs", {}))
            default = p.default if isinstance(p.default, dict) else p.default.model_dump(mode="json")
            props[p.name] = sub | {"default": default}

    def output_schema(self) -> dict[str, Any]:
        return msgspec.json.schema(self.output_type, schema_hook=any_json_schema)

    # -- deploying ----------------------------------------------------------------------

    def deploy(self, deployment_name: str, **options: Any) -> Any:
        """Snapshot this pipeline and run it as a deployment (see serving.deploy.sdk).

        The deployer is found through the `serving.deploy` entry point, not an import:
        runtimes never imports serving, and it works whatever was imported first.
        Raises RuntimeError when no installed package provides it.
        """
        from importlib.metadata import entry_points

        for entry in entry_points(group=DEPLOY_ENTRY_POINT_GROUP, name="deploy"):
            return entry.load()(self, deployment_name, **options)
        raise RuntimeError(
            "deploying needs the serving deploy package (entry point group "
            f"{DEPLOY_ENTRY_POINT_GROUP!r}), which is not installed: pip install serving"
        )

    # -- running in-process -----------------------------------------------------------

    def __call__(self, **params: Any) -> dict[str, Any]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                f"pipeline '{self.name}' was called inside a running event loop; "
                f"use `await {self.name}.run_async(...)` there"
            )
        return asyncio.run(self.run_async(**params))

    async def run_async(self, **params: Any) -> dict[str, Any]:
        """Run the pipeline in this process and return its outputs by name; raises
        StepError, or OutputError for an output that breaks its declared type."""
        from runtimes.memory import MemoryOnlyRuntime

        if self.capture.memory_only and not self._warned_memory_only:
            self._warned_memory_only = True
            warnings.warn(
                f"pipeline '{self.name}': Capture(memory_only=True) only applies when served; "
                "an in-process call never captures anything, so it is ignored here",
                stacklevel=3,
            )
        runtime = MemoryOnlyRuntime()
        await runtime.start()
        try:
            result = await runtime.run(self, self.parse_parameters(params))
        finally:
            await runtime.stop()
        if result.exception is not None:
            raise result.exception
        assert result.outputs is not None  # a run that raised nothing completed
        return result.outputs


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...


@overload
def pipeline(
    *, name: str | None = None, capture: Capture | None = None
) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    capture: Capture | None = None,
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Mark a function whose body wires steps; its defaulted parameters are the request.

    The body runs once, right here, with placeholders for the parameters: wiring
    mistakes raise PipelineDefinitionError at import, never on a request.
    """

    def wrap(f: Callable[..., Any]) -> Pipeline:
        return Pipeline(f, name=name, capture=capture)

    return wrap(fn) if fn is not None else wrap


def any_json_schema(tp: Any) -> dict[str, Any]:
    """Schema for an annotation msgspec cannot describe (`object`, a plain class): any value.

    An output annotated `dict[str, object]` is legitimate: `runtimes.outputs` checks the
    parts msgspec knows and only the instance type of the rest.
    """
    return {"description": f"any JSON value ({getattr(tp, '__qualname__', repr(tp))})"}


def split_validation_error(exc: msgspec.ValidationError, prefix: str) -> tuple[str, str]:
    """Turn msgspec's "Expected `int`, got `str` - at `$.a.b`" into ("a.b", "Expected int, got str")."""
    message, _, path = str(exc).partition(" - at `$")
    loc = path.rstrip("`").lstrip(".")
    loc = loc.replace("[", ".").replace("]", "") if loc else ""
    full = ".".join(p for p in (prefix, loc) if p)
    return full, message.replace("`", "")
