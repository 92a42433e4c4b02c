"""Prometheus metrics of the capture pipeline (process-wide, like the registry itself)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# With several workers (prometheus-client's multiprocess mode) a gauge is per process:
# queued records add up over the live workers; the breaker is open if any worker's is.
queue_depth = Gauge(
    "serving_capture_queue_depth", "Capture records waiting to be written", multiprocess_mode="livesum"
)
events_total = Counter("serving_capture_events_total", "Capture records written to the sink")
dropped_total = Counter(
    "serving_capture_dropped_total",
    "Capture records dropped: queue full, sink failure or breaker open",
    ["reason"],
)
batch_seconds = Histogram(
    "serving_capture_batch_seconds",
    "Time to write one batch to the sink",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
breaker_open = Gauge(
    "serving_capture_breaker_open", "1 while the capture circuit breaker is open", multiprocess_mode="livemax"
)
