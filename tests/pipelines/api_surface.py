"""A pipeline whose every valid request succeeds, with typed parameters of most kinds
(a Struct with bounds, an enum, a Literal, lists, optionals): schemathesis generates
/invoke cases from their schemas, so a 422 or 500 here is a defect of the document or
the server, never of the pipeline."""

from enum import StrEnum
from typing import Annotated, Literal

import msgspec

from serving import pipeline, step


class Size(StrEnum):
    small = "small"
    large = "large"


class Item(msgspec.Struct, frozen=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    qty: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    size: Size = Size.small


class Summary(msgspec.Struct):
    name: str
    items: int
    total_qty: int
    ratio: float
    mode: str
    note: str | None


@step
def summarize(
    name: str, count: int, ratio: float, items: list[Item], mode: str, note: str | None
) -> Annotated[Summary, "summary"]:
    return Summary(name, len(items), sum(i.qty for i in items) + count, ratio, mode, note)


@step
async def greet(name: str, flag: bool) -> Annotated[str, "greeting"]:
    return f"{'Hi' if flag else 'Hello'} {name}"


@pipeline
def api_surface(
    name: str = "World",
    count: int = 0,
    ratio: float = 0.5,
    flag: bool = False,
    items: list[Item] = [],
    mode: Literal["fast", "careful"] = "fast",
    note: str | None = None,
):
    return summarize(name, count, ratio, items, mode, note), greet(name, flag)
