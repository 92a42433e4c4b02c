"""Async jobs with the Redis job store against the memory store, in the same run.

a. submit + poll: 32 connections, each submitting a hello job (`/invoke?mode=async`)
   and long-polling `GET /jobs/{id}?wait=` until it completes, for `--jobs` jobs in
   all; jobs completed per second, memory store vs Redis store, in alternating rounds
   (memory, redis, redis, memory, ...), so drift hits both alike. Target: Redis >= 0.5x.
b. SSE fan-out: one job that emits 1,000 events, followed by 200 SSE subscribers;
   baseline one replica with the memory store (200 on it), then two replicas sharing
   Redis (100 on the job's replica, reading its memory, 100 on the other, reading the
   Redis stream). Every subscriber must get every event, in order, with no gap; reports
   the time from the job's first progress event reaching a subscriber (every subscriber
   is attached by then: the job waits 3 s first) to the last subscriber's terminal event.

Daemons (MemoryOnly runtime, hypercorn, access log off) run on core 0, this client on
core 1; Redis is the machine's (127.0.0.1:6379), under a private key prefix deleted after.

    .venv/bin/python bench/redis_jobs.py [--jobs 3000] [--rounds 2] [--subscribers 200]
                                         [--events 1000] [--sections submit,fanout]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/0"
HELLO = "examples/hello.py:hello"
TICKER = "bench.pipelines_jobs:ticker"
SERVER_CORE, CLIENT_CORE = "0", 1
CONNECTIONS = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def daemons(pipeline: str, store: str, count: int, extra: dict[str, str]) -> Iterator[list[str]]:
    """`count` ready daemons on core 0 sharing `store`; always stopped (SIGTERM, then kill)."""
    home = tempfile.mkdtemp(prefix="bench-redis-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update(
        SERVING_PIPELINE=pipeline,
        SERVING_JOB_STORE=store,
        SERVING_RUNTIME="memory",
        SERVING_ACCESS_LOG="false",
        SERVING_LOG_LEVEL="warning",
        SERVING_HOME=home,
        SERVING_HOST="127.0.0.1",
        **extra,
    )
    procs, urls = [], []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "serving"],
                    cwd=ROOT,
                    env={**env, "SERVING_PORT": str(port)},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        with httpx.Client(timeout=2) as client:
            for url, proc in zip(urls, procs, strict=True):
                deadline = time.monotonic() + 30
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"error: daemon for {url} exited with {proc.returncode}")
                    with contextlib.suppress(httpx.TransportError):
                        if client.get(f"{url}/readyz").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"error: daemon for {url} not ready after 30 s")
                    time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"error: Redis at {REDIS} is unreachable ({exc})") from None
    try:
        yield f"{REDIS}?prefix={prefix}"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()


# --------------------------------------------------------------------------- a. submit + poll


async def submit_and_poll(url: str, jobs: int) -> tuple[float, dict[str, int]]:
    """Jobs completed per second over `jobs` submit+long-poll cycles on 32 connections."""
    pending = iter(range(jobs))
    outcomes: dict[str, int] = {}
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for _ in range(CONNECTIONS)]

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in pending:
            r = await client.post("/invoke", params={"mode": "async"}, json={"parameters": {"name": "W"}})
            status = f"submit {r.status_code}"
            if r.status_code == 202:
                job_id = r.json()["job_id"]
                while True:
                    r = await client.get(f"/jobs/{job_id}", params={"wait": 10})
                    if r.status_code != 200 or r.json()["status"] in ("completed", "failed", "canceled"):
                        break
                status = r.json()["status"] if r.status_code == 200 else f"poll {r.status_code}"
            outcomes[status] = outcomes.get(status, 0) + 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        elapsed = time.perf_counter() - started
    finally:
        for c in clients:
            await c.aclose()
    return jobs / elapsed, outcomes


async def bench_submit(jobs: int, rounds: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"memory": [], "redis": []}
    order = [("memory", "redis") if i % 2 == 0 else ("redis", "memory") for i in range(rounds)]
    settings = {"SERVING_MAX_QUEUE": str(jobs), "SERVING_MAX_JOBS": str(jobs * 2)}
    for pair in order:
        for kind in pair:
            with contextlib.ExitStack() as stack:
                store = stack.enter_context(redis_prefix()) if kind == "redis" else "memory"
                (url,) = stack.enter_context(daemons(HELLO, store, 1, settings))
                await submit_and_poll(url, min(jobs, 300))  # warm-up, not measured
                rate, outcomes = await submit_and_poll(url, jobs)
            rates[kind].append(rate)
            print(f"  {kind:6}  {rate:8.1f} jobs/s  {outcomes}", flush=True)
    memory, redis_rate = statistics.median(rates["memory"]), statistics.median(rates["redis"])
    return {
        "jobs": jobs,
        "connections": CONNECTIONS,
        "memory_per_s": [round(r, 1) for r in rates["memory"]],
        "redis_per_s": [round(r, 1) for r in rates["redis"]],
        "ratio_redis_over_memory": round(redis_rate / memory, 3),
    }


# --------------------------------------------------------------------------- b. fan-out


async def follow(url: str, job_id: str, first: list[float]) -> tuple[list[int], list[str], float]:
    """One SSE subscriber: the seqs and types it got, and when the terminal event came."""
    seqs: list[int] = []
    kinds: list[str] = []
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("GET", f"{url}/stream/{job_id}") as response,
    ):
        response.raise_for_status()
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
                if kind == "progress" and not first:  # the first live event (after the lead-in)
                    first.append(time.perf_counter())
            elif line.startswith("id:"):
                seqs.append(int(line[3:]))
                kinds.append(kind)
    return seqs, kinds, time.perf_counter()


async def fanout_once(urls: list[str], subscribers: int, events: int) -> dict[str, Any]:
    lead_in = 3.0  # seconds for every subscriber to attach before the first event
    params = {"ticks": events, "interval": 0, "lead_in": lead_in}
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{urls[0]}/invoke", params={"mode": "async"}, json={"parameters": params})
        job_id = r.json()["job_id"]
        first: list[float] = []
        tasks = [follow(urls[i % len(urls)], job_id, first) for i in range(subscribers)]
        logs = await asyncio.gather(*tasks)
        job = (await client.get(f"{urls[0]}/jobs/{job_id}")).json()
    total = max(len(seqs) for seqs, _, _ in logs)
    complete = sum(seqs == list(range(1, total + 1)) and "gap" not in kinds for seqs, kinds, _ in logs)
    ends = [end for _, _, end in logs]
    return {
        "replicas": len(urls),
        "subscribers": subscribers,
        "events_per_subscriber": total,
        "complete_in_order": complete,
        "job_status": job["status"],
        "deliver_s": round(max(ends) - first[0], 3),
    }


async def bench_fanout(subscribers: int, events: int) -> dict[str, Any]:
    settings = {"SERVING_SSE_PING": "30"}
    with daemons(TICKER, "memory", 1, settings) as urls:
        baseline = await fanout_once(urls, subscribers, events)
    print(f"  memory, 1 replica:  {baseline}", flush=True)
    with redis_prefix() as store, daemons(TICKER, store, 2, settings) as urls:
        shared = await fanout_once(urls, subscribers, events)
    print(f"  redis, 2 replicas:  {shared}", flush=True)
    return {"memory_one_replica": baseline, "redis_two_replicas": shared}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="measured jobs per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each store (default 2)")
    parser.add_argument("--subscribers", type=int, default=200, help="SSE subscribers (default 200)")
    parser.add_argument("--events", type=int, default=1000, help="progress events of the job (default 1000)")
    parser.add_argument("--sections", default="submit,fanout", help="comma list from: submit,fanout")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    os.sched_setaffinity(0, {CLIENT_CORE})
    results: dict[str, Any] = {}
    if "submit" in sections:
        print(f"a. submit + poll to completion, {CONNECTIONS} connections, {args.jobs} jobs per round")
        results["submit"] = asyncio.run(bench_submit(args.jobs, args.rounds))
        print(f"  redis / memory (medians): {results['submit']['ratio_redis_over_memory']}x (target >= 0.5)")
    if "fanout" in sections:
        print(f"b. SSE fan-out: {args.subscribers} subscribers, a job of {args.events} progress events")
        results["fanout"] = asyncio.run(bench_fanout(args.subscribers, args.events))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
