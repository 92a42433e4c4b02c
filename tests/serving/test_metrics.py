"""`/metrics` of a real daemon: Prometheus text, every documented family, bounded route
labels, and open even when SERVING_AUTH_KEY protects everything else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families

TESTS = Path(__file__).resolve().parent.parent
HELLO = f"{TESTS.parent / 'examples' / 'hello.py'}:hello"
OBSERVED = f"{TESTS / 'pipelines' / 'observed.py'}:observed"
HANG_GUARD = 15.0
ROUTES = {
    "/invoke",
    "/jobs",
    "/jobs/{job_id}",
    "/jobs/{job_id}/cancel",
    "/stream/{job_id}",
    "/stream",
    "/health",
    "/livez",
    "/readyz",
    "/info",
    "/status",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/static",
    "unmatched",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def served(module_daemon: Any) -> Any:
    return module_daemon(OBSERVED)


@pytest.fixture
def client(served: Any) -> Any:
    with served.client() as c:
        yield c


def scrape(client: httpx.Client) -> tuple[httpx.Response, Samples, set[str]]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    families = list(text_string_to_metric_families(r.text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return r, samples, {f.name for f in families}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_is_prometheus_text(client: httpx.Client) -> None:
    r, samples, _ = scrape(client)
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert "charset=utf-8" in r.headers["content-type"]
    assert samples  # parsed by the reference parser


def test_metrics_content_type_follows_the_accept_header(client: httpx.Client) -> None:
    """Scrapers that ask for OpenMetrics get it; the rest get the classic text format."""
    plain = client.get("/metrics")
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")


def test_every_family_is_exported(client: httpx.Client) -> None:
    # A cacheable step with the same input twice (a miss, then a hit), and an async job.
    for _ in range(2):
        assert client.post("/invoke", json={"parameters": {"n": 11}}).status_code == 200
    r = client.post("/invoke", json={"parameters": {"n": 12}}, headers={"prefer": "respond-async"})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    wait_until(
        lambda: client.get(f"/jobs/{job}").json()["status"] in ("completed", "failed"),
        "the async job to finish",
        timeout=HANG_GUARD,
    )

    _, samples, families = scrape(client)
    expected_families = {
        "serving_requests",
        "serving_request_duration_seconds",
        "serving_invocations",
        "serving_invocation_duration_seconds",
        "serving_step_duration_seconds",
        "serving_jobs",
        "serving_queue_depth",
        "serving_inflight",
        "serving_cache_hits",
        "serving_cache_misses",
        "serving_capture_queue_depth",
        "serving_capture_events",
        "serving_capture_dropped",
        "serving_capture_batch_seconds",
        "serving_capture_breaker_open",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_objects_collected",
    }
    assert expected_families <= families, sorted(expected_families - families)
    assert value(samples, "serving_invocations_total", mode="sync", outcome="completed") >= 2
    assert value(samples, "serving_invocations_total", mode="async", outcome="completed") >= 1
    assert value(samples, "serving_invocation_duration_seconds_count") >= 3
    assert value(samples, "serving_step_duration_seconds_count", step="load") >= 3
    assert value(samples, "serving_cache_hits_total", step="square") >= 1
    assert value(samples, "serving_cache_misses_total", step="square") >= 2
    assert value(samples, "serving_jobs", status="completed") >= 1
    assert ("serving_queue_depth", ()) in samples and ("serving_inflight", ()) in samples
    assert value(samples, "serving_requests_total", method="POST", route="/invoke", status="200") >= 2
    assert value(samples, "serving_requests_total", method="POST", route="/invoke", status="202") >= 1
    assert value(samples, "serving_capture_breaker_open") == 0


def test_capture_metrics_count_written_records(served: Any, client: httpx.Client) -> None:
    _, before, _ = scrape(client)
    client.post("/invoke", json={"parameters": {"n": 1}}).raise_for_status()

    def written_and_drained() -> Samples | None:
        _, after, _ = scrape(client)
        written = value(after, "serving_capture_events_total") - value(before, "serving_capture_events_total")
        return after if written >= 1 and value(after, "serving_capture_queue_depth") == 0 else None

    after = wait_until(
        written_and_drained, "the record to be written", timeout=HANG_GUARD, detail=served.stderr_detail
    )
    batches = "serving_capture_batch_seconds_count"
    assert value(after, batches) > value(before, batches)


def test_route_labels_are_templates(client: httpx.Client) -> None:
    _, before, _ = scrape(client)
    missing = os.urandom(16).hex()
    assert client.get(f"/jobs/{missing}").status_code == 404
    _, after, _ = scrape(client)
    key = ("serving_requests_total", (("method", "GET"), ("route", "/jobs/{job_id}"), ("status", "404")))
    assert after.get(key, 0) - before.get(key, 0) == 1
    assert not any(missing in str(labels) for _, labels in after)


def test_unknown_paths_share_one_label(client: httpx.Client) -> None:
    _, before, _ = scrape(client)
    for _ in range(200):
        assert client.get(f"/random/{os.urandom(8).hex()}").status_code == 404
    _, after, _ = scrape(client)
    key = ("serving_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))
    assert after[key] - before.get(key, 0) == 200
    routes = {
        dict(labels)["route"]
        for name, labels in after
        if name.startswith(("serving_requests_total", "serving_request_duration_seconds"))
    }
    assert routes <= ROUTES
    new_series = {k for k in after if k[0].startswith("serving_request")} - set(before)
    # At most the unmatched series themselves (counter, and histogram buckets/count/sum).
    assert {dict(labels)["route"] for _, labels in new_series} <= {"unmatched", "/metrics"}


def test_metrics_stays_open_with_an_auth_key(daemon: Any) -> None:
    d = daemon(HELLO, auth_key="metrics-test-key")
    with d.client() as client:
        r = client.get("/metrics")
        assert r.status_code == 200
        assert "serving_requests_total" in r.text
        assert client.get("/status").status_code == 401
        assert client.post("/invoke", json={}).status_code == 401
        authorized = {"authorization": "Bearer metrics-test-key"}
        assert client.post("/invoke", json={}, headers=authorized).status_code == 200
        text = client.get("/metrics").text
    assert 'serving_requests_total{method="POST",route="/invoke",status="401"} 1.0' in text
    assert 'serving_requests_total{method="POST",route="/invoke",status="200"} 1.0' in text
