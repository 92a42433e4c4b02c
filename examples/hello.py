"""The smallest pipeline: one step, one parameter.

    SERVING_PIPELINE=examples/hello.py:hello python -m serving
    curl -s localhost:8000/invoke -H 'content-type: application/json' \
         -d '{"parameters": {"name": "Ada"}}'
"""

from typing import Annotated

from serving import pipeline, step


@step
def say_hello(name: str) -> Annotated[str, "greeting"]:
    return f"Hello {name}!"


@pipeline
def hello(name: str = "World"):
    return say_hello(name)
