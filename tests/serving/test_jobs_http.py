"""Async jobs over HTTP against real daemons: submit, Prefer, idempotency, /jobs, cancel,
delete, shared limits, retention under a flood, and cancel-on-disconnect.

Steps are driven with marker files (see tests/pipelines/gated.py): the test waits for a
file the step writes, or writes the file the step waits for. Waits poll for a condition
under a hang guard; nothing relies on a sleep being long enough.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_for_file, wait_until

TESTS = Path(__file__).resolve().parent.parent
GATED = f"{TESTS / 'pipelines' / 'gated.py'}:gated"
HELLO = f"{TESTS.parent / 'examples' / 'hello.py'}:hello"
UNENCODABLE = f"{TESTS / 'pipelines' / 'unencodable.py'}:unencodable"

GUARD = 10.0  # seconds; a hang guard only
PROBLEM = "application/problem+json"
JOB_FIELDS = [
    "job_id",
    "status",
    "pipeline_name",
    "parameters",
    "run_id",
    "run_name",
    "created_at",
    "started_at",
    "finished_at",
    "execution_time",
    "result",
    "error",
    "cancel_reason",
    "progress",
    "idempotency_key",
    "run_status",
]
SUMMARY_FIELDS = ["job_id", "status", "created_at", "location", "stream_url"]
REPLY_FIELDS = ["success", "outputs", "execution_time", "metadata", "error"]


# -- daemons ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated(module_daemon: Any) -> Any:
    """Roomy limits; tests here never depend on the others' jobs being gone."""
    return module_daemon(GATED, access_log="false")


@pytest.fixture(scope="module")
def single(module_daemon: Any) -> Any:
    """One running, one queued; every test leaves it idle again."""
    return module_daemon(GATED, max_concurrency=1, max_queue=1, max_wait=0.5, access_log="false")


# -- helpers ------------------------------------------------------------------------------


def submit(client: httpx.Client, daemon: Any, body: Any, **kw: Any) -> httpx.Response:
    return client.post(f"{daemon.url}/invoke", params={"mode": "async"}, json=body, **kw)


