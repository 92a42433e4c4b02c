"""The fleet's queue and leases (`RedisQueue`) against the real Redis of the machine,
under a key prefix of its own. Two stores on one prefix play two replicas; a replica
that "dies" simply stops renewing (what kill -9 leaves behind in Redis).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import msgspec
import pytest
from polling import wait_until_async
from redis_helpers import REDIS_URL, redis_client

from jobs import Job, JobManager, JobStatus
from jobs.queue import Outcome, fleet_retry_after
from jobs.redis_store import RedisJobStore
from runtimes import create_runtime, pipeline, step
from runtimes.base import Runtime, RuntimeOptions

pytestmark = pytest.mark.anyio

LEASE = 0.3


class Params(msgspec.Struct):
    city: str
    days: int = 1


@pytest.fixture
async def replicas(redis_prefix: str) -> AsyncIterator[Callable[[], RedisJobStore]]:
    """Makes stores sharing one prefix, each a replica with its own name."""
    redis_client().close()  # fails the test in one line when Redis is unreachable
    made: list[RedisJobStore] = []

    def make() -> RedisJobStore:
        store = RedisJobStore.from_url(f"{REDIS_URL}?prefix={redis_prefix}", ttl=60, lease=LEASE)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


def make_job(n: int) -> Job:
    return Job(
        job_id=f"job{n}",
        status=JobStatus.queued,
        pipeline_name="p",
        parameters={"city": f"c{n}"},
        run_id=f"run{n}",
        created_at="2026-01-01T00:00:00Z",
    )


async def enqueue(store: RedisJobStore, n: int, *, max_queue: int = 10, run_here: bool = False) -> Outcome:
    params = msgspec.json.encode(Params(city=f"c{n}", days=n))
    placed = await store.queue.enqueue(
        make_job(n), params, 2.5, fingerprint="", max_queue=max_queue, run_here=run_here
    )
    return placed.outcome


async def terminal_event(store: RedisJobStore, job_id: str) -> dict[str, object]:
    entries = await store.client.xrange(store.key("events", job_id))
    assert entries and entries[-1][1][b"e"] == b"1"
    return msgspec.json.decode(entries[-1][1][b"d"])


async def test_a_job_travels_with_its_parameters_and_timeout(replicas: Callable[[], RedisJobStore]) -> None:
    a, b = replicas(), replicas()
    await b.queue.renew([])
    assert await enqueue(a, 1) is Outcome.queued
    assert await b.queue.take(1) == "job1"
    taken = await b.queue.start("job1")
    assert taken is not None and taken.job.job_id == "job1" and taken.timeout == 2.5
    assert msgspec.json.decode(taken.params, type=Params) == Params(city="c1", days=1)
    assert await b.queue.start("job1") is None  # taken once only


async def test_run_here_only_when_nobody_is_queued(replicas: Callable[[], RedisJobStore]) -> None:
    a = replicas()
    assert await enqueue(a, 1, run_here=True) is Outcome.run
    assert await a.client.zscore(a.key("leases"), "job1") is not None
    assert await enqueue(a, 2) is Outcome.queued
    assert await enqueue(a, 3, run_here=True) is Outcome.queued  # behind job2: no jumping the line


async def test_the_bound_is_the_fleets_and_a_full_queue_stores_nothing(
    replicas: Callable[[], RedisJobStore],
) -> None:
    a, b = replicas(), replicas()
    assert await enqueue(a, 1, max_queue=1) is Outcome.queued
    placed = await b.queue.enqueue(make_job(2), b"{}", None, fingerprint="", max_queue=1, run_here=False)
    assert placed.outcome is Outcome.full and placed.depth == 1 and placed.recent == 0
    assert await b.get("job2") is None


def test_retry_after_drains_the_queue_at_the_fleets_recent_pace() -> None:
    assert fleet_retry_after(depth=9, recent=60, fallback=7) == 10  # 1 job/s, 10 ahead
    assert fleet_retry_after(depth=0, recent=600, fallback=7) == 1
    assert fleet_retry_after(depth=5, recent=0, fallback=7) == 7  # no pace to go by


async def test_cancel_of_a_queued_job_removes_it_and_records_the_end(
    replicas: Callable[[], RedisJobStore],
) -> None:
    a, b = replicas(), replicas()
    await enqueue(a, 1)
    assert await b.queue.cancel_queued("job1", "by request") is True
    assert await a.client.llen(a.key("queue")) == 0
    job = await a.get("job1")
    assert job is not None and job.status is JobStatus.canceled and job.error == "canceled: by request"
    assert await terminal_event(a, "job1") == {
        "type": "run_canceled",
        "seq": 1,
        "run_id": "run1",
        "ts": pytest.approx(0, abs=1e12),
        "reason": "by request",
        "duration": 0.0,
    }
    assert await b.queue.cancel_queued("job1", "again") is False


async def test_a_taken_job_canceled_before_it_starts_is_dropped(
    replicas: Callable[[], RedisJobStore],
) -> None:
    a, b = replicas(), replicas()
    await b.queue.renew([])
    await enqueue(a, 1)
    assert await b.queue.take(1) == "job1"
    assert await a.queue.cancel_queued("job1", "by request") is True
    assert await b.queue.start("job1") is None
    assert await b.client.llen(b.key("taken", b.queue.replica)) == 0


async def test_jobs_taken_by_a_replica_that_died_before_starting_them_go_back_to_the_queue(
    replicas: Callable[[], RedisJobStore],
) -> None:
    dead, alive = replicas(), replicas()
    await dead.queue.renew([])  # a heartbeat, then never again
    await enqueue(dead, 1)
    assert await dead.queue.take(1) == "job1"

    async def requeued() -> bool:
        await alive.queue.reap()
        return await alive.client.llen(alive.key("queue")) == 1

    await wait_until_async(requeued, "the dead replica's taken job to be requeued")
    await alive.queue.renew([])
    assert await alive.queue.take(1) == "job1"
    assert await alive.queue.start("job1") is not None
    assert await dead.queue.start("job1") is None  # too late for the one thought dead


async def test_a_job_whose_lease_runs_out_fails_as_worker_lost(replicas: Callable[[], RedisJobStore]) -> None:
    dead, alive = replicas(), replicas()
    assert await enqueue(dead, 1, run_here=True) is Outcome.run
    await alive.queue.renew(["job1"])  # not alive's lease: nothing renewed
    failed = await wait_until_async(alive.queue.reap, "the lost job to be failed")
    assert failed == ["job1"]
    job = await alive.get("job1")
    assert job is not None and job.status is JobStatus.failed
    assert job.error is not None and job.error.startswith(f"worker lost: replica {dead.queue.replica}")
    end = await terminal_event(alive, "job1")
    assert end["type"] == "run_failed" and end["seq"] == 1 and end["error"] == job.error
    assert await alive.client.zcard(alive.key("leases")) == 0
    assert await dead.queue.renew(["job1"]) == ["job1"]  # the owner learns it lost the lease
    # the owner's late end does not replace the first one
    late = msgspec.structs.replace(job, status=JobStatus.completed, error=None)
    assert await dead.put_record(late) is False


async def test_renewal_keeps_a_lease_and_leave_gives_everything_back(
    replicas: Callable[[], RedisJobStore],
) -> None:
    a, b = replicas(), replicas()
    assert await enqueue(a, 1, run_here=True) is Outcome.run
    before = await a.client.zscore(a.key("leases"), "job1")
    assert await a.queue.renew(["job1"]) == []
    assert await a.client.zscore(a.key("leases"), "job1") >= before
    await enqueue(b, 2)
    assert await a.queue.take(1) == "job2"
    await a.queue.leave()
    assert await a.client.lrange(a.key("queue"), 0, -1) == [b"job2"]
    assert not await a.client.sismember(a.key("replicas"), a.queue.replica)


# -- a JobManager on the queue, shutting down --------------------------------------------

GUARD = 3.0  # seconds; a hang guard only, below TAKE_BLOCK so a lost cancel shows


@step
def echo(city: str, days: int) -> Annotated[str, "city"]:
    return city


@pipeline
def weather(city: str = "x", days: int = 1):
    return echo(city, days)


async def stops_within(manager: JobManager, seconds: float) -> bool:
    """Whether stop() returns in time; asked of a task, so a hang fails the test."""
    stopping = asyncio.create_task(manager.stop())
    done, _ = await asyncio.wait([stopping], timeout=seconds)
    return stopping in done


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = create_runtime("memory", RuntimeOptions(max_threads=2))
    await rt.start()
    yield rt
    await rt.stop()


async def test_a_drain_while_the_manager_starts_takes_nothing_and_stop_returns(
    replicas: Callable[[], RedisJobStore], runtime: Runtime
) -> None:
    """SIGTERM reaching a worker that is still starting: drain() runs while start()
    awaits Redis. The replica must not start taking jobs after that, and stop() ends."""
    a = replicas()
    await enqueue(a, 1)
    manager = JobManager(weather, runtime, store=replicas())
    starting = asyncio.create_task(manager.start())
    await asyncio.sleep(0)  # start() is now waiting on Redis (the cancel listener)
    manager.drain()
    async with asyncio.timeout(GUARD):
        await starting
    await asyncio.sleep(0.2)  # long enough for a taker to pop the queued job
    assert await stops_within(manager, GUARD)
    assert await a.client.lrange(a.key("queue"), 0, -1) == [b"job1"]  # left for other replicas


async def test_stop_returns_when_the_redis_client_loses_the_takers_cancel(
    replicas: Callable[[], RedisJobStore], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py sends under asyncio.wait_for, which on Python 3.11 can return normally
    when the cancel and the end of the write meet: the taker is then not cancelled."""
    store = replicas()
    popping = asyncio.Event()
    lost: list[bool] = []

    async def take(block: float) -> str | None:
        popping.set()
        try:
            await asyncio.sleep(block)
        except asyncio.CancelledError:
            if lost:
                raise
            lost.append(True)  # the first cancel is lost, as in redis-py
        return None

    monkeypatch.setattr(store.queue, "take", take)
    manager = JobManager(weather, runtime, store=store)
    await manager.start()
    async with asyncio.timeout(GUARD):
        await popping.wait()
    assert await stops_within(manager, GUARD)
    assert lost  # the cancel was lost, and stop() returned all the same
