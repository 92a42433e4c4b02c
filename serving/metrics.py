"""`/metrics`: Prometheus text format, HTTP metrics recorded by the request middleware.

Route labels are route templates (`/jobs/{job_id}`), never raw paths, and unknown
paths share the label `unmatched`: label cardinality stays bounded whatever clients
send. Label children are cached so recording costs a dict lookup and two increments.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from capture.lockfree_metrics import LoopCounter, LoopHistogram
from jobs import JobManager, JobStatus

requests_total = LoopCounter(
    "serving_requests", "HTTP requests by method, route template and status", ["method", "route", "status"]
)
request_duration = LoopHistogram(
    "serving_request_duration_seconds", "HTTP request duration by route template", ["route"]
)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class HttpMetrics:
    """Records one request; called by RequestContextMiddleware after the response."""

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
        requests_total.inc((method, route, str(status)))
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
        yield GaugeMetricFamily(
            "serving_queue_depth", "Invocations waiting for a slot", value=self.manager.limiter.queued
        )
        yield GaugeMetricFamily(
            "serving_inflight", "Invocations running now (sync and async)", value=self.manager.limiter.running
        )


_collector: JobsCollector | None = None


def register_jobs_collector(manager: JobManager) -> None:
    """One collector per process, pointing at the current app's manager."""
    global _collector
    if _collector is None:
        _collector = JobsCollector(manager)
        REGISTRY.register(_collector)
    else:
        _collector.manager = manager


async def metrics_endpoint(request: Request) -> Response:
    # Prometheus scrapers say which exposition versions they accept; answer in one of them.
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    if _collector is not None:
        await _collector.refresh()
    return Response(encoder(REGISTRY), media_type=content_type)
