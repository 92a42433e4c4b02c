"""Regressions found in review: each test failed before its fix."""

import datetime
import enum
import json
import threading
from typing import Annotated

import msgspec
import pydantic
import pytest

from runtimes import DagExecutor, PipelineDefinitionError, RunStatus, pipeline, step
from runtimes import events as ev


@pytest.fixture
def anyio_backend():
    return "asyncio"


# Regression: two sync steps never overlap (StepThreads only ever starts one thread)
@pytest.mark.anyio
async def test_independent_sync_steps_run_concurrently_in_threads():
    barrier = threading.Barrier(2, timeout=5)

    @step
    def left() -> int:
        barrier.wait()
        return threading.get_ident()

    @step
    def right() -> int:
        barrier.wait()
        return threading.get_ident()

    @pipeline
    def both(x: int = 0):
        return {"left": left(), "right": right()}

    executor = DagExecutor(max_threads=4)
    try:
        result = await executor.run(both, {"x": 0})
    finally:
        executor.shutdown()
    assert result.status is RunStatus.completed, result.error


# Regression: a step id can repeat: greet, greet_2 (step named greet_2), greet_2 again
def test_node_ids_are_unique_when_a_step_is_named_like_a_numbered_id():
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


# Regression: a step whose result does not match its declared tuple shape makes run() raise
@pytest.mark.anyio
async def test_wrong_tuple_shape_fails_the_run_instead_of_raising():
    @step
    def two(x: int) -> tuple[Annotated[int, "a"], Annotated[int, "b"]]:
        return x  # not a tuple

    @pipeline
    def p(x: int = 1):
        return two(x)

    events = []
    result = await DagExecutor().run(p, {"x": 1}, on_event=events.append)
    assert result.status is RunStatus.failed
    assert isinstance(events[-1], ev.RunFailed)


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Point(msgspec.Struct):  # not frozen
    x: int = 0


class Inner(pydantic.BaseModel):
    z: int = 0


class Customer(pydantic.BaseModel):
    name: str
    inner: Inner = Inner()


@step
def echo(v):
    return v


# Regression: input_schema() drops defaults that are not immutable scalars, and says null for pydantic
def test_input_schema_carries_every_default():
    @pipeline
    def p(
        color: Color = Color.red,
        tags: list[str] = ["a"],
        point: Point = Point(),
        day: datetime.date = datetime.date(2024, 1, 2),
        customer: Customer = Customer(name="Ada"),
    ):
        return echo(color)

    props = json.loads(msgspec.json.encode(p.input_schema()))["$defs"]["PipelineInput"]["properties"]
    assert props["color"]["default"] == "red"
    assert props["tags"]["default"] == ["a"]
    assert props["point"]["default"] == {"x": 0}
    assert props["day"]["default"] == "2024-01-02"
    assert props["customer"]["default"] == {"name": "Ada", "inner": {"z": 0}}


# Regression: a nested pydantic model's "$ref": "#/$defs/Inner" points to a $defs the document lacks
def test_pydantic_parameter_schema_refs_resolve():
    @pipeline
    def p(customer: Customer = Customer(name="Ada")):
        return echo(customer)

    schema = p.input_schema()
    ref = schema["$defs"]["PipelineInput"]["properties"]["customer"]["properties"]["inner"]["$ref"]
    assert ref.removeprefix("#/$defs/") in schema["$defs"]


# Regression: Optional / list of a pydantic model passes the load check, then every request fails
def test_pydantic_model_inside_a_union_is_refused_at_load():
    with pytest.raises(
        PipelineDefinitionError, match="parameter 'customer': pydantic model Customer must be"
    ):

        @pipeline
        def p(customer: Customer | None = None):
            return echo(customer)
