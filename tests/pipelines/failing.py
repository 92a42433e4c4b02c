"""A pipeline whose second step always raises ValueError("boom")."""

from typing import Annotated

from serving import pipeline, step


@step
def prepare(name: str) -> Annotated[str, "prepared"]:
    return name.strip()


@step
def explode(prepared: str) -> Annotated[str, "never"]:
    raise ValueError("boom")


@pipeline
def failing(name: str = "x"):
    return explode(prepare(name))
