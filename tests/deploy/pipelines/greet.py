"""Typed parameters of every kind the CLI converts; `echo` reports what arrived."""

import json
from typing import Annotated

from serving import pipeline, step


@step
def render(
    name: str, count: int, ratio: float, flag: bool, tags: list[str], options: dict[str, int], max_len: int
) -> Annotated[str, "echo"]:
    received = {
        "name": name,
        "count": count,
        "ratio": ratio,
        "flag": flag,
        "tags": tags,
        "options": options,
        "max_len": max_len,
    }
    return json.dumps(received, sort_keys=True)


@step
def greeting(name: str, count: int) -> Annotated[str, "greeting"]:
    return " ".join([f"hello {name}"] * count)


@pipeline
def greet(
    name: str = "world",
    count: int = 1,
    ratio: float = 0.5,
    flag: bool = False,
    tags: list[str] = [],
    options: dict[str, int] = {},
    max_len: int = 10,
):
    return {
        "echo": render(name, count, ratio, flag, tags, options, max_len),
        "greeting": greeting(name, count),
    }