def submit_ok(client: httpx.Client, daemon: Any, body: Any) -> str:
    r = submit(client, daemon, body)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def get_job(client: httpx.Client, daemon: Any, job_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"{daemon.url}/jobs/{job_id}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def finished(client: httpx.Client, daemon: Any, job_id: str) -> dict[str, Any]:
    """The job once it has finished (each poll is a long poll: `?wait=` returns at the end)."""

    def if_finished() -> dict[str, Any] | None:
        job = get_job(client, daemon, job_id, wait=GUARD)
        return job if job["status"] in ("completed", "failed", "canceled") else None

    return wait_until(if_finished, f"job {job_id} to finish", timeout=GUARD, detail=daemon.stderr_detail)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body


def retry_after(r: httpx.Response) -> int:
    value = r.headers["retry-after"]
    assert value.isdigit(), value
    assert int(value) >= 1
    return int(value)


def status_counts(client: httpx.Client, daemon: Any) -> dict[str, int]:
    return client.get(f"{daemon.url}/status").json()["jobs"]


# -- submitting ---------------------------------------------------------------------------


def test_async_submit_is_202_with_location_and_links(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("async")
    r = submit(client, gated, gate.body(block=False))
    assert r.status_code == 202, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == SUMMARY_FIELDS
    job_id = body["job_id"]
    assert len(job_id) == 32
    assert body["status"] == "queued"
    assert body["location"] == f"/jobs/{job_id}" == r.headers["location"]
    assert body["stream_url"] == f"/stream/{job_id}"
    assert "preference-applied" not in r.headers

    job = finished(client, gated, job_id)
    assert list(job) == JOB_FIELDS
    assert job["status"] == "completed"
    assert job["pipeline_name"] == "gated"
    assert job["parameters"] == gate.params(block=False)
    assert job["created_at"] == body["created_at"]
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert job["error"] is None and job["cancel_reason"] is None and job["idempotency_key"] is None
    assert job["progress"] == {
        "steps_done": 3,
        "steps_total": 3,
        "fraction": 1.0,
        "message": "released",
        "step": "hold",
    }
    # a finished job's result has exactly the shape of a sync reply
    result = job["result"]
    sync = client.post(f"{gated.url}/invoke", json=gate.body(block=False)).json()
    assert list(result) == list(sync) == REPLY_FIELDS
    assert list(result["metadata"]) == list(sync["metadata"])
    assert result["success"] is True and result["outputs"] == {"result": "done:async"} == sync["outputs"]
    assert result["metadata"]["run_id"] == job["run_id"]
    assert result["metadata"]["run_name"] == job["run_name"]
    assert result["metadata"]["parameters_used"] == job["parameters"]


def test_prefer_respond_async_is_applied(gated: Any, client: httpx.Client, gates: Any) -> None:
    r = client.post(
        f"{gated.url}/invoke", json=gates("prefer").body(block=False), headers={"Prefer": "respond-async"}
    )
    assert r.status_code == 202, r.text
    assert r.headers["preference-applied"] == "respond-async"
    assert r.headers["location"] == f"/jobs/{r.json()['job_id']}"
    assert finished(client, gated, r.json()["job_id"])["status"] == "completed"


def test_mode_must_be_sync_or_async(gated: Any, client: httpx.Client) -> None:
    r = client.post(f"{gated.url}/invoke", params={"mode": "later"}, json={})
    body = assert_problem(r, 422)
    assert [e["loc"] for e in body["errors"]] == ["query.mode"]


def test_prefer_wait_on_a_fast_run_gives_the_sync_reply(gated: Any, client: httpx.Client, gates: Any) -> None:
    r = client.post(f"{gated.url}/invoke", json=gates("fast").body(block=False), headers={"Prefer": "wait=5"})
    assert r.status_code == 200, r.text
    assert r.headers["preference-applied"] == "wait=5"
    body = r.json()
    assert list(body) == REPLY_FIELDS
    assert body["success"] is True and body["outputs"] == {"result": "done:fast"}


def test_prefer_wait_on_a_slow_run_gives_202(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("slowwait")
    r = client.post(f"{gated.url}/invoke", json=gate.body(), headers={"Prefer": "wait=0.2"})
    assert r.status_code == 202, r.text
    assert r.headers["preference-applied"] == "wait=0.2"
    body = r.json()
    assert list(body) == SUMMARY_FIELDS and body["status"] == "running"
    assert r.headers["location"] == body["location"]
    gate.open()
    assert finished(client, gated, body["job_id"])["status"] == "completed"


def test_idempotency_key_repeat_returns_the_job_and_other_body_is_422(
    gated: Any, client: httpx.Client, gates: Any
) -> None:
    key = {"Idempotency-Key": f"key-{time.monotonic_ns()}"}
    gate = gates("idem")
    first = submit(client, gated, gate.body(), headers=key)
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    wait_for_file(gate.started)
    again = submit(client, gated, gate.body(), headers=key)
    assert again.status_code == 200, again.text
    assert list(again.json()) == JOB_FIELDS  # the full record, not a summary
    assert again.json()["job_id"] == job_id
    assert again.json()["idempotency_key"] == key["Idempotency-Key"]
    assert again.headers["location"] == f"/jobs/{job_id}"
    other = submit(client, gated, gates("other").body(), headers=key)
    body = assert_problem(other, 422)
    assert [e["loc"] for e in body["errors"]] == ["Idempotency-Key"]
    gate.open()
    assert finished(client, gated, job_id)["status"] == "completed"
    # still the same job afterwards, and only one job was ever made for the key
    assert submit(client, gated, gate.body(), headers=key).json()["job_id"] == job_id
    jobs = client.get(f"{gated.url}/jobs", params={"limit": 1000}).json()["jobs"]
    assert [j["job_id"] for j in jobs if j["idempotency_key"] == key["Idempotency-Key"]] == [job_id]


def test_idempotency_key_on_a_sync_call_replays_the_reply(
    gated: Any, client: httpx.Client, gates: Any
) -> None:
    key = {"Idempotency-Key": f"sync-{time.monotonic_ns()}"}
    body = gates("idem-sync").body(block=False)
    first = client.post(f"{gated.url}/invoke", json=body, headers=key)
    assert first.status_code == 200, first.text
    assert list(first.json()) == REPLY_FIELDS
    again = client.post(f"{gated.url}/invoke", json=body, headers=key)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()  # the same run, not a second one
    assert again.headers["location"] == first.headers["location"]
    other = client.post(f"{gated.url}/invoke", json=gates("idem-other").body(block=False), headers=key)
    assert_problem(other, 422)


def test_async_run_timeout_fails_the_job(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("too-slow")
    r = submit(client, gated, {**gate.body(), "timeout": 0.2})
    assert r.status_code == 202, r.text
    job = finished(client, gated, r.json()["job_id"])
    assert job["status"] == "failed"
    assert job["error"].startswith("run timed out")
    assert job["result"]["success"] is False and job["result"]["error"] == job["error"]
    assert gate.cancelled.exists()  # the step was cancelled, not left running


def test_async_job_with_unencodable_outputs_fails_and_the_list_still_serves(daemon: Any) -> None:
    d = daemon(UNENCODABLE)
    with httpx.Client(base_url=d.url, timeout=GUARD) as client:
        job_id = client.post("/invoke?mode=async", json={}).json()["job_id"]
        job = client.get(f"/jobs/{job_id}", params={"wait": 5})
        assert job.status_code == 200, job.text
        assert job.json()["status"] == "failed"
        assert "cannot be encoded as JSON" in job.json()["error"]
        assert client.get("/jobs").status_code == 200


# -- listing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"status": "bogus"}, "query.status"),
        ({"status": "COMPLETED"}, "query.status"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "1001"}, "query.limit"),
        ({"limit": "-1"}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"cursor": "not-a-cursor"}, "query.cursor"),
    ],
)
def test_list_rejects_bad_query(gated: Any, client: httpx.Client, params: dict[str, str], loc: str) -> None:
    body = assert_problem(client.get(f"{gated.url}/jobs", params=params), 422)
    assert [e["loc"] for e in body["errors"]] == [loc]


