"""`/metrics`: Prometheus text format, HTTP metrics recorded by the request middleware.

Route labels are route templates (`/jobs/{job_id}`), never raw paths, and unknown
paths share the label `unmatched`: label cardinality stays bounded whatever clients
send. Label children are cached so recording costs a dict lookup and two increments.

With several workers (SERVING_WORKERS > 1) a scrape lands on one of them, so `/metrics`
answers from prometheus-client's multiprocess mode: counters and histograms are the sums
of every worker's value files (dead workers' included, so a sum never goes backwards),
`serving_inflight` and `serving_queue_depth` the sums over live workers (each worker
publishes its own every `GAUGE_INTERVAL` seconds and before answering a scrape), and
`serving_jobs`, read from the shared job store, is the same from any worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from capture.lockfree_metrics import MULTIPROC_DIR, LoopCounter, LoopHistogram
from jobs import JobManager, JobStatus

GAUGE_INTERVAL = 1.0  # seconds between a worker's updates of its live gauges

requests_total = LoopCounter(
    "serving_requests", "HTTP requests by method, route template and status", ["method", "route", "status"]
)
request_duration = LoopHistogram(
    "serving_request_duration_seconds", "HTTP request duration by route template", ["route"]
)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class HttpMetrics:
    """Records one request; called by RequestContextMiddleware after the response."""

    def __init__(self) -> None:
        self._status_labels: dict[int, str] = {}  # str(status) made once per status code

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        route_obj = scope.get("route")
        if route_obj is not None:
            route = getattr(route_obj, "path", "unmatched")
        elif scope["path"] == "/invoke":
            route = "/invoke"  # served by the fast path, which does not go through the router
        else:
            route = "unmatched"
        method = scope.get("method", "GET")
        if method not in _METHODS:
            method = "OTHER"
        label = self._status_labels.get(status)
        if label is None:
            label = self._status_labels[status] = str(status)
        requests_total.inc((method, route, label))
        request_duration.observe((route,), seconds)


class JobsCollector(Collector):
    """Gauges read at scrape time from the job manager: no bookkeeping per request.

    Job counts come from the store, which may be a network call away, and collect()
    cannot await: `metrics_endpoint` awaits `refresh()` first.
    """

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager
        self.job_counts: dict[JobStatus, int] = {}

    async def refresh(self) -> None:
        self.job_counts = await self.manager.status_counts()

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("serving_jobs", "Jobs kept, by status", labels=["status"])
        counts = self.job_counts
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))
        yield jobs
        if _shared is not None:
            return  # per-worker figures: summed from the value files instead
        yield GaugeMetricFamily(
            "serving_job_events_retained_bytes",
            "Bytes of job events kept in memory (bounded by SERVING_EVENTS_MEMORY_MAX)",
            value=self.manager.event_budget.retained,
        )
        threads = step_thread_stats(self.manager.runtime)
        yield GaugeMetricFamily(
            "serving_step_threads_busy",
            "Threads running a sync step now, abandoned ones included",
            value=threads["busy"],
        )
        yield GaugeMetricFamily(
            "serving_step_threads_abandoned_running",
            "Sync step calls still running after their run ended (timeout, cancel, client gone)",
            value=threads["abandoned"],
        )
        yield CounterMetricFamily(
            "serving_step_threads_abandoned",
            "Sync step calls left running by a run that ended before them",
            value=threads["abandoned_total"],
        )
        yield GaugeMetricFamily(
            "serving_queue_depth", "Invocations waiting for a slot", value=self.manager.limiter.queued
        )
        yield GaugeMetricFamily(
            "serving_inflight", "Invocations running now (sync and async)", value=self.manager.limiter.running
        )


class _SharedMetrics:
    """What `/metrics` answers from with several workers: the sum of every worker's
    value files, plus the job counts of the shared store."""

    def __init__(self, directory: str) -> None:
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=directory)
        # Not registered anywhere: their values reach scrapes through the files.
        self.inflight = Gauge(
            "serving_inflight",
            "Invocations running now (sync and async), all workers",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "serving_queue_depth",
            "Invocations waiting for a slot, all workers",
            registry=None,
            multiprocess_mode="livesum",
        )

        self.threads_busy = Gauge(
            "serving_step_threads_busy",
            "Threads running a sync step now, abandoned ones included, all workers",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.threads_abandoned = Gauge(
            "serving_step_threads_abandoned_running",
            "Sync step calls still running after their run ended, all workers",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.abandoned_total = Counter(
            "serving_step_threads_abandoned",
            "Sync step calls left running by a run that ended before them, all workers",
            registry=None,
        )
        self._abandoned_seen = 0
        self.events_bytes = Gauge(
            "serving_job_events_retained_bytes",
            "Bytes of job events kept in memory, all workers (each bounded by SERVING_EVENTS_MEMORY_MAX)",
            registry=None,
            multiprocess_mode="livesum",
        )

    def publish(self, manager: JobManager) -> None:
        self.inflight.set(manager.limiter.running)
        self.queue_depth.set(manager.limiter.queued)
        self.events_bytes.set(manager.event_budget.retained)
        threads = step_thread_stats(manager.runtime)
        self.threads_busy.set(threads["busy"])
        self.threads_abandoned.set(threads["abandoned"])
        if threads["abandoned_total"] > self._abandoned_seen:  # a counter moves by deltas
            self.abandoned_total.inc(threads["abandoned_total"] - self._abandoned_seen)
            self._abandoned_seen = threads["abandoned_total"]


def step_thread_stats(runtime: object) -> dict[str, int]:
    """The runtime's step-thread figures; zeros for a runtime without a DagExecutor."""
    executor = getattr(runtime, "executor", None)
    if executor is None or not hasattr(executor, "thread_stats"):
        return {"max": 0, "threads": 0, "busy": 0, "abandoned": 0, "abandoned_total": 0}
    stats: dict[str, int] = executor.thread_stats()
    return stats


_shared = _SharedMetrics(MULTIPROC_DIR) if MULTIPROC_DIR else None
_collector: JobsCollector | None = None


def register_jobs_collector(manager: JobManager) -> None:
    """One collector per process, pointing at the current app's manager."""
    global _collector
    if _collector is None:
        _collector = JobsCollector(manager)
        REGISTRY.register(_collector)
        if _shared is not None:
            _shared.registry.register(_collector)
    else:
        _collector.manager = manager


@contextlib.asynccontextmanager
async def worker_gauges(manager: JobManager) -> AsyncIterator[None]:
    """While the app runs as one of several workers, publish its running and queued
    counts for the others' scrapes; a no-op for a single process, whose scrape reads
    them directly."""
    if _shared is None:
        yield
        return
    shared = _shared

    async def publish() -> None:
        while True:
            shared.publish(manager)
            await asyncio.sleep(GAUGE_INTERVAL)

    task = asyncio.create_task(publish())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def metrics_endpoint(request: Request) -> Response:
    # Prometheus scrapers say which exposition versions they accept; answer in one of them.
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    if _collector is not None:
        await _collector.refresh()
    if _shared is None:
        return Response(encoder(REGISTRY), media_type=content_type)
    if _collector is not None:
        _shared.publish(_collector.manager)
    return Response(encoder(_shared.registry), media_type=content_type)
