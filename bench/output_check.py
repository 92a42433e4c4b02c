"""Cost per run of checking a pipeline's outputs against their declared types (issue 16.5).

    .venv/bin/python bench/output_check.py

CPU time (`time.process_time`), the best of several repeats, so a loaded machine
measures the code rather than its neighbours. A run of `hello` on the sync /invoke
path costs tens of microseconds, so the check should stay well under one.
"""

from __future__ import annotations

import functools
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import hello
import orders
import weather

CASES = [
    ("hello (one str)", hello.hello, {"greeting": "Hello World!"}),
    ("price_order (three floats)", orders.price_order, {"subtotal": 7.5, "tax": 1.5, "total": 9.0}),
    (
        "weather_agent (dict[str, float | str] + str)",
        weather.weather_agent,
        {"weather": {"city": "Rome", "temp_c": 21.5, "conditions": "sunny", "humidity": 40}, "advice": "ok"},
    ),
]


def main() -> None:
    n = 100_000
    for name, pipeline, outputs in CASES:
        assert pipeline.check_outputs(outputs) is None
        best = min(
            timeit.repeat(
                functools.partial(pipeline.check_outputs, outputs),
                number=n,
                repeat=5,
                timer=time.process_time,
            )
        )
        print(f"{name:48} {best / n * 1e9:8.0f} ns per run")


if __name__ == "__main__":
    main()