def test_list_pages_newest_first_and_filters(gated: Any, client: httpx.Client, gates: Any) -> None:
    mine = [submit_ok(client, gated, gates(f"page{i}").body(block=False)) for i in range(5)]
    for job_id in mine:
        finished(client, gated, job_id)
    blocked = gates("page-blocked")
    running = submit_ok(client, gated, blocked.body())
    wait_for_file(blocked.started)

    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get(f"{gated.url}/jobs", params=params).json()
        assert list(page) == ["jobs", "next_cursor"]
        assert 0 < len(page["jobs"]) <= 2
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))  # no job twice across pages
    assert seen[:6] == [running, *reversed(mine)]  # newest first
    everything = client.get(f"{gated.url}/jobs", params={"limit": 1000}).json()
    assert [j["job_id"] for j in everything["jobs"]] == seen
    assert everything["next_cursor"] is None
    assert all(list(j) == JOB_FIELDS for j in everything["jobs"])

    running_jobs = client.get(f"{gated.url}/jobs", params={"status": "running"}).json()["jobs"]
    assert [j["job_id"] for j in running_jobs] == [running]
    completed = client.get(f"{gated.url}/jobs", params={"status": "completed", "limit": 1000}).json()
    assert set(mine) <= {j["job_id"] for j in completed["jobs"]}
    assert all(j["status"] == "completed" for j in completed["jobs"])
    blocked.open()
    finished(client, gated, running)


