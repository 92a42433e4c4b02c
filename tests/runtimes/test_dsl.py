"""The pipeline DSL: tracing, naming, schemas, load errors and in-process calls."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import decimal
import enum
import importlib.util
import inspect
import json
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict, Union

import msgspec
import pydantic
import pytest

from runtimes import Pipeline, PipelineDefinitionError, StepError, pipeline, step
from runtimes.errors import ParameterError
from runtimes.graph import Composite, Const, Handle, ParamRef

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def as_json(value: Any) -> Any:
    """A schema as a client receives it (tuples become lists)."""
    return json.loads(msgspec.json.encode(value))


def exact(text: str) -> str:
    """A `match=` pattern for a literal message prefix."""
    return "^" + re.escape(text)


# -- steps shared by the tests ----------------------------------------------------------


@step
def greet(name: str) -> str:
    return f"hi {name}"


@step
def double(x: int) -> Annotated[int, "doubled"]:
    return 2 * x


@step
def add(a: int, b: int) -> int:
    return a + b


@step
def scale(x: int, factor: int = 1) -> int:
    return x * factor


@step
def total(values: list[int]) -> Annotated[int, "total"]:
    return sum(values)


@step
def split(x: int) -> tuple[Annotated[int, "lo"], Annotated[int, "hi"]]:
    return x - 1, x + 1


@step
def untyped(x):
    return x


@step
async def async_double(x: int) -> Annotated[int, "doubled"]:
    await asyncio.sleep(0)
    return 2 * x


@step
def explode(x: int) -> int:
    raise ValueError(f"bad input {x}")


class Plain:
    """Not a JSON type."""


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int = 0


@dataclasses.dataclass
class WithBadField:
    ok: int = 1
    bad: Plain | None = None


class Row(TypedDict):
    k: str


@dataclasses.dataclass
class Box:
    size: int = 1


class Customer(pydantic.BaseModel):
    name: str
    age: int = 0


class Tally(msgspec.Struct):  # not frozen: its default must still be copied per call
    count: int = 0


class Item(msgspec.Struct):  # not hashable: a set of them cannot be decoded
    n: int


class Partial(TypedDict):
    a: int
    b: NotRequired[str]


class Inner(pydantic.BaseModel):
    z: int = 0


class Account(pydantic.BaseModel):
    name: str
    inner: Inner = Inner()


# -- tracing and naming -----------------------------------------------------------------


def test_repeated_step_gets_numbered_node_ids() -> None:
    @pipeline
    def twice(name: str = "a"):
        return {"first": greet(name), "second": greet("b"), "third": greet(name)}

    assert [n.id for n in twice.nodes] == ["greet", "greet_2", "greet_3"]
    assert twice(name="x") == {"first": "hi x", "second": "hi b", "third": "hi x"}


def test_step_name_option_sets_the_node_id() -> None:
    @step(name="hello")
    def some_function(name: str) -> str:
        return name

    @pipeline
    def p(name: str = "a"):
        return {"one": some_function(name), "two": some_function("b")}

    assert [n.id for n in p.nodes] == ["hello", "hello_2"]
    assert p(name="z") == {"one": "z", "two": "b"}
    assert some_function.name == "hello"
    assert repr(some_function) == "<step hello>"


def test_node_ids_stay_unique_when_a_step_is_named_like_a_numbered_id() -> None:
    @step
    def greet(x: int) -> int:
        return x

    @step(name="greet_2")
    def other(x: int) -> int:
        return x * 100

    @pipeline
    def p(x: int = 1):
        return {"a": greet(x), "b": other(x), "c": greet(x)}

    ids = [n.id for n in p.nodes]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert p(x=2) == {"a": 2, "b": 200, "c": 2}


def test_upstream_edges_follow_the_data() -> None:
    @pipeline
    def chain(x: int = 1):
        d = double(x)
        s = scale(d, factor=3)
        return add(s, d)

    assert [(n.id, n.upstream) for n in chain.nodes] == [
        ("double", ()),
        ("scale", ("double",)),
        ("add", ("scale", "double")),
    ]
    assert chain(x=2) == {"output": 4 * 3 + 4}


def test_params_and_constants_become_sources() -> None:
    @pipeline
    def p(x: int = 1):
        return scale(x, factor=5)

    (node,) = p.nodes
    (arg,) = node.args
    assert isinstance(arg, ParamRef)
    assert arg.name == "x"
    factor = node.kwargs["factor"]
    assert isinstance(factor, Const)
    assert factor.value == 5
    assert node.upstream == ()
    assert p(x=3) == {"output": 15}


def test_fan_in_with_a_list_of_handles() -> None:
    @pipeline
    def fan(x: int = 1):
        a = double(x)
        b = scale(x, factor=10)
        c = add(x, 100)
        return total([a, b, 7, c])

    merge = fan.node_by_id["total"]
    assert merge.upstream == ("double", "scale", "add")
    (src,) = merge.args
    assert isinstance(src, Composite)
    assert isinstance(src.items[2][1], Const)
    assert fan(x=1) == {"total": 2 + 10 + 7 + 101}


def test_fan_in_with_a_dict_of_handles() -> None:
    @step
    def describe(parts: dict[str, int]) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(parts.items()))

    @pipeline
    def fan(x: int = 1):
        return describe({"d": double(x), "c": 0, "p": x})

    assert fan.node_by_id["describe"].upstream == ("double",)
    assert fan(x=4) == {"output": "c=0,d=8,p=4"}


def test_a_list_of_only_constants_and_params_is_not_an_edge() -> None:
    @pipeline
    def p(x: int = 1):
        return total([x, 2, 3])

    (node,) = p.nodes
    assert node.upstream == ()
    assert p(x=1) == {"total": 6}


def test_every_step_runs_even_when_its_output_is_not_returned() -> None:
    seen: list[int] = []

    @step
    def record(x: int) -> None:
        seen.append(x)

    @pipeline
    def side_effects(x: int = 1):
        record(x)  # independent of the returned step
        d = double(x)
        record(d)  # downstream of the returned step
        return d

    assert side_effects(x=3) == {"doubled": 6}
    assert sorted(seen) == [3, 6]


def test_namedtuple_of_handles_is_rebuilt_and_hidden_handles_are_refused() -> None:
    Pair = collections.namedtuple("Pair", "x y")

    @step
    def use_pair(p: Pair) -> int:
        return p.x + p.y

    @pipeline
    def nt():
        return use_pair(Pair(double(1), 2))

    assert nt() == {"output": 4}

    @dataclasses.dataclass
    class Cfg:
        value: object

    with pytest.raises(PipelineDefinitionError, match="inside a Cfg is not resolved"):

        @pipeline
        def dc():
            return use_pair(Cfg(double(1)))


def test_after_adds_ordering_edges_from_handles_and_ids() -> None:
    order: list[str] = []

    @step
    def first() -> str:
        order.append("first")
        return "a"

    @step
    def second() -> str:
        order.append("second")
        return "b"

    @step
    def third() -> str:
        order.append("third")
        return "c"

    @pipeline
    def ordered(x: int = 0):
        t = third(after="second")
        s = second(after=[first()])
        return {"s": s, "t": t}

    ups = {n.id: n.upstream for n in ordered.nodes}
    assert ups == {"first": (), "second": ("first",), "third": ("second",)}
    assert [n.id for n in ordered.nodes] == ["first", "second", "third"]
    assert ordered() == {"s": "b", "t": "c"}
    assert order == ["first", "second", "third"]


# -- output naming ----------------------------------------------------------------------


def test_annotated_return_names_the_output() -> None:
    @pipeline
    def p(x: int = 1):
        return double(x)

    assert [o.key for o in p.outputs] == ["doubled"]
    assert p.return_shape == "single"
    assert p(x=21) == {"doubled": 42}


def test_unannotated_and_plain_returns_are_called_output() -> None:
    @pipeline
    def p(x: int = 1):
        return untyped(x)

    @pipeline
    def q(name: str = "a"):
        return greet(name)

    assert [(o.key, o.type) for o in p.outputs] == [("output", Any)]
    assert [(o.key, o.type) for o in q.outputs] == [("output", str)]


def test_tuple_of_annotated_gives_one_handle_per_element() -> None:
    seen: dict[str, Any] = {}

    @pipeline
    def p(x: int = 10):
        handles = split(x)
        seen["handles"] = handles
        return handles

    lo, hi = seen["handles"]
    assert isinstance(lo, Handle)
    assert (lo.node_id, lo.output, lo.index) == ("split", "lo", 0)
    assert (hi.node_id, hi.output, hi.index) == ("split", "hi", 1)
    assert [o.key for o in p.outputs] == ["lo", "hi"]
    assert p.return_shape == "tuple"
    assert p(x=10) == {"lo": 9, "hi": 11}


def test_elements_of_a_tuple_output_feed_other_steps() -> None:
    @pipeline
    def p(x: int = 10):
        lo, hi = split(x)
        return add(lo, hi)

    assert p.node_by_id["add"].upstream == ("split",)
    assert p(x=10) == {"output": 20}


def test_tuple_return_mixes_outputs_of_several_steps() -> None:
    @pipeline
    def p(x: int = 3, name: str = "a"):
        lo, hi = split(x)
        return double(hi), lo, greet(name)

    assert [o.key for o in p.outputs] == ["doubled", "lo", "output"]
    assert list(p(x=3, name="z").values()) == [8, 2, "hi z"]


def test_dict_return_names_outputs_by_key() -> None:
    @pipeline
    def p(x: int = 1):
        lo, hi = split(x)
        return {"low": lo, "high": hi, "twice": double(x)}

    assert [(o.key, o.node_id) for o in p.outputs] == [
        ("low", "split"),
        ("high", "split"),
        ("twice", "double"),
    ]
    assert p.return_shape == "dict"
    assert p(x=5) == {"low": 4, "high": 6, "twice": 10}


def test_output_schema_lists_output_names_and_types() -> None:
    @pipeline
    def p(x: int = 1):
        lo, _hi = split(x)
        return {"low": lo, "any": untyped(x), "text": greet("a")}

    assert p.output_schema() == {
        "$ref": "#/$defs/PipelineOutput",
        "$defs": {
            "PipelineOutput": {
                "title": "PipelineOutput",
                "type": "object",
                "properties": {"low": {"type": "integer"}, "any": {}, "text": {"type": "string"}},
                "required": ["low", "any", "text"],
            }
        },
    }


# -- input schemas ----------------------------------------------------------------------


def test_input_schema_scalars_defaults_and_closed_object() -> None:
    @pipeline
    def p(count: int = 3, ratio: float = 0.5, name: str | None = None, loud: bool = False, guess=2):
        return scale(count, guess)

    assert p.input_schema() == {
        "$ref": "#/$defs/PipelineInput",
        "$defs": {
            "PipelineInput": {
                "title": "PipelineInput",
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "default": 3},
                    "ratio": {"type": "number", "default": 0.5},
                    "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                    "loud": {"type": "boolean", "default": False},
                    "guess": {"type": "integer", "default": 2},
                },
                "required": [],
                "additionalProperties": False,
            }
        },
    }


def test_input_schema_with_a_struct_parameter() -> None:
    @pipeline
    def p(point: Point = Point(x=1), tags: tuple[str, ...] = ("a",)):
        return untyped(point)

    schema = as_json(p.input_schema())
    assert schema["$defs"]["PipelineInput"] == {
        "title": "PipelineInput",
        "type": "object",
        "properties": {
            "point": {"$ref": "#/$defs/Point", "default": {"x": 1, "y": 0}},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
        },
        "required": [],
        "additionalProperties": False,
    }
    assert schema["$defs"]["Point"] == {
        "title": "Point",
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
        "required": ["x"],
    }
    assert p(point={"x": 5, "y": 6}) == {"output": Point(5, 6)}


def test_input_schema_with_enum_and_literal_parameters() -> None:
    @pipeline
    def p(color: Color = Color.red, mode: Literal["fast", "slow"] = "fast"):
        return untyped([color, mode])

    schema = p.input_schema()
    props = schema["$defs"]["PipelineInput"]["properties"]
    assert props["color"]["$ref"] == "#/$defs/Color"
    assert props["mode"] == {"enum": ["fast", "slow"], "default": "fast"}
    assert schema["$defs"]["Color"] == {"title": "Color", "enum": ["blue", "red"]}
    assert schema["$defs"]["PipelineInput"]["required"] == []
    assert p(color="blue", mode="slow") == {"output": [Color.blue, "slow"]}
    with pytest.raises(ParameterError) as info:
        p(mode="medium")
    assert info.value.errors == [("mode", "Invalid enum value 'medium'")]


def test_input_schema_with_a_pydantic_parameter() -> None:
    @pipeline
    def p(customer: Customer = Customer(name="Ada")):
        return untyped(customer)

    props = p.input_schema()["$defs"]["PipelineInput"]["properties"]
    assert {k: v for k, v in props["customer"].items() if k != "default"} == {
        "title": "Customer",
        "type": "object",
        "properties": {
            "name": {"title": "Name", "type": "string"},
            "age": {"title": "Age", "type": "integer", "default": 0},
        },
        "required": ["name"],
    }
    assert p() == {"output": Customer(name="Ada")}
    assert p(customer={"name": "Bob", "age": 7}) == {"output": Customer(name="Bob", age=7)}
    with pytest.raises(ParameterError) as info:
        p(customer={"name": "Bob", "age": "old"})
    assert [loc for loc, _ in info.value.errors] == ["customer.age"]


def test_input_schema_carries_every_default() -> None:
    @pipeline
    def p(
        color: Color = Color.red,
        tags: list[str] = ["a"],
        tally: Tally = Tally(),
        day: datetime.date = datetime.date(2024, 1, 2),
        account: Account = Account(name="Ada"),
    ):
        return untyped(color)

    props = as_json(p.input_schema())["$defs"]["PipelineInput"]["properties"]
    assert props["color"]["default"] == "red"
    assert props["tags"]["default"] == ["a"]
    assert props["tally"]["default"] == {"count": 0}
    assert props["day"]["default"] == "2024-01-02"
    assert props["account"]["default"] == {"name": "Ada", "inner": {"z": 0}}


def test_pydantic_parameter_schema_refs_resolve() -> None:
    @pipeline
    def p(account: Account = Account(name="Ada")):
        return untyped(account)

    schema = p.input_schema()
    ref = schema["$defs"]["PipelineInput"]["properties"]["account"]["properties"]["inner"]["$ref"]
    assert ref.removeprefix("#/$defs/") in schema["$defs"]


def test_mutable_defaults_are_fresh_for_every_call() -> None:
    @step
    def grow(items: list[int]) -> list[int]:
        items.append(len(items))
        return items

    @pipeline
    def p(items: list[int] = [0]):
        return grow(items)

    assert p() == {"output": [0, 1]}
    assert p() == {"output": [0, 1]}


def test_allowed_parameter_types_load() -> None:
    @pipeline
    def p(
        a: list[int] = [],
        b: dict[str, float] = {},
        c: tuple[int, str] = (1, "x"),
        d: Row = {"k": "v"},
        e: Box = Box(),
        f: Optional[int] = None,  # noqa: UP045
        g: Union[int, str] = 1,  # noqa: UP007
        h: datetime.datetime | None = None,
        i: uuid.UUID | None = None,
        j: decimal.Decimal = decimal.Decimal("1.5"),
        k: Annotated[int, msgspec.Meta(ge=0)] = 0,
        m: Any = None,
    ):
        return untyped(a)

    assert [q.name for q in p.parameters] == list("abcdefghijkm")
    assert p(a=[1]) == {"output": [1]}


# -- load errors ------------------------------------------------------------------------


def test_parameter_without_default() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=exact("pipeline 'needs_default', parameter 'x': has no default; every parameter needs one"),
    ):

        @pipeline
        def needs_default(x: int):
            return double(x)


@pytest.mark.parametrize(
    ("annotation", "default", "problem"),
    [
        (Plain, None, "Plain is not a JSON type"),
        (set[object], set(), "object is not a JSON type"),
        (list[Plain], [], "Plain is not a JSON type"),
        (bytes, b"", "bytes is not a JSON type"),
        (dict[float, int], {}, "dict keys must be str, not float"),
        (Literal[1.5], 1.5, "Literal values must be str, int, bool or None, not 1.5"),
        (WithBadField, WithBadField(), "WithBadField.bad: Plain is not a JSON type"),
    ],
)
def test_non_json_parameter_type(annotation: Any, default: Any, problem: str) -> None:
    def body(value=default):
        return untyped(value)

    body.__annotations__ = {"value": annotation}
    with pytest.raises(
        PipelineDefinitionError, match=exact(f"pipeline 'body', parameter 'value': {problem}")
    ):
        pipeline(body)


def test_pydantic_model_inside_a_union_is_refused_at_load() -> None:
    """Optional or list of a pydantic model used to load, then fail every request."""
    with pytest.raises(PipelineDefinitionError, match="'customer': pydantic model Customer must be"):

        @pipeline
        def p(customer: Customer | None = None):
            return untyped(customer)


def test_set_items_must_be_hashable_and_typed_dict_keys_may_be_not_required() -> None:
    @step
    def count(items: object) -> int:
        return len(items)  # type: ignore[arg-type]

    with pytest.raises(PipelineDefinitionError, match="set items must be hashable"):

        @pipeline
        def p(items: set[Item] = set()):
            return count(items)

    @pipeline
    def q(td: Partial = {"a": 1}):
        return count(td)

    assert q(td={"a": 2, "b": "x"}) == {"output": 2}


def test_default_that_does_not_fit_its_type() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=exact("pipeline 'misfit', parameter 'x': default 'many' does not fit: Expected `int`"),
    ):

        @pipeline
        def misfit(x: int = "many"):  # type: ignore[assignment]
            return double(x)


@pytest.mark.parametrize("signature", ["*args", "**kwargs"])
def test_var_arguments_are_refused(signature: str) -> None:
    namespace: dict[str, Any] = {"double": double}
    exec(f"def varargs(x: int = 1, {signature}):\n    return double(x)\n", namespace)
    name = signature.lstrip("*")
    with pytest.raises(
        PipelineDefinitionError,
        match=exact(f"pipeline 'varargs', parameter '{name}': *args and **kwargs cannot be request"),
    ):
        pipeline(namespace["varargs"])


def test_unresolvable_annotation() -> None:
    with pytest.raises(
        PipelineDefinitionError, match=exact("pipeline 'ghost': cannot resolve its annotations")
    ):

        @pipeline
        def ghost(x: NoSuchType = 1):  # type: ignore[name-defined]  # noqa: F821
            return double(x)


def test_body_that_calls_no_step() -> None:
    with pytest.raises(PipelineDefinitionError, match=exact("pipeline 'idle': its body calls no step")):

        @pipeline
        def idle(x: int = 1):
            return x


def test_body_that_returns_none() -> None:
    with pytest.raises(PipelineDefinitionError, match=exact("pipeline 'silent': returns nothing")):

        @pipeline
        def silent(x: int = 1):
            double(x)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("5", "pipeline 'odd': returns int; return a step's handle"),
        ("x", "pipeline 'odd': returns ParamRef; return a step's handle"),
        ("[double(x)]", "pipeline 'odd': returns list; return a step's handle"),
        ("(double(x), 5)", "pipeline 'odd': returns 5 where a step handle is expected"),
        ("{'a': double(x), 'b': 'c'}", "pipeline 'odd': returns 'c' where a step handle is expected"),
        ("{1: double(x)}", "pipeline 'odd': output keys must be non-empty strings, got 1"),
        ("()", "pipeline 'odd': returns an empty tuple"),
        ("{}", "pipeline 'odd': returns an empty dict"),
    ],
)
def test_body_that_returns_something_else_than_handles(returned: str, message: str) -> None:
    namespace: dict[str, Any] = {"double": double}
    exec(f"def odd(x: int = 1):\n    double(x)\n    return {returned}\n", namespace)
    with pytest.raises(PipelineDefinitionError, match=exact(message)):
        pipeline(namespace["odd"])


def test_two_unnamed_outputs_clash() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=exact(
            "pipeline 'clash': output name 'output' is used by both output 'output' of step "
            "'greet' and output 'output' of step 'untyped'; name them with "
            'Annotated[T, "name"] or return a dict'
        ),
    ):

        @pipeline
        def clash(name: str = "a"):
            return greet(name), untyped(name)


def test_the_same_handle_twice_in_a_tuple_clashes() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"output name 'doubled' is used by both"):

        @pipeline
        def clash(x: int = 1):
            d = double(x)
            return d, d


def test_handle_used_outside_its_pipeline() -> None:
    stash: list[Any] = []

    @pipeline
    def leaky(x: int = 1):
        d = double(x)
        stash.append(d)
        stash.append(x)
        return d

    handle, param = stash
    message = "step 'double' was called with a pipeline handle outside a pipeline body"
    with pytest.raises(PipelineDefinitionError, match=exact(message)):
        double(handle)
    with pytest.raises(PipelineDefinitionError, match=exact(message)):
        double(x=param)
    with pytest.raises(PipelineDefinitionError, match=exact("step 'total' was called with a pipeline")):
        total([1, handle])
    with pytest.raises(PipelineDefinitionError, match=exact(message)):
        double(1, after=handle)


def test_handle_of_another_pipeline() -> None:
    stash: list[Any] = []

    @pipeline
    def first(x: int = 1):
        d = double(x)
        stash.append(d)
        return d

    with pytest.raises(
        PipelineDefinitionError,
        match=exact(
            "pipeline 'second', step 'scale': output 'doubled' of step 'double' belongs to another pipeline"
        ),
    ):

        @pipeline
        def second(x: int = 1):
            return scale(stash[0], x)

    with pytest.raises(
        PipelineDefinitionError, match=exact("pipeline 'third': returns a handle of another pipeline")
    ):

        @pipeline
        def third(x: int = 1):
            double(x)
            return stash[0]

    with pytest.raises(PipelineDefinitionError, match=r"^pipeline 'fourth', step 'double': .*another"):

        @pipeline
        def fourth(x: int = 1):
            return double(x, after=stash[0])


@pytest.mark.parametrize(
    ("statement", "what"),
    [
        ("if city:\n        pass", "used as a condition"),
        ("f'{city}'", "formatted into a string"),
        ("str(city)", "converted to str"),
        ("len(city)", "measured with len()"),
        ("city.upper()", "attribute 'upper' read"),
        ("city[0]", "indexed"),
        ("list(city)", "iterated"),
        ("[1, 2][city]", "used as an int"),
    ],
)
def test_placeholder_misuse_on_a_parameter(statement: str, what: str) -> None:
    namespace: dict[str, Any] = {"greet": greet}
    exec(f"def misuse(city: str = 'Rome'):\n    {statement}\n    return greet(city)\n", namespace)
    with pytest.raises(
        PipelineDefinitionError,
        match=exact(
            f"parameter 'city' of pipeline 'misuse' has no value while the pipeline is traced ({what})"
        ),
    ):
        pipeline(namespace["misuse"])


def test_placeholder_misuse_on_a_handle() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=exact("output 'doubled' of step 'double' has no value while the pipeline is traced (used as"),
    ):

        @pipeline
        def branchy(x: int = 1):
            d = double(x)
            if d:
                return d
            return greet("no")

    with pytest.raises(PipelineDefinitionError, match=r"output 'doubled' of step 'double' .*\(iterated\)"):

        @pipeline
        def unpack(x: int = 1):
            a, _b = double(x)
            return a


def test_body_raising_is_a_definition_error() -> None:
    with pytest.raises(
        PipelineDefinitionError, match=exact("pipeline 'broken': its body raised ZeroDivisionError")
    ):

        @pipeline
        def broken(x: int = 1):
            1 / 0  # noqa: B018
            return double(x)


def test_step_called_with_wrong_arguments_in_a_body() -> None:
    with pytest.raises(
        PipelineDefinitionError, match=exact("pipeline 'wrong', step 'double': too many positional arguments")
    ):

        @pipeline
        def wrong(x: int = 1):
            return double(x, 2)


def test_after_cycle_names_the_cycle() -> None:
    @step
    def ping() -> int:
        return 1

    @step
    def pong() -> int:
        return 2

    with pytest.raises(
        PipelineDefinitionError, match=exact("pipeline 'loop': steps form a cycle: ping -> pong -> ping")
    ):

        @pipeline
        def loop(x: int = 1):
            ping(after="pong")
            return pong(after="ping")


def test_after_unknown_step_and_wrong_type() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=exact("pipeline 'p', step 'double': after= names unknown step 'nope' (known: double)"),
    ):

        @pipeline
        def p(x: int = 1):
            return double(x, after="nope")

    with pytest.raises(
        PipelineDefinitionError,
        match=exact("pipeline 'q', step 'double': after= takes step handles or step ids, not int"),
    ):

        @pipeline
        def q(x: int = 1):
            return double(x, after=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "step 'opt': retries must be an int >= 0, got -1"),
        ({"retries": 1.5}, "step 'opt': retries must be an int >= 0, got 1.5"),
        ({"timeout": 0}, "step 'opt': timeout must be > 0, got 0"),
        ({"timeout": -2.5}, "step 'opt': timeout must be > 0, got -2.5"),
        ({"retry_delay": -1}, "step 'opt': retry_delay must be >= 0, got -1"),
    ],
)
def test_bad_step_options(options: dict[str, Any], message: str) -> None:
    def opt(x: int) -> int:
        return x

    with pytest.raises(PipelineDefinitionError, match=exact(message)):
        step(**options)(opt)


def test_bad_step_name() -> None:
    with pytest.raises(
        PipelineDefinitionError, match=exact("step 'not-valid': name must be a Python identifier")
    ):

        @step(name="not-valid")
        def f(x: int) -> int:
            return x


def test_partly_named_tuple_return() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=exact("step 'half': element 1 of its tuple return type has no name"),
    ):

        @step
        def half(x: int) -> tuple[Annotated[int, "a"], int]:
            return x, x

    with pytest.raises(
        PipelineDefinitionError,
        match=exact("step 'same': output names repeat in its return type: ['a', 'a']"),
    ):

        @step
        def same(x: int) -> tuple[Annotated[int, "a"], Annotated[int, "a"]]:
            return x, x


def test_unnamed_tuple_return_is_one_output() -> None:
    @step
    def pair(x: int) -> tuple[int, int]:
        return x, x

    assert [(o.name, o.index) for o in pair.outputs] == [("output", None)]


# -- local calls ------------------------------------------------------------------------


def test_local_call_shapes() -> None:
    @pipeline
    def single(x: int = 1):
        return double(x)

    @pipeline
    def as_tuple(x: int = 1):
        return split(x)

    @pipeline
    def as_dict(x: int = 1):
        return {"d": double(x), "a": async_double(x)}

    assert isinstance(single, Pipeline)
    # The same mapping /invoke answers with, whatever shape the body returned.
    assert single() == {"doubled": 2}
    assert single(x=4) == {"doubled": 8}
    assert as_tuple(x=4) == {"lo": 3, "hi": 5}
    assert as_dict(x=4) == {"d": 8, "a": 8}


def test_local_call_validates_parameters() -> None:
    @pipeline
    def p(x: int = 1, point: Point = Point(x=0)):
        return double(x)

    with pytest.raises(ParameterError, match=exact("x: Expected int, got str")) as info:
        p(x="three")
    assert info.value.errors == [("x", "Expected int, got str")]
    assert isinstance(info.value, ValueError)

    with pytest.raises(ParameterError) as info:
        p(point={"y": 1})
    assert info.value.errors == [("point", "Object missing required field x")]

    with pytest.raises(ParameterError) as info:
        p(nope=1)
    assert info.value.errors == [("nope", "unknown parameter")]


def test_local_call_coerces_json_like_values() -> None:
    @pipeline
    def p(x: int = 1):
        return double(x)

    assert p(x="4") == {"doubled": 8}  # strict=False: the same leniency as for query-like inputs


def test_local_call_failing_step_raises_step_error() -> None:
    @pipeline
    def failing(x: int = 1):
        return explode(double(x))

    with pytest.raises(StepError, match=exact("step 'explode' failed: ValueError: bad input 6")) as info:
        failing(x=3)
    assert info.value.step_id == "explode"
    assert isinstance(info.value.cause, ValueError)
    assert info.value.attempts == 1


def test_local_call_inside_a_running_loop_is_refused() -> None:
    @pipeline
    def p(x: int = 1):
        return double(x)

    async def main() -> Any:
        with pytest.raises(RuntimeError, match=r"use `await p.run_async\(...\)` there"):
            p(x=1)
        return await p.run_async(x=5)

    assert asyncio.run(main()) == {"doubled": 10}


# -- steps outside a pipeline -----------------------------------------------------------


def test_sync_step_outside_a_pipeline_runs_the_function() -> None:
    assert double(4) == 8
    assert scale(3, factor=2) == 6
    assert split(3) == (2, 4)
    assert double.__name__ == "double"
    assert double.__doc__ is None
    assert double.is_async is False


def test_async_step_outside_a_pipeline_returns_an_awaitable() -> None:
    pending = async_double(4)
    assert inspect.isawaitable(pending)
    assert asyncio.run(pending) == 8
    assert async_double.is_async is True


def test_step_error_propagates_outside_a_pipeline() -> None:
    with pytest.raises(ValueError, match="bad input 1"):
        explode(1)


# -- examples ---------------------------------------------------------------------------


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_hello() -> None:
    hello = load_example("hello").hello
    assert hello(name="Ada") == {"greeting": "Hello Ada!"}
    assert [o.key for o in hello.outputs] == ["greeting"]


def test_example_orders() -> None:
    orders = load_example("orders")
    assert orders.price_order(order={"sku": "A-1", "qty": 3, "unit_price": 2.5}) == {
        "subtotal": 7.5,
        "tax": 1.5,
        "total": 9.0,
    }
    assert [o.key for o in orders.price_order.outputs] == ["subtotal", "tax", "total"]
    with pytest.raises(ParameterError) as info:
        orders.price_order(order={"sku": "A-1", "qty": 0, "unit_price": 2.5})
    assert info.value.errors == [("order.qty", "Expected int >= 1")]


def test_example_fanout() -> None:
    enrich = load_example("fanout").enrich
    assert enrich.node_by_id["merge"].upstream == ("count_words", "count_vowels", "shout")
    assert enrich(text="ab cd", delay=0) == {"summary": {"words": 2, "vowels": 1, "upper": "AB CD"}}


def test_example_weather() -> None:
    agent = load_example("weather").weather_agent
    outputs = agent(city="Rome")
    weather, advice = outputs["weather"], outputs["advice"]
    assert weather["city"] == "Rome"
    assert advice.startswith("Rome: ")
    assert [o.key for o in agent.outputs] == ["weather", "advice"]


def test_parse_parameters_takes_a_struct_of_another_type_by_its_fields() -> None:
    """Typed as accepting any Struct; a foreign one used to fail in dict() with TypeError."""

    @step
    def echo(name: str) -> Annotated[str, "name"]:
        return name

    @pipeline
    def p(name: str = "x", times: int = 1):
        return echo(name)

    class Given(msgspec.Struct):
        name: str
        times: int

    parsed = p.parse_parameters(Given("ada", 2))
    assert isinstance(parsed, p.input_type)
    assert msgspec.structs.asdict(parsed) == {"name": "ada", "times": 2}

    class Wrong(msgspec.Struct):
        name: str
        colour: str

    with pytest.raises(ParameterError):
        p.parse_parameters(Wrong("ada", "red"))
