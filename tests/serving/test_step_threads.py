"""Sync steps that outlive their run, against a real daemon (issue 17, item 2).

A thread cannot be stopped, so the daemon must be honest about it: the run's slot
stays taken until the step's thread returns (the next caller sees 429, not a silent
wait for a busy thread), /status and /metrics show the busy and abandoned threads,
and a step can call `serving.cancelled()` to stop early.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
from pathlib import Path
from typing import Any

import httpx
from polling import GUARD, wait_for_file, wait_until
from prometheus_client.parser import text_string_to_metric_families

TESTS = Path(__file__).resolve().parent.parent
BLOCKING = f"{TESTS / 'pipelines' / 'blocking.py'}:blocking"
# The run's deadline: long enough that the step's thread has surely started when it
# passes (the test checks it did), so the timeout abandons a running call.
RUN_TIMEOUT = 2.0


class Marks:
    """The marker files of one run of the blocking pipeline."""

    def __init__(self, root: Path, name: str) -> None:
        self.started = root / f"{name}.started"
        self.release = root / f"{name}.release"
        self.noticed = root / f"{name}.noticed"
        self.done = root / f"{name}.done"

    def params(self, *, cooperate: bool = False) -> dict[str, Any]:
        return {
            "started": str(self.started),
            "release": str(self.release),
            "noticed": str(self.noticed),
            "done": str(self.done),
            "cooperate": cooperate,
        }


def metric_values(client: httpx.Client, url: str) -> dict[str, float]:
    r = client.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
        if sample.name.startswith("serving_step_threads") or sample.name == "serving_inflight"
    }


def status(client: httpx.Client, url: str) -> dict[str, Any]:
    r = client.get(f"{url}/status")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_abandoned_threads_hold_their_slots_and_show(daemon: Any, tmp_path: Path) -> None:
    d = daemon(BLOCKING, max_concurrency=2, max_queue=0, step_threads=2, access_log="false")
    runs = [Marks(tmp_path, f"run{i}") for i in range(2)]
    with (
        httpx.Client(timeout=GUARD) as client,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        replies = list(
            pool.map(
                lambda m: client.post(
                    f"{d.url}/invoke", json={"parameters": m.params(), "timeout": RUN_TIMEOUT}
                ),
                runs,
            )
        )
        for reply in replies:
            assert reply.status_code == 504, reply.text
        for m in runs:
            assert m.started.exists()  # the step ran: the timeout left its thread behind

        state = status(client, d.url)
        assert state["step_threads"]["busy"] == 2, state
        assert state["step_threads"]["abandoned"] == 2, state
        assert state["step_threads"]["abandoned_total"] == 2, state
        assert state["jobs"]["running"] == 2, state  # the slots are still taken
        metrics = metric_values(client, d.url)
        assert metrics["serving_step_threads_busy"] == 2
        assert metrics["serving_step_threads_abandoned_running"] == 2
        assert metrics["serving_step_threads_abandoned_total"] == 2
        assert metrics["serving_inflight"] == 2

        # The next caller is told at once, not left waiting for a busy thread.
        fresh = Marks(tmp_path, "fresh")
        fresh.release.touch()
        r = client.post(f"{d.url}/invoke", json={"parameters": fresh.params()})
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert not fresh.started.exists()

        # Once the abandoned steps return (with their side effects), the slots come back.
        for m in runs:
            m.release.touch()
        for m in runs:
            wait_for_file(m.done, detail=d.stderr_detail)
        wait_until(
            lambda: status(client, d.url)["jobs"]["running"] == 0,
            "the held slots to be released",
            timeout=GUARD,
            detail=d.stderr_detail,
        )
        state = status(client, d.url)
        assert state["step_threads"]["abandoned"] == 0, state
        assert state["step_threads"]["abandoned_total"] == 2, state
        r = client.post(f"{d.url}/invoke", json={"parameters": fresh.params()})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == {"result": "ran to the end"}
        assert metric_values(client, d.url)["serving_step_threads_busy"] == 0
    assert any(e.get("event") == "run_slot_held" for e in d.log_events())


def test_a_sync_step_sees_cancelled_on_timeout_and_stops_early(daemon: Any, tmp_path: Path) -> None:
    d = daemon(BLOCKING, access_log="false")
    m = Marks(tmp_path, "timeout")
    with httpx.Client(timeout=GUARD) as client:
        r = client.post(
            f"{d.url}/invoke", json={"parameters": m.params(cooperate=True), "timeout": RUN_TIMEOUT}
        )
        assert r.status_code == 504, r.text
        assert m.started.exists()
        wait_for_file(m.noticed, detail=d.stderr_detail)
        wait_until(
            lambda: status(client, d.url)["step_threads"]["busy"] == 0,
            "the step's thread to return",
            timeout=GUARD,
            detail=d.stderr_detail,
        )
        assert not m.done.exists()  # it returned early: no side effect
        assert status(client, d.url)["jobs"]["running"] == 0


def test_a_sync_step_sees_cancelled_when_its_job_is_canceled(daemon: Any, tmp_path: Path) -> None:
    d = daemon(BLOCKING, access_log="false")
    m = Marks(tmp_path, "job")
    with httpx.Client(timeout=GUARD) as client:
        r = client.post(
            f"{d.url}/invoke", params={"mode": "async"}, json={"parameters": m.params(cooperate=True)}
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        wait_for_file(m.started, detail=d.stderr_detail)
        r = client.post(f"{d.url}/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        wait_for_file(m.noticed, detail=d.stderr_detail)
        job = client.get(f"{d.url}/jobs/{job_id}", params={"wait": GUARD}).json()
        assert job["status"] == "canceled", job
        wait_until(
            lambda: status(client, d.url)["step_threads"]["busy"] == 0,
            "the step's thread to return",
            timeout=GUARD,
            detail=d.stderr_detail,
        )
        assert not m.done.exists()
        assert status(client, d.url)["jobs"]["running"] == 0


def test_a_canceled_job_holds_its_slot_until_its_step_returns(daemon: Any, tmp_path: Path) -> None:
    d = daemon(BLOCKING, max_concurrency=1, max_queue=0, access_log="false")
    m = Marks(tmp_path, "held")
    with httpx.Client(timeout=GUARD) as client:
        r = client.post(f"{d.url}/invoke", params={"mode": "async"}, json={"parameters": m.params()})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        wait_for_file(m.started, detail=d.stderr_detail)
        assert client.post(f"{d.url}/jobs/{job_id}/cancel").status_code == 200
        job = client.get(f"{d.url}/jobs/{job_id}", params={"wait": GUARD}).json()
        assert job["status"] == "canceled", job
        state = status(client, d.url)
        assert state["jobs"]["running"] == 1 and state["step_threads"]["abandoned"] == 1, state
        fresh = {"parameters": {}}
        r = client.post(f"{d.url}/invoke", params={"mode": "async"}, json=fresh)
        assert r.status_code == 429, r.text
        m.release.touch()
        wait_for_file(m.done, detail=d.stderr_detail)
        wait_until(
            lambda: status(client, d.url)["jobs"]["running"] == 0,
            "the canceled job's slot to be released",
            timeout=GUARD,
            detail=d.stderr_detail,
        )
        r = client.post(f"{d.url}/invoke", json=fresh)
        assert r.status_code == 200, r.text


def test_a_sync_step_sees_cancelled_when_its_client_leaves(daemon: Any, tmp_path: Path) -> None:
    d = daemon(BLOCKING, access_log="false")
    m = Marks(tmp_path, "gone")
    body = json.dumps({"parameters": m.params(cooperate=True)}).encode()
    url = httpx.URL(d.url)
    with socket.create_connection((url.host, url.port), timeout=GUARD) as sock:
        sock.sendall(
            b"POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for_file(m.started, detail=d.stderr_detail)
    wait_for_file(m.noticed, detail=d.stderr_detail)
    with httpx.Client(timeout=GUARD) as client:
        wait_until(
            lambda: status(client, d.url)["jobs"]["running"] == 0,
            "the run's slot to be released",
            timeout=GUARD,
            detail=d.stderr_detail,
        )
    assert not m.done.exists()


def test_cancelled_is_false_outside_a_run() -> None:
    from serving import cancelled

    assert cancelled() is False
