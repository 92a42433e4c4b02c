"""The fleet's shared queue and job leases, across two real daemons and the machine's
Redis (a private key prefix per test).

Which replica ran a job is read from its `job_taken` log line. Steps are steered with
marker files (tests/pipelines/gated.py): a replica is "full" while its one slot holds
a gated job, so where a job runs never depends on timing.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import httpx
import pytest
from polling import wait_for_file
from test_stream import GATED, get_job, sse_events, submit

GUARD = 10.0
LEASE = 1.0
# What "within the lease plus a little" allows on this shared machine: the last renewal
# may come just before the kill, and reapers look every lease/4.
LOST_MARGIN = 3.0


def taken_by(daemon: Any, job_id: str) -> dict[str, Any]:
    """Wait for the daemon's `job_taken` line for the job (a hang guard only)."""
    return daemon.wait_for_log(
        lambda e: e.get("event") == "job_taken" and e.get("job_id") == job_id, f"{job_id} taken"
    )


def took(daemon: Any) -> set[str]:
    return {e["job_id"] for e in daemon.log_events() if e.get("event") == "job_taken"}


def hold(client: httpx.Client, daemon: Any, gate: Any) -> str:
    """Fill the daemon's one slot with a gated job that waits for its gate."""
    job_id = submit(client, daemon, gate.params())
    wait_for_file(gate.started)
    return job_id


@pytest.fixture
def replicas(job_store_url: str, daemon: Any) -> Any:
    """Start replicas of the gated pipeline on one Redis job store (requested before
    `daemon`, so the daemons stop before the keys are deleted)."""

    def start(**settings: Any) -> Any:
        settings.setdefault("access_log", "false")
        return daemon(GATED, job_store=job_store_url, sse_ping=0.2, **settings)

    return start


def test_jobs_submitted_on_a_full_replica_run_on_the_other(
    replicas: Any, client: httpx.Client, gates: Any
) -> None:
    a = replicas(max_concurrency=1)
    b = replicas()
    busy = gates("busy")
    held = hold(client, a, busy)
    ids = [submit(client, a, gates(f"q{n}").params(block=False)) for n in range(3)]
    for job_id in ids:
        assert get_job(client, a, job_id, wait=GUARD)["status"] == "completed"
        assert taken_by(b, job_id)["replica"]
    assert not took(a) & set(ids)
    busy.open()
    assert get_job(client, b, held, wait=GUARD)["status"] == "completed"


def test_a_full_fleet_queue_answers_429_with_retry_after_from_the_fleets_pace(
    replicas: Any, client: httpx.Client, gates: Any
) -> None:
    a = replicas(max_concurrency=1, max_queue=1)
    b = replicas(max_concurrency=1, max_queue=1)
    for n in range(2):  # two completions in the last minute: the fleet's pace
        quick = submit(client, a, gates(f"quick{n}").params(block=False))
        assert get_job(client, a, quick, wait=GUARD)["status"] == "completed"
    first, second = gates("first"), gates("second")
    hold(client, a, first)
    hold(client, b, second)
    queued = submit(client, a, gates("queued").params(block=False))
    assert get_job(client, b, queued)["status"] == "queued"
    r = client.post(f"{b.url}/invoke", params={"mode": "async"}, json=gates("over").body(block=False))
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 429 and "1 queued" in r.json()["detail"]
    # 2 jobs ahead (the queued one, then this one) at 2 per 60 s
    assert r.headers["Retry-After"] == "60"
    first.open()
    second.open()
    assert get_job(client, b, queued, wait=GUARD)["status"] == "completed"


def test_a_queued_job_is_canceled_from_the_other_replica_and_never_runs(
    replicas: Any, client: httpx.Client, gates: Any
) -> None:
    a = replicas(max_concurrency=1)
    b = replicas(max_concurrency=1)
    first, second = gates("first"), gates("second")
    hold(client, a, first)
    hold(client, b, second)
    doomed = gates("doomed")
    job_id = submit(client, a, doomed.params(block=False))
    r = client.post(f"{b.url}/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled" and r.json()["error"] == "canceled: canceled by request"
    assert get_job(client, a, job_id)["status"] == "canceled"
    assert [e["type"] for e in sse_events(client, a, job_id)] == ["run_canceled"]
    assert client.post(f"{a.url}/jobs/{job_id}/cancel").status_code == 409
    # the queue is first in, first out: once a later job has run, the canceled one had its turn
    later = submit(client, a, gates("later").params(block=False))
    first.open()
    second.open()
    assert get_job(client, b, later, wait=GUARD)["status"] == "completed"
    assert not doomed.started.exists()


def test_sigterm_on_a_hands_its_queued_jobs_to_b(replicas: Any, client: httpx.Client, gates: Any) -> None:
    a = replicas(max_concurrency=1)
    b = replicas(max_concurrency=1)
    first, second = gates("first"), gates("second")
    held = hold(client, a, first)
    hold(client, b, second)
    queued = [submit(client, a, gates(f"q{n}").params(block=False)) for n in range(2)]
    a.signal(signal.SIGTERM)
    a.wait_for_log(lambda e: e.get("event") == "draining", "A draining")
    first.open()  # A finishes what it runs, takes nothing more, and exits
    assert a.wait(GUARD) == 0
    assert get_job(client, b, held)["status"] == "completed"
    second.open()
    for job_id in queued:
        assert get_job(client, b, job_id, wait=GUARD)["status"] == "completed"
        taken_by(b, job_id)
    assert not took(a)


def test_kill_9_of_the_replica_running_a_job_fails_it_as_worker_lost(
    replicas: Any, client: httpx.Client, gates: Any
) -> None:
    a = replicas(job_lease=LEASE)
    b = replicas(job_lease=LEASE)
    gate = gates("lost")
    job_id = hold(client, a, gate)
    seen: list[dict[str, Any]] = []
    first = threading.Event()

    def read() -> None:
        with httpx.Client(timeout=GUARD) as c:
            seen.extend(sse_events(c, b, job_id, on_event=lambda _: first.set()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(GUARD)
    a.proc.kill()
    a.proc.wait(GUARD)
    job = get_job(client, b, job_id, wait=LEASE + LOST_MARGIN)
    assert job["status"] == "failed", job
    assert job["error"].startswith("worker lost: replica "), job
    reader.join(GUARD)
    assert not reader.is_alive()
    assert seen[-1]["type"] == "run_failed" and seen[-1]["error"] == job["error"]
