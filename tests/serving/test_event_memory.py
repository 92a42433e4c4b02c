"""Job event logs bounded by bytes, per job and for the whole process (issue 17, item 5).

Functional checks against a real daemon: the retained bytes `/metrics` reports stay
within the bounds, and a reader that comes late gets a `gap` for what was dropped,
then the rest in order and the end. (RSS figures are in bench/, never here.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from polling import GUARD
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from serving.websocket import MAX_SUBSCRIPTIONS

TESTS = Path(__file__).resolve().parent.parent
CHATTY = f"{TESTS / 'pipelines' / 'chatty.py'}:chatty"
GATED = f"{TESTS / 'pipelines' / 'gated.py'}:gated"
METRIC = "serving_job_events_retained_bytes"


def retained(client: httpx.Client, url: str) -> float:
    r = client.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == METRIC:
                return float(sample.value)
    raise AssertionError(f"{METRIC} missing from /metrics")


def run_job(client: httpx.Client, url: str, count: int, size: int) -> str:
    r = client.post(
        f"{url}/invoke", params={"mode": "async"}, json={"parameters": {"count": count, "size": size}}
    )
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    job = client.get(f"{url}/jobs/{job_id}", params={"wait": GUARD}).json()
    assert job["status"] == "completed", job
    return job_id


def read_all(client: httpx.Client, url: str, job_id: str) -> list[dict[str, Any]]:
    with connect_sse(client, "GET", f"{url}/stream/{job_id}") as source:
        assert source.response.status_code == 200
        return [json.loads(sse.data) for sse in source.iter_sse() if sse.data]


def assert_gap_then_tail(events: list[dict[str, Any]]) -> None:
    """A late reader's view: one gap from seq 1, then every kept seq in order, the end last."""
    gap = events[0]
    assert gap["type"] == "gap" and gap["from_seq"] == 1, events[:2]
    tail = [e["seq"] for e in events[1:]]
    assert tail == list(range(gap["to_seq"] + 1, gap["to_seq"] + 1 + len(tail)))
    assert events[-1]["type"] == "run_completed"


def test_a_job_keeps_at_most_its_byte_bound(daemon: Any) -> None:
    bound = 20_000
    d = daemon(CHATTY, job_events_max_bytes=bound, events_memory_max=10_000_000, access_log="false")
    with httpx.Client(timeout=GUARD) as client:
        assert retained(client, d.url) == 0
        job_id = run_job(client, d.url, count=200, size=1000)  # ~225 KB of events
        kept = retained(client, d.url)
        assert 0 < kept <= bound
        events = read_all(client, d.url, job_id)
        assert_gap_then_tail(events)
        assert len(events) > 2  # the newest ones that fit are kept, not only the end
        r = client.get(f"{d.url}/status")
        assert r.json()["job_events"] == {"retained_bytes": kept, "max_bytes": 10_000_000}


def test_all_jobs_together_keep_at_most_the_memory_bound(daemon: Any) -> None:
    bound = 60_000
    d = daemon(CHATTY, job_events_max_bytes=10_000_000, events_memory_max=bound, access_log="false")
    with httpx.Client(timeout=GUARD) as client:
        jobs = []
        for _ in range(6):  # ~45 KB each: the process keeps at most `bound` of ~270 KB
            jobs.append(run_job(client, d.url, count=40, size=1000))
            assert retained(client, d.url) <= bound
        # The least recently active job lost its events first; its reader still gets the end.
        assert_gap_then_tail(read_all(client, d.url, jobs[0]))
        newest = read_all(client, d.url, jobs[-1])
        assert newest[-1]["type"] == "run_completed"
        # Deleting jobs gives their bytes back.
        for job_id in jobs:
            assert client.delete(f"{d.url}/jobs/{job_id}").status_code == 204
        assert retained(client, d.url) == 0


def test_bad_byte_bounds_stop_the_daemon(run_serving: Any) -> None:
    result = run_serving(CHATTY, job_events_max_bytes="lots")
    assert result.returncode == 2
    assert "SERVING_JOB_EVENTS_MAX_BYTES='lots' is invalid" in result.stderr
    result = run_serving(CHATTY, events_memory_max="0")
    assert result.returncode == 2
    assert "SERVING_EVENTS_MEMORY_MAX='0' is invalid" in result.stderr


def test_a_websocket_follows_a_bounded_number_of_jobs(daemon: Any, tmp_path: Path) -> None:
    """Each subscription holds at most one unsent message, so bounding the subscriptions
    bounds what a socket whose client reads nothing can hold."""
    d = daemon(GATED, max_concurrency=1, max_queue=MAX_SUBSCRIPTIONS + 1, access_log="false")
    release = tmp_path / "release"
    params = {"release": str(release)}
    try:
        with httpx.Client(timeout=GUARD) as client:
            jobs = []
            for _ in range(MAX_SUBSCRIPTIONS + 1):  # one running, the rest queued: none ends
                r = client.post(f"{d.url}/invoke", params={"mode": "async"}, json={"parameters": params})
                assert r.status_code == 202, r.text
                jobs.append(r.json()["job_id"])
        url = d.url.replace("http://", "ws://") + "/stream"
        with connect(url, open_timeout=GUARD, close_timeout=GUARD) as ws:
            for job_id in jobs:
                ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
            # Replies come in order per socket for errors; events of the followed jobs may
            # interleave, so read until the refusal of the last one.
            while True:
                message = json.loads(ws.recv(timeout=GUARD))
                if message["type"] == "error":
                    break
            assert message["status"] == 429, message
            assert message["job_id"] == jobs[-1]
            assert str(MAX_SUBSCRIPTIONS) in message["error"]
            # Following a job already followed again is a re-subscription, not one more.
            ws.send(json.dumps({"type": "subscribe", "job_id": jobs[0], "after_seq": 0}))
            release.touch()
            ended = set()
            while jobs[0] not in ended:
                message = json.loads(ws.recv(timeout=GUARD))
                assert message["type"] != "error", message
                if message["type"] == "end":
                    ended.add(message["job_id"])
    finally:
        release.touch()
