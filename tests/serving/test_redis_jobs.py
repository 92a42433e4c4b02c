"""SERVING_JOB_STORE=redis://...: two real daemons sharing the machine's Redis (a private
key prefix per test) answer for each other's jobs with today's status codes.

Jobs are submitted on replica A and read, waited for, listed, streamed, resumed,
cancelled and deleted on replica B. Steps are steered with marker files
(tests/pipelines/gated.py), so no assertion depends on timing.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_for_file
from test_stream import GATED, GATED_EVENTS, WAITING, get_job, seqs, sse_events, submit, types
from websockets.sync.client import connect

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = f"{EXAMPLES / 'hello.py'}:hello"
GUARD = 10.0


@pytest.fixture
def pair(job_store_url: str, daemon: Any) -> tuple[Any, Any]:
    """Replicas A and B of the gated pipeline, one Redis job store (requested before
    `daemon`, so the daemons stop before the keys are deleted)."""
    a = daemon(GATED, job_store=job_store_url, access_log="false", sse_ping=0.2)
    b = daemon(GATED, job_store=job_store_url, access_log="false", sse_ping=0.2)
    return a, b


def one_line(proc: Any) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- start-up -------------------------------------------------------------------------------


def test_unreachable_redis_exits_2_naming_the_variable(run_serving: Any) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = one_line(run_serving(HELLO, job_store=url))
    assert "SERVING_JOB_STORE" in line and url in line and "cannot reach Redis" in line


@pytest.mark.parametrize("url", ["mysql://x/0", "redis://127.0.0.1:port/0", "redis://127.0.0.1:6379/zero"])
def test_bad_job_store_url_exits_2_naming_the_variable(run_serving: Any, url: str) -> None:
    line = one_line(run_serving(HELLO, job_store=url))
    assert f"SERVING_JOB_STORE={url!r} is invalid" in line


# -- any replica answers for any job ----------------------------------------------------------


def test_a_job_of_a_is_waited_for_listed_streamed_resumed_and_deleted_on_b(
    pair: tuple[Any, Any], client: httpx.Client, gates: Any
) -> None:
    a, b = pair
    gate = gates("shared")
    job_id = submit(client, a, gate.params())
    # B streams it live until the step waits, then the gate opens and B's long-poll ends
    head = sse_events(client, b, job_id, limit=WAITING)
    assert seqs(head) == list(range(1, WAITING + 1))
    assert types(head) == GATED_EVENTS[:WAITING]
    running = get_job(client, b, job_id)
    assert running["status"] == "running"
    assert running["progress"]["message"] == "waiting"  # progress is shared as it happens
    gate.open()
    job = get_job(client, b, job_id, wait=GUARD)
    assert job["status"] == "completed" and job["result"]["success"] is True
    # resume on B after the last event it saw: the rest, then the end
    rest = sse_events(client, b, job_id, headers={"Last-Event-ID": str(WAITING)})
    assert seqs(rest) == list(range(WAITING + 1, len(GATED_EVENTS) + 1))
    assert types(rest) == GATED_EVENTS[WAITING:]
    # listing on B, with a status filter and a cursor
    other = submit(client, a, gates("other").params(block=False))
    assert get_job(client, b, other, wait=GUARD)["status"] == "completed"
    r = client.get(f"{b.url}/jobs", params={"status": "completed", "limit": 1})
    assert r.status_code == 200 and [j["job_id"] for j in r.json()["jobs"]] == [other]
    r = client.get(f"{b.url}/jobs", params={"status": "completed", "cursor": r.json()["next_cursor"]})
    assert [j["job_id"] for j in r.json()["jobs"]] == [job_id] and r.json()["next_cursor"] is None
    # delete on B: gone on A too
    assert client.delete(f"{b.url}/jobs/{job_id}").status_code == 204
    assert client.get(f"{a.url}/jobs/{job_id}").status_code == 404
    assert client.get(f"{a.url}/stream/{job_id}").status_code == 404
    assert client.delete(f"{b.url}/jobs/{job_id}").status_code == 404


def test_a_cancel_on_b_stops_the_run_on_a(pair: tuple[Any, Any], client: httpx.Client, gates: Any) -> None:
    a, b = pair
    gate = gates("cancel")
    job_id = submit(client, a, gate.params())
    wait_for_file(gate.started)
    r = client.post(f"{b.url}/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "canceled" and job["error"] == "canceled: canceled by request"
    assert gate.cancelled.exists()  # the step on A saw the cancellation
    assert get_job(client, a, job_id)["status"] == "canceled"
    assert client.post(f"{b.url}/jobs/{job_id}/cancel").status_code == 409
    assert client.delete(f"{a.url}/jobs/{job_id}").status_code == 204


def test_delete_of_a_running_job_on_b_is_409(pair: tuple[Any, Any], client: httpx.Client, gates: Any) -> None:
    a, b = pair
    gate = gates("busy")
    job_id = submit(client, a, gate.params())
    wait_for_file(gate.started)
    assert client.delete(f"{b.url}/jobs/{job_id}").status_code == 409
    assert client.get(f"{b.url}/jobs/nope").status_code == 404
    gate.open()
    assert get_job(client, b, job_id, wait=GUARD)["status"] == "completed"


def test_websocket_on_b_follows_a_job_of_a(pair: tuple[Any, Any], client: httpx.Client, gates: Any) -> None:
    a, b = pair
    gate = gates("ws")
    job_id = submit(client, a, gate.params())
    ws_url = b.url.replace("http://", "ws://") + "/stream"
    with connect(ws_url, open_timeout=GUARD) as ws:
        ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        seen: list[dict[str, Any]] = []
        while True:
            message = json.loads(ws.recv(timeout=GUARD))
            if message["type"] == "end":
                break
            assert message["type"] == "event" and message["job_id"] == job_id
            seen.append(message["event"])
            if message["event"]["type"] == "progress" and message["event"]["message"] == "waiting":
                gate.open()
        assert types(seen) == GATED_EVENTS
        assert message["job"]["status"] == "completed"


def test_one_idempotency_key_sent_to_a_and_b_at_once_gives_one_job(pair: tuple[Any, Any], gates: Any) -> None:
    a, b = pair
    body = gates("idem").body(block=False)
    barrier = threading.Barrier(8)
    replies: list[httpx.Response] = []
    lock = threading.Lock()

    def send(url: str) -> None:
        with httpx.Client(timeout=GUARD) as c:
            barrier.wait()
            key = {"Idempotency-Key": "k1"}
            r = c.post(f"{url}/invoke", params={"mode": "async"}, json=body, headers=key)
        with lock:
            replies.append(r)

    threads = [threading.Thread(target=send, args=(d.url,)) for d in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in replies) == [200] * 7 + [202], [r.text for r in replies]
    assert len({r.json()["job_id"] for r in replies}) == 1
    with httpx.Client(timeout=GUARD) as c:
        assert len(c.get(f"{a.url}/jobs").json()["jobs"]) == 1
