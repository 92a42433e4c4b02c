"""SERVING_WORKERS: a supervisor and its worker processes serving one port, on both servers.

Several workers need a shared job store, so these daemons name a Redis URL in
SERVING_JOB_STORE and use only sync `/invoke`, which needs no store.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_for_file, wait_until

from jobs.redis_store import RedisJobStore
from serving.settings import SettingsError, load_settings
from serving.supervisor import workers_problem

TESTS = Path(__file__).resolve().parent.parent
HELLO = f"{TESTS.parent / 'examples' / 'hello.py'}:hello"
SLOW = f"{TESTS / 'pipelines' / 'slow.py'}:slow"
HANG_GUARD = 15.0


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server(request: pytest.FixtureRequest) -> str:
    return request.param


def health(url: str) -> dict[str, Any]:
    """One /health on a new connection, so the kernel picks a worker for each call."""
    with httpx.Client(timeout=HANG_GUARD) as client:
        r = client.get(f"{url}/health")
    assert r.status_code == 200, r.text
    return dict(r.json())


def all_ready(d: Any, workers: int = 2) -> None:
    """Wait until every worker has finished starting (its `ready` line). A signal sent
    while a worker still starts is a different case from the in-flight ones tested here."""

    def ready() -> bool:
        pids = {e["worker_pid"] for e in d.log_events() if e.get("event") == "ready" and "worker_pid" in e}
        return len(pids) >= workers

    wait_until(ready, f"{workers} workers to be ready", detail=d.stderr_detail)


def worker_pids(d: Any) -> set[int]:
    """The pids of the workers the supervisor has running now, from its log."""
    alive: set[int] = set()
    for event in d.log_events():
        if event.get("event") == "worker_started":
            alive.add(event["worker_pid"])
        elif event.get("event") in ("worker_died", "worker_stopped"):
            alive.discard(event["worker_pid"])
    return alive


def answering_pids(d: Any, expected: set[int]) -> set[int]:
    """Call /health until every pid in `expected` has answered."""
    seen: set[int] = set()

    def all_seen() -> bool:
        seen.add(health(d.url)["pid"])
        return expected <= seen

    wait_until(all_seen, f"/health answered by each of {sorted(expected)}", detail=d.stderr_detail)
    return seen


# -- settings and refusals ------------------------------------------------------------


def test_workers_setting() -> None:
    assert load_settings({}).worker_count == 1
    assert load_settings({"SERVING_WORKERS": "3"}).worker_count == 3
    assert load_settings({"SERVING_WORKERS": "auto"}).worker_count == len(os.sched_getaffinity(0))


def test_workers_problem() -> None:
    assert workers_problem(load_settings({})) is None
    assert workers_problem(load_settings({"SERVING_JOB_STORE": "redis://h:6379/0"})) is None
    memory = workers_problem(load_settings({"SERVING_WORKERS": "2"}))
    assert memory is not None and "SERVING_JOB_STORE" in memory
    with pytest.raises(SettingsError, match=r"^SERVING_JOB_STORE='mysql://x' is invalid"):
        load_settings({"SERVING_JOB_STORE": "mysql://x"})  # refused before workers are counted


def test_several_workers_refuse_the_memory_store(run_serving: Any) -> None:
    r = run_serving(HELLO, workers=2)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "SERVING_JOB_STORE" in lines[0], r.stderr


@pytest.mark.parametrize("value", ["0", "two", "1.5"])
def test_bad_workers_value(run_serving: Any, value: str) -> None:
    r = run_serving(HELLO, workers=value)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"serving: error: SERVING_WORKERS={value!r} is invalid: expected a whole number >= 1 or 'auto'"
    ]


def test_one_worker_has_no_supervisor(daemon: Any) -> None:
    d = daemon(HELLO)
    assert health(d.url)["pid"] == d.proc.pid
    assert not [e for e in d.log_events() if e.get("event") == "worker_started"]


# -- serving ------------------------------------------------------------------------------


def test_two_workers_serve_one_port(job_store_url: str, daemon: Any, server: str) -> None:
    d = daemon(HELLO, workers=2, job_store=job_store_url, server=server)
    all_ready(d)
    pids = worker_pids(d)
    assert len(pids) == 2 and d.proc.pid not in pids
    assert answering_pids(d, pids) == pids
    with httpx.Client(timeout=HANG_GUARD) as client:
        for name in ("a", "b", "c"):
            r = client.post(f"{d.url}/invoke", json={"parameters": {"name": name}})
            assert r.status_code == 200, r.text
            assert r.json()["outputs"] == {"greeting": f"Hello {name}!"}
    d.signal(signal.SIGTERM)
    assert d.wait(HANG_GUARD) == 0


def test_async_jobs_are_found_by_any_worker(job_store_url: str, daemon: Any) -> None:
    """A job accepted by one worker is polled, listed and waited for through whichever
    worker the kernel hands the next connection to: the store is the one truth."""
    d = daemon(HELLO, workers=2, job_store=job_store_url)
    all_ready(d)
    pids = worker_pids(d)
    accepted_by: set[int] = set()
    read_by: set[int] = set()
    job_ids = []
    for i in range(40):  # new connections, until both workers took part on each side
        with httpx.Client(timeout=HANG_GUARD) as client:
            r = client.post(f"{d.url}/invoke?mode=async", json={"parameters": {"name": f"n{i}"}})
            assert r.status_code == 202, r.text
            job_ids.append(r.json()["job_id"])
            accepted_by.add(client.get(f"{d.url}/health").json()["pid"])
        with httpx.Client(timeout=HANG_GUARD) as client:
            job = client.get(f"{d.url}/jobs/{job_ids[-1]}", params={"wait": 5}).json()
            assert job["status"] == "completed", job
            assert job["result"]["outputs"] == {"greeting": f"Hello n{i}!"}
            read_by.add(client.get(f"{d.url}/health").json()["pid"])
        if accepted_by == read_by == pids:
            break
    assert accepted_by == read_by == pids
    with httpx.Client(timeout=HANG_GUARD) as client:
        listed = client.get(f"{d.url}/jobs", params={"limit": 1000}).json()
    assert {j["job_id"] for j in listed["jobs"]} >= set(job_ids)
    d.signal(signal.SIGTERM)
    assert d.wait(HANG_GUARD) == 0


def test_killed_worker_is_replaced(job_store_url: str, daemon: Any, server: str) -> None:
    d = daemon(HELLO, workers=2, job_store=job_store_url, server=server)
    all_ready(d)
    before = worker_pids(d)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    died = d.wait_for_log(lambda e: e.get("event") == "worker_died" and e["worker_pid"] == victim)
    assert died["status"] == -signal.SIGKILL
    replaced = wait_until(lambda: len(worker_pids(d)) == 2 and worker_pids(d), "a replacement worker")
    assert victim not in replaced
    for _ in range(20):  # the port answers throughout: the other worker serves meanwhile
        health(d.url)
    answering_pids(d, replaced)  # and the new worker serves too
    d.signal(signal.SIGTERM)
    assert d.wait(HANG_GUARD) == 0


def test_sigterm_lets_in_flight_requests_finish(
    job_store_url: str, daemon: Any, server: str, tmp_path: Path
) -> None:
    from test_shutdown import Call

    d = daemon(SLOW, workers=2, job_store=job_store_url, server=server, graceful_timeout=10)
    all_ready(d)
    calls, markers = [], []
    for i in range(4):
        marker = tmp_path / f"started{i}"
        markers.append(marker)
        calls.append(Call(d.url, {"parameters": {"seconds": 1.0, "marker": str(marker)}}))
        calls[-1].start()
    for marker in markers:
        wait_for_file(marker, detail=d.stderr_detail)  # all four are running
    d.signal(signal.SIGTERM)
    for call in calls:
        r = call.result()
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == {"slept": 1.0}
    assert d.wait(HANG_GUARD) == 0, d.logs()
    events = d.log_events()
    assert events[-1]["event"] == "stopped" and "worker_pid" not in events[-1]
    stopped = [e for e in events if e.get("event") == "worker_stopped"]
    assert len(stopped) == 2 and all(e["status"] == 0 for e in stopped)


def test_sigterm_lets_running_async_jobs_finish(job_store_url: str, daemon: Any, tmp_path: Path) -> None:
    """Jobs running on the workers when the supervisor is told to stop end `completed`,
    recorded in the shared store, before the supervisor exits 0."""
    d = daemon(SLOW, workers=2, job_store=job_store_url, graceful_timeout=10)
    all_ready(d)
    markers = [tmp_path / f"job{i}" for i in range(4)]
    with httpx.Client(timeout=HANG_GUARD) as client:
        job_ids = []
        for marker in markers:
            body = {"parameters": {"seconds": 1.0, "marker": str(marker)}}
            r = client.post(f"{d.url}/invoke?mode=async", json=body)
            assert r.status_code == 202, r.text
            job_ids.append(r.json()["job_id"])
    for marker in markers:
        wait_for_file(marker, detail=d.stderr_detail)  # all four are running
    d.signal(signal.SIGTERM)
    assert d.wait(HANG_GUARD) == 0, d.logs()
    # the daemon is gone: read what it left in the shared store
    store = RedisJobStore.from_url(job_store_url)

    async def statuses() -> list[tuple[str, Any]]:
        try:
            jobs = [await store.get(job_id) for job_id in job_ids]
        finally:
            await store.close()
        return [(j.status.value, j.result.outputs if j.result else None) for j in jobs if j is not None]

    assert asyncio.run(statuses()) == [("completed", {"slept": 1.0})] * 4


def test_second_signal_stops_at_once(job_store_url: str, daemon: Any, server: str, tmp_path: Path) -> None:
    from test_shutdown import Call

    d = daemon(SLOW, workers=2, job_store=job_store_url, server=server, graceful_timeout=60)
    all_ready(d)
    marker = tmp_path / "started"
    Call(d.url, {"parameters": {"seconds": 60, "marker": str(marker)}}).start()
    wait_for_file(marker, detail=d.stderr_detail)
    d.signal(signal.SIGTERM)
    d.wait_for_log(lambda e: e.get("event") == "draining" and "worker_pid" not in e)
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait(HANG_GUARD) == 1
    assert "second_signal_stopping_now" in [e.get("event") for e in d.log_events()]


def test_workers_capture_into_one_sqlite_store(job_store_url: str, daemon: Any, tmp_path: Path) -> None:
    """Two workers, each with its own capture writer, append to one SQLite file: every run
    lands, none is dropped, and no writer meets 'database is locked'."""
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    db = tmp_path / "runs.db"
    d = daemon(
        HELLO, workers=2, job_store=job_store_url, capture_url=f"sqlite://{db}", capture_batch_interval=0.01
    )
    all_ready(d)
    answering_pids(d, worker_pids(d))
    sent = 400

    def call(i: int) -> str:
        with httpx.Client(timeout=HANG_GUARD) as client:  # a new connection: any worker
            r = client.post(f"{d.url}/invoke", json={"parameters": {"name": str(i)}})
        assert r.status_code == 200, r.text
        return str(r.json()["metadata"]["run_id"])

    with ThreadPoolExecutor(16) as pool:
        run_ids = set(pool.map(call, range(sent)))
    assert len(run_ids) == sent
    d.signal(signal.SIGTERM)
    assert d.wait(HANG_GUARD) == 0
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT run_id FROM runs")}
    assert stored == run_ids
    flushed = [e for e in d.log_events() if e.get("event") == "capture_flushed"]
    # Every run, plus the pipeline's code once from each worker.
    assert len(flushed) == 2 and sum(e["written"] for e in flushed) == sent + 2
    assert all(e["dropped"] == 0 for e in flushed)
    assert "database is locked" not in d.logs()
