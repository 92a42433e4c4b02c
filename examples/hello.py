"""The smallest pipeline: one step, one parameter.

    SERVING_PIPELINE=examples/hello.py:hello python -m serving
    curl -s localhost:8000/invoke -H 'content-type: application/json' \
         -d '{"parameters": {"name": "Ada"}}'

The step is `async def` because it never blocks: async steps run on the event loop,
while a plain `def` step runs in a worker thread so that blocking work (model calls,
file or network I/O) never stalls other requests. For a step this small the thread
hand-off would cost more than the step (see bench/README.md); either form is correct.
"""

from typing import Annotated

from serving import pipeline, step


@step
async def say_hello(name: str) -> Annotated[str, "greeting"]:
    return f"Hello {name}!"


@pipeline
def hello(name: str = "World"):
    return say_hello(name)
