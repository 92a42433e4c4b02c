"""Prometheus metrics of invocations and jobs (process-wide; updated on the loop thread)."""

from __future__ import annotations

from prometheus_client import Counter

from capture.lockfree_metrics import LoopCounter, LoopHistogram

invocations_total = LoopCounter(
    "serving_invocations",
    "Finished invocations by mode (sync, async) and outcome (completed, failed, timed_out, canceled)",
    ["mode", "outcome"],
)
rejected_total = Counter(
    "serving_rejected_total", "Invocations refused because the queue was full (429)", ["mode"]
)
invocation_duration = LoopHistogram(
    "serving_invocation_duration_seconds",
    "Run time of finished invocations (excluding time queued)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def count_invocation(mode: str, outcome: str) -> None:
    invocations_total.inc((mode, outcome))
