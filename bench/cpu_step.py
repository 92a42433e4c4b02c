"""The hello pipeline with a step that takes 1 ms of CPU: what a real model sees.

`bench/run.py` serves it on MemoryOnly (`cpu`) and on Realtime with full capture
(`cpu-realtime`): with a step of that size, capture's fixed cost per run should be lost
in the step's own (target: Realtime >= 0.97x MemoryOnly). The step spins on the loop
thread's CPU clock, not the wall clock, so time the core gives to other processes does
not shorten the work.
"""

import time
from typing import Annotated

from serving import pipeline, step

STEP_CPU_S = 0.001


@step
async def say_hello(name: str) -> Annotated[str, "greeting"]:
    deadline = time.thread_time() + STEP_CPU_S
    while time.thread_time() < deadline:
        pass
    return f"Hello {name}!"


@pipeline
def hello(name: str = "World"):
    return say_hello(name)