# -- waiting ------------------------------------------------------------------------------


def test_long_poll_returns_when_the_job_finishes(gated: Any, gates: Any) -> None:
    gate = gates("poll")
    with httpx.Client(timeout=GUARD) as client:
        job_id = submit_ok(client, gated, gate.body())
        wait_for_file(gate.started)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            poll = pool.submit(get_job, client, gated, job_id, wait=GUARD)
            gate.open()
            job = poll.result(timeout=GUARD + 5)
    assert job["status"] == "completed"
    assert job["result"]["outputs"] == {"result": "done:poll"}


def test_long_poll_is_capped_by_max_wait(single: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("cap")
    job_id = submit_ok(client, single, gate.body())
    wait_for_file(gate.started)
    # SERVING_MAX_WAIT=0.5 caps the 60 s asked for; the client's own timeout is the guard
    assert get_job(client, single, job_id, wait=60)["status"] == "running"
    gate.open()
    assert finished(client, single, job_id)["status"] == "completed"


def test_long_poll_validation_and_unknown_job(gated: Any, client: httpx.Client) -> None:
    for wait in ("soon", "-1", "nan"):
        body = assert_problem(client.get(f"{gated.url}/jobs/x", params={"wait": wait}), 422)
        assert [e["loc"] for e in body["errors"]] == ["query.wait"]
    assert_problem(client.get(f"{gated.url}/jobs/{'0' * 32}"), 404)
    assert_problem(client.get(f"{gated.url}/jobs/{'0' * 32}", params={"wait": 1}), 404)


# -- cancel -------------------------------------------------------------------------------


def test_cancel_queued_job(single: Any, client: httpx.Client, gates: Any) -> None:
    head, queued = gates("head"), gates("queued")
    head_id = submit_ok(client, single, head.body())
    wait_for_file(head.started)
    queued_id = submit_ok(client, single, queued.body(block=False))
    assert status_counts(client, single) == {"running": 1, "queued": 1}
    r = client.post(f"{single.url}/jobs/{queued_id}/cancel")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "canceled" and job["started_at"] is None
    assert job["cancel_reason"] == "canceled by request"
    assert status_counts(client, single) == {"running": 1, "queued": 0}
    head.open()
    assert finished(client, single, head_id)["status"] == "completed"
    job = get_job(client, single, queued_id)
    assert job["status"] == "canceled" and job["started_at"] is None and job["result"] is None
    assert not queued.started.exists()  # it never ran


def test_cancel_running_job(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("cancel-running")
    job_id = submit_ok(client, gated, gate.body())
    wait_for_file(gate.started)
    r = client.post(f"{gated.url}/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "canceled"
    assert job["error"] == "canceled: canceled by request"
    assert job["result"] is None and job["finished_at"] is not None
    assert gate.cancelled.exists()  # the step saw the cancellation
    assert get_job(client, gated, job_id)["status"] == "canceled"


def test_cancel_under_way_is_202(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("linger")
    job_id = submit_ok(client, gated, gate.body(linger=True))
    wait_for_file(gate.started)
    # the step holds its cancellation until the linger file appears: not done at once
    r = client.post(f"{gated.url}/jobs/{job_id}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running" and r.json()["cancel_reason"] == "canceled by request"
    assert gate.cancelled.exists()
    gate.linger.touch()
    assert finished(client, gated, job_id)["status"] == "canceled"


def test_cancel_finished_job_is_409_and_changes_nothing(gated: Any, client: httpx.Client, gates: Any) -> None:
    job_id = submit_ok(client, gated, gates("fin").body(block=False))
    before = finished(client, gated, job_id)
    assert_problem(client.post(f"{gated.url}/jobs/{job_id}/cancel"), 409)
    assert get_job(client, gated, job_id) == before


def test_cancel_unknown_job_is_404(gated: Any, client: httpx.Client) -> None:
    assert_problem(client.post(f"{gated.url}/jobs/{'0' * 32}/cancel"), 404)


# -- delete -------------------------------------------------------------------------------


def test_delete_finished_job_only(gated: Any, client: httpx.Client, gates: Any) -> None:
    gate = gates("delete")
    job_id = submit_ok(client, gated, gate.body())
    wait_for_file(gate.started)
    assert_problem(client.delete(f"{gated.url}/jobs/{job_id}"), 409)
    assert get_job(client, gated, job_id)["status"] == "running"
    gate.open()
    finished(client, gated, job_id)
    r = client.delete(f"{gated.url}/jobs/{job_id}")
    assert r.status_code == 204 and r.content == b""
    assert_problem(client.get(f"{gated.url}/jobs/{job_id}"), 404)
    assert_problem(client.get(f"{gated.url}/stream/{job_id}"), 404)
    assert_problem(client.delete(f"{gated.url}/jobs/{job_id}"), 404)
    assert_problem(client.delete(f"{gated.url}/jobs/{'0' * 32}"), 404)


# -- shared limits ------------------------------------------------------------------------


def test_full_queue_is_429_for_sync_and_async_and_accepted_jobs_complete(
    single: Any, client: httpx.Client, gates: Any
) -> None:
    head, second = gates("full-head"), gates("full-second")
    head_id = submit_ok(client, single, head.body())
    wait_for_file(head.started)
    second_id = submit_ok(client, single, second.body(block=False))
    assert status_counts(client, single) == {"running": 1, "queued": 1}

    refused = [
        submit(client, single, gates("x").body(block=False)),
        client.post(f"{single.url}/invoke", json=gates("y").body(block=False)),
        client.post(f"{single.url}/invoke", json={}, headers={"Prefer": "respond-async"}),
        client.post(f"{single.url}/invoke", json={}, headers={"Prefer": "wait=1"}),
    ]
    for r in refused:
        assert_problem(r, 429)
        retry_after(r)
    assert status_counts(client, single) == {"running": 1, "queued": 1}

    head.open()
    assert finished(client, single, head_id)["status"] == "completed"
    assert finished(client, single, second_id)["status"] == "completed"
    # room again
    r = client.post(f"{single.url}/invoke", json=gates("after").body(block=False))
    assert r.status_code == 200, r.text


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP/1.1 response (Content-Length framed) off `buf`/`sock`; its status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length"
    )
    end = len(head) + 4 + length
    while len(buf) < end:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        buf += chunk
    del buf[:end]
    return int(lines[0].split()[1])


def flood(url: str, count: int, batch: int = 100, per_connection: int = 500) -> list[int]:
    """POST `count` async invocations, pipelined `batch` at a time, on a new connection
    every `per_connection` (Hypercorn closes one after 1000 requests). An HTTP client
    library would spend more time than the server."""
    parts = urllib.parse.urlsplit(url)
    statuses: list[int] = []
    for first in range(0, count, per_connection):
        buf = bytearray()
        with socket.create_connection((parts.hostname, parts.port), timeout=GUARD) as sock:
            for start in range(first, min(count, first + per_connection), batch):
                n = min(batch, count - start)
                requests = []
                for i in range(start, start + n):
                    body = b'{"parameters": {"name": "n%d"}}' % i
                    requests.append(
                        b"POST /invoke?mode=async HTTP/1.1\r\nHost: test\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                sock.sendall(b"".join(requests))
                statuses += [_read_response(sock, buf) for _ in range(n)]
    return statuses


def test_flood_of_async_jobs_keeps_records_bounded(daemon: Any) -> None:
    """What the trimmed records save in memory is a figure, not a pass/fail line: see
    bench/flood_memory.py."""
    max_jobs = 100
    d = daemon(HELLO, max_jobs=max_jobs, access_log="false")
    statuses = flood(d.url, 3000)
    assert len(statuses) == 3000 and set(statuses) == {202}
    with httpx.Client(base_url=d.url, timeout=GUARD) as client:
        listed = client.get("/jobs", params={"limit": 1000}).json()
        active = status_counts(client, d)
        assert len(listed["jobs"]) <= max_jobs + active["running"] + active["queued"] + 100
        # one more submission once all is quiet trims to the limit
        last = client.post("/invoke?mode=async", json={}).json()["job_id"]
        assert finished(client, d, last)["status"] == "completed"
        listed = client.get("/jobs", params={"limit": 1000}).json()
        assert len(listed["jobs"]) <= max_jobs
        assert listed["next_cursor"] is None


# -- cancel on disconnect -------------------------------------------------------------------


def raw_invoke(url: str, body: bytes) -> socket.socket:
    """Send a sync /invoke on a raw socket and return it without reading the reply."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=GUARD)
    sock.sendall(
        b"POST /invoke HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
def test_sync_client_disconnect_cancels_the_run(daemon: Any, gates: Any, server: str) -> None:
    d = daemon(GATED, server=server)
    gate = gates(f"gone-{server}")
    sock = raw_invoke(d.url, httpx.Request("POST", "/", json=gate.body()).content)
    wait_for_file(gate.started)
    sock.close()
    wait_for_file(gate.cancelled)
    d.wait_for_log(lambda e: e.get("event") == "client_disconnected_run_canceled", timeout=GUARD)
    with httpx.Client(timeout=GUARD) as client:
        assert status_counts(client, d) == {"running": 0, "queued": 0}
        # the daemon serves on
        r = client.post(f"{d.url}/invoke", json=gates("next").body(block=False))
        assert r.status_code == 200, r.text
    assert not gate.done.exists()


def test_disconnect_does_not_cancel_when_disabled(daemon: Any, gates: Any) -> None:
    """A wrong cancellation would come a watch period after the hang-up, so nothing the
    disabled daemon does marks that moment. A control daemon with cancellation on gets
    the same request, hung up later: once it has cancelled its run, the disabled one has
    had at least as long to (wrongly) cancel its own."""
    kept, control = daemon(GATED, cancel_on_disconnect="false"), daemon(GATED)
    gate, control_gate = gates("kept"), gates("control")
    sock = raw_invoke(kept.url, httpx.Request("POST", "/", json=gate.body()).content)
    wait_for_file(gate.started)
    control_sock = raw_invoke(control.url, httpx.Request("POST", "/", json=control_gate.body()).content)
    wait_for_file(control_gate.started)
    sock.close()
    control_sock.close()
    control.wait_for_log(
        lambda e: e.get("event") == "client_disconnected_run_canceled", "the control daemon to cancel"
    )
    gate.open()
    wait_for_file(gate.done, detail=kept.stderr_detail)  # the run went on to its end
    assert not gate.cancelled.exists()


# Regression: a queued sync client hanging up freed a slot it never held.


def test_queued_sync_client_that_hangs_up_frees_no_slot(daemon, gates) -> None:
    d = daemon(GATED, max_concurrency=1, max_queue=5)
    head, waiting, third = gates("head"), gates("waiting"), gates("third")
    with httpx.Client(timeout=GUARD) as client:
        head_id = submit_ok(client, d, head.body())
        wait_for_file(head.started)
        sock = raw_invoke(d.url, httpx.Request("POST", "/", json=waiting.body(block=False)).content)
        wait_until(lambda: status_counts(client, d)["queued"] == 1, "the sync request to queue")
        sock.close()  # the queued sync client hangs up
        wait_until(lambda: status_counts(client, d)["queued"] == 0, "the hung-up request to leave the queue")
        assert status_counts(client, d) == {"running": 1, "queued": 0}
        third_id = submit_ok(client, d, third.body(block=False))
        assert client.get(f"{d.url}/jobs/{third_id}").json()["status"] == "queued"  # one at a time
        head.open()
        assert finished(client, d, head_id)["status"] == "completed"
        assert finished(client, d, third_id)["status"] == "completed"
