"""Outputs are checked against their declared types; JSON numbers are parsed as JSON Schema reads them."""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any

import msgspec
import pytest

from runtimes import OutputError, pipeline, step
from runtimes.errors import ParameterError
from runtimes.types import convert_json, non_finite_path


class Reading(msgspec.Struct):
    temp: float


@dataclasses.dataclass
class Box:
    values: list[float]


@step
def echo(value: Any) -> Annotated[Any, "raw"]:
    return value


@step
def as_dict(value: Any) -> Annotated[dict, "weather"]:
    return value  # type: ignore[no-any-return]


@step
def as_float(value: Any) -> Annotated[float, "number"]:
    return value  # type: ignore[no-any-return]


@step
def as_reading(value: Any) -> Annotated[Reading | None, "reading"]:
    return value  # type: ignore[no-any-return]


@step
def as_ints(value: Any) -> Annotated[dict[str, list[int]], "counts"]:
    return value  # type: ignore[no-any-return]


@pipeline
def typed_outputs(value: Any = None):
    return {"weather": as_dict(value)}


def test_a_none_for_a_dict_output_fails_the_run_naming_step_output_and_types() -> None:
    with pytest.raises(OutputError) as info:
        typed_outputs(value=None)
    message = str(info.value)
    assert "step 'as_dict'" in message
    assert "output 'weather'" in message
    assert "returned None" in message
    assert "declared dict" in message
    assert (info.value.step_id, info.value.output) == ("as_dict", "weather")


def test_in_process_call_returns_the_outputs_mapping() -> None:
    assert typed_outputs(value={"t": 1}) == {"weather": {"t": 1}}


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (as_float, 3),  # an int is a JSON number
        (as_float, 2.5),
        (as_reading, Reading(1.0)),
        (as_reading, None),
        (as_reading, {"temp": 1.0}),  # the same JSON as a Reading
        (as_ints, {"a": [1, 2]}),
        (echo, {"anything": [object]}),  # Any: not checked
    ],
)
def test_values_that_fit_their_declared_type_pass(make: Any, value: Any) -> None:
    @pipeline
    def p(v: Any = None):
        return make(v)

    assert list(p(v=value).values()) == [value]


@pytest.mark.parametrize(
    ("make", "value", "detail"),
    [
        (as_float, "1.5", "returned str for output 'number', which is declared float"),
        (as_float, True, "returned bool"),
        (as_reading, {"temp": "hot"}, "declared Reading | None (Expected float, got str at temp)"),
        (as_ints, {"a": [1, "2"]}, "Expected int, got str at [...][1]"),
    ],
)
def test_values_that_break_their_declared_type_fail(make: Any, value: Any, detail: str) -> None:
    @pipeline
    def p(v: Any = None):
        return make(v)

    with pytest.raises(OutputError) as info:
        p(v=value)
    assert detail in str(info.value)


@pytest.mark.parametrize(
    ("make", "value", "where"),
    [
        (as_float, math.inf, "output 'number'"),
        (as_float, math.nan, "output 'number'"),
        (as_dict, {"a": {"b": [1.0, -math.inf]}}, "output 'weather' at a.b.1"),
        (echo, [Reading(math.nan)], "output 'raw' at 0.temp"),
        (echo, Box([1.0, math.inf]), "output 'raw' at values.1"),
    ],
)
def test_non_finite_numbers_in_outputs_fail_the_run(make: Any, value: Any, where: str) -> None:
    # Made inside the run: a non-finite parameter is refused before it starts.
    @step
    def produce(v: Any) -> Any:
        return value

    @pipeline
    def p(v: Any = None):
        return make(produce(v))

    with pytest.raises(OutputError) as info:
        p()
    assert "non-finite number" in str(info.value)
    assert where in str(info.value)


def test_a_none_in_an_output_is_not_mistaken_for_a_non_finite_number() -> None:
    assert typed_outputs(value={"t": None}) == {"weather": {"t": None}}


def test_non_finite_parameters_are_refused_in_process() -> None:
    @pipeline
    def p(x: float = 1.0, xs: list[float] = [0.0]):
        return echo(x)

    with pytest.raises(ParameterError) as info:
        p(x=math.inf)
    assert info.value.errors[0][0] == "x"
    with pytest.raises(ParameterError) as info:
        p(xs=[1.0, math.nan])
    assert info.value.errors[0][0] == "xs.1"


class Order(msgspec.Struct, forbid_unknown_fields=True):
    qty: int
    ratio: float = 0.5
    extra: Any = None
    tags: dict[str, int] = {}


def test_convert_json_accepts_integral_floats_only_where_ints_are_declared() -> None:
    raw = {"qty": 3.0, "ratio": 1.0, "extra": 2.0, "tags": {"a": 1.0, "b": 2}}
    order = convert_json(raw, Order)
    assert order == Order(qty=3, ratio=1.0, extra=2.0, tags={"a": 1, "b": 2})
    assert type(order.qty) is int
    assert type(order.extra) is float  # Any keeps what was sent
    assert type(order.tags["a"]) is int
    assert convert_json([1.0, 2.0], list[int]) == [1, 2]


@pytest.mark.parametrize(
    "raw", [{"qty": 1.5}, {"qty": "1"}, {"qty": 1, "tags": {"a": 0.5}}, {"qty": 1, "tags": {"a": "1"}}]
)
def test_convert_json_refuses_what_is_not_an_integer(raw: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        convert_json(raw, Order)


def test_non_finite_path() -> None:
    assert non_finite_path({"a": [1.0, {"b": 2}]}) is None
    assert non_finite_path(math.nan) == ""
    assert non_finite_path({"a": [1.0, {"b": math.inf}]}) == "a.1.b"
