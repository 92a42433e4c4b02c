"""`examples/hello.py` with a plain `def` step: measures the worker-thread hand-off."""

from typing import Annotated

from serving import pipeline, step


@step
def say_hello(name: str) -> Annotated[str, "greeting"]:
    return f"Hello {name}!"


@pipeline
def hello(name: str = "World"):
    return say_hello(name)
