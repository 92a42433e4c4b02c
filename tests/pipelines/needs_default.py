"""A definition error: a pipeline parameter without a default."""

from typing import Annotated

from serving import pipeline, step


@step
def greet(name: str) -> Annotated[str, "greeting"]:
    return f"hi {name}"


@pipeline
def needs_default(name: str):
    return greet(name)
