"""Redis lost while two replicas serve, then back on the same port, without a restart.

A private `redis-server` (no persistence) is stopped under two real daemons: job calls
answer 503 problem+json naming the job store, WebSocket gets an error and stays usable,
sync /invoke and /readyz keep answering, /status and /metrics show the store down. A
job that finishes meanwhile has its end stored once Redis is back; new jobs, streams,
cross-replica cancels and the retention sweeper work again.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from polling import wait_for_file, wait_until
from redis_helpers import RedisServer
from test_stream import GATED, TERMINAL, WAITING, get_job, sse_events, submit
from websockets.sync.client import connect

GUARD = 10.0


def ws_url(daemon: Any) -> str:
    return daemon.url.replace("http://", "ws://") + "/stream"


def assert_store_503(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"].isdigit()
    body = r.json()
    assert body["status"] == 503 and "the job store is unavailable" in body["detail"]
    assert "Traceback" not in r.text


def metric(client: httpx.Client, daemon: Any, name: str) -> float:
    r = client.get(f"{daemon.url}/metrics")
    assert r.status_code == 200, r.text
    line = next(ln for ln in r.text.splitlines() if ln.startswith(f"{name} "))
    return float(line.split()[1])


def completed_on(client: httpx.Client, daemon: Any, job_id: str) -> dict[str, Any] | None:
    r = client.get(f"{daemon.url}/jobs/{job_id}")
    return r.json() if r.status_code == 200 and r.json()["status"] == "completed" else None


def test_redis_lost_then_back_while_two_replicas_serve(
    private_redis: RedisServer, daemon: Any, client: httpx.Client, gates: Any
) -> None:
    a = daemon(GATED, job_store=private_redis.url, access_log="false")
    b = daemon(GATED, job_store=private_redis.url, access_log="false")
    gate = gates("lost")
    job_id = submit(client, a, gate.params())
    wait_for_file(gate.started)
    assert get_job(client, b, job_id)["status"] == "running"

    with connect(ws_url(b), open_timeout=GUARD) as ws:
        ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        for _ in range(WAITING):  # B follows A's job through Redis up to the waiting step
            assert json.loads(ws.recv(timeout=GUARD))["type"] == "event"

        private_redis.stop()

        # the subscription Redis carried is cut with a 503 for that job; the socket lives on
        cut = json.loads(ws.recv(timeout=GUARD))
        assert cut["type"] == "error" and cut["status"] == 503 and cut["job_id"] == job_id
        ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        again = json.loads(ws.recv(timeout=GUARD))
        assert again["type"] == "error" and again["status"] == 503
        ws.send(json.dumps({"type": "invoke", "parameters": gates("ws").params(block=False)}))
        refused = json.loads(ws.recv(timeout=GUARD))
        assert refused["type"] == "error" and refused["status"] == 503
        ws.send("{}")
        assert json.loads(ws.recv(timeout=GUARD))["status"] == 422  # still usable

    # every call that needs the store answers 503 on both replicas
    body = {"parameters": gates("refused").params(block=False)}
    for replica in (a, b):
        assert_store_503(client.post(f"{replica.url}/invoke", params={"mode": "async"}, json=body))
        assert_store_503(client.get(f"{replica.url}/jobs"))
        assert_store_503(client.get(f"{replica.url}/jobs/{job_id}"))
        assert_store_503(client.get(f"{replica.url}/jobs/{job_id}", params={"wait": 1}))
        assert_store_503(client.post(f"{replica.url}/jobs/{job_id}/cancel"))
        assert_store_503(client.delete(f"{replica.url}/jobs/{job_id}"))
    assert_store_503(client.get(f"{b.url}/stream/{job_id}"))  # B would read Redis
    assert_store_503(client.post(f"{b.url}/invoke", json=body, headers={"Idempotency-Key": "k"}))
    # sync /invoke needs no store; the probes and the operational view stay up
    r = client.post(f"{b.url}/invoke", json={"parameters": gates("sync").params(block=False)})
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    assert client.get(f"{b.url}/readyz").status_code == 200
    store = client.get(f"{b.url}/status").json()["job_store"]
    assert store["kind"] == "redis" and store["up"] is False and store["errors"] > 0
    assert metric(client, b, "serving_job_store_up") == 0.0
    assert metric(client, b, "serving_job_store_errors_total") > 0

    # A's job finishes while Redis is away: its end waits for Redis, then lands
    gate.open()
    wait_for_file(gate.done)
    private_redis.start()  # same port, empty (no persistence)
    job = wait_until(lambda: completed_on(client, b, job_id), "A's job to be stored completed", timeout=GUARD)
    assert job["result"]["outputs"] == {"result": "done:lost"}
    # the events that were waiting reach the stream, in order, ending with the terminal one
    rest = sse_events(client, b, job_id, params={"after_seq": WAITING})
    assert [e["seq"] for e in rest] == list(range(WAITING + 1, WAITING + 1 + len(rest)))
    assert rest[-1]["type"] in TERMINAL

    # recovered without a restart: submits, store state, cross-replica cancel
    fresh = submit(client, b, gates("fresh").params(block=False))
    assert get_job(client, a, fresh, wait=GUARD)["status"] == "completed"
    assert client.get(f"{b.url}/status").json()["job_store"]["up"] is True
    assert metric(client, b, "serving_job_store_up") == 1.0
    # a cancel published before A listens again would be lost (pub/sub keeps nothing)
    a.wait_for_log(lambda e: e.get("event") == "cancel_channel_back", "A to listen for cancels again")
    held = gates("held")
    running = submit(client, a, held.params())
    wait_for_file(held.started)
    r = client.post(f"{b.url}/jobs/{running}/cancel")  # reaches A over the resubscribed channel
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    for replica in (a, b):
        assert "Traceback" not in replica.logs()
        assert any(e.get("event") == "job_store_back" for e in replica.log_events())


def test_the_retention_sweeper_outlives_an_outage(
    private_redis: RedisServer, daemon: Any, client: httpx.Client, gates: Any
) -> None:
    a = daemon(GATED, job_store=private_redis.url, access_log="false", job_ttl=1, graceful_timeout=0.5)
    private_redis.stop()
    # nothing but the sweeper calls the store now: its failure is the one logged
    a.wait_for_log(lambda e: e.get("event") == "job_store_lost", "the sweeper to meet the outage")
    private_redis.start()
    # the replica's own background calls find Redis back
    a.wait_for_log(lambda e: e.get("event") == "job_store_back", "the replica to reach Redis again")
    accepted: list[str] = []

    def submitted() -> bool:
        # a 503 here accepted nothing (documented), so submitting again makes no second job
        r = client.post(f"{a.url}/invoke?mode=async", json={"parameters": gates("swept").params(block=False)})
        assert r.status_code in (202, 503), r.text
        if r.status_code == 202:
            accepted.append(r.json()["job_id"])
        return bool(accepted)

    wait_until(submitted, "the job to be accepted")
    (job_id,) = accepted

    def completed() -> bool:
        # a pooled connection to the old server may still fail one call: a 503, as documented
        r = client.get(f"{a.url}/jobs/{job_id}", params={"wait": GUARD})
        assert r.status_code in (200, 503), r.text
        return r.status_code == 200 and r.json()["status"] == "completed"

    wait_until(completed, "the job to be read back completed")
    # past the TTL the sweeper (not key expiry, which leaves index entries) empties the index
    import redis

    r = redis.Redis.from_url(private_redis.url)
    try:
        wait_until(lambda: r.zcard("serving:jobs") == 0, "the sweeper to evict the expired job")
        assert r.keys("serving:job:*") == []
    finally:
        r.close()
    # a replica stopped while Redis is away, with a job running, still exits cleanly
    held = gates("held")
    submit(client, a, held.params())
    wait_for_file(held.started)
    private_redis.stop()
    a.signal()
    assert a.wait(GUARD) == 0
    assert "Traceback" not in a.logs()
