"""Cost of one lock-free counter increment and histogram observation, in-process.

    .venv/bin/python bench/lockfree_metrics.py                      # one worker: in memory
    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) .venv/bin/python bench/lockfree_metrics.py
                                                                    # several: written through

The second form is what each worker pays under SERVING_WORKERS > 1.
"""

from __future__ import annotations

import timeit

from capture.lockfree_metrics import MULTIPROC_DIR, LoopCounter, LoopHistogram

N = 1_000_000


def main() -> None:
    counter = LoopCounter("bench_requests", "bench", ["method", "route", "status"])
    histogram = LoopHistogram("bench_duration_seconds", "bench", ["route"])
    labels, route = ("POST", "/invoke", "200"), ("/invoke",)
    inc = min(timeit.repeat(lambda: counter.inc(labels), number=N, repeat=5)) / N * 1e9
    observe = min(timeit.repeat(lambda: histogram.observe(route, 0.0003), number=N, repeat=5)) / N * 1e9
    mode = "multiprocess (write-through)" if MULTIPROC_DIR else "single process (in memory)"
    print(f"{mode}: counter.inc {inc:.0f} ns, histogram.observe {observe:.0f} ns")


if __name__ == "__main__":
    main()
