"""The `JobStore` protocol, run against every store: newest-first pages with a cursor,
idempotency keys, and retention. The Redis store runs against the real Redis of the
machine, under a key prefix of its own (deleted after each test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis_helpers import REDIS_URL, RedisServer, redis_client

from jobs import Job, JobStatus, JobStore, MemoryJobStore, StoreUnavailable
from jobs.redis_store import RedisJobStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        yield MemoryJobStore()
        return
    redis_client().close()  # fails the test in one line when Redis is unreachable
    prefix = request.getfixturevalue("redis_prefix")
    redis_store = RedisJobStore.from_url(f"{REDIS_URL}?prefix={prefix}")
    yield redis_store
    await redis_store.close()


def make_job(n: int, status: JobStatus = JobStatus.queued) -> Job:
    return Job(
        job_id=f"job{n}",
        status=status,
        pipeline_name="p",
        parameters={"n": n},
        run_id=f"run{n}",
        created_at="2026-01-01T00:00:00Z",
    )


async def all_pages(store: JobStore, status: JobStatus | None, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        page, cursor = await store.list(status, limit, cursor)
        pages.append([j.job_id for j in page])
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never ends"


async def test_list_is_newest_first_with_cursor_and_no_empty_last_page(store: JobStore) -> None:
    for n in range(7):
        await store.put(make_job(n))
    assert await all_pages(store, None, 3) == [["job6", "job5", "job4"], ["job3", "job2", "job1"], ["job0"]]
    # a page size that divides the count exactly ends without an empty page
    assert await all_pages(store, None, 7) == [[f"job{n}" for n in reversed(range(7))]]
    assert await all_pages(store, None, 1000) == [[f"job{n}" for n in reversed(range(7))]]
    assert len(await all_pages(store, None, 1)) == 7


async def test_list_filters_by_status_across_pages(store: JobStore) -> None:
    for n in range(10):
        await store.put(make_job(n, JobStatus.completed if n % 3 == 0 else JobStatus.queued))
    assert await all_pages(store, JobStatus.completed, 2) == [["job9", "job6"], ["job3", "job0"]]
    assert await all_pages(store, JobStatus.canceled, 2) == [[]]
    assert await all_pages(store, JobStatus.queued, 4) == [["job8", "job7", "job5", "job4"], ["job2", "job1"]]


async def test_updates_keep_a_job_in_its_place(store: JobStore) -> None:
    jobs = [make_job(n) for n in range(3)]
    for job in jobs:
        await store.put(job)
    jobs[0].status = JobStatus.running
    await store.put(jobs[0])
    assert await all_pages(store, None, 10) == [["job2", "job1", "job0"]]
    assert (await store.get("job0")).status is JobStatus.running


async def test_idempotency_keys_bind_once_and_are_freed_with_their_job(store: JobStore) -> None:
    await store.put(make_job(1))
    assert await store.claim_key("k", "job1", "fp") is None
    assert await store.claim_key("k", "job2", "other") == ("job1", "fp")
    assert await store.lookup_key("k") == ("job1", "fp")
    await store.delete("job1")
    assert await store.lookup_key("k") is None
    assert await store.get("job1") is None
    assert await store.claim_key("k", "job2", "other") is None


async def test_ttl_evicts_finished_jobs_only(store: JobStore) -> None:
    statuses = [
        JobStatus.queued,
        JobStatus.running,
        JobStatus.completed,
        JobStatus.failed,
        JobStatus.canceled,
    ]
    for n, status in enumerate(statuses):
        await store.put(make_job(n, status))
    assert await store.evict(3600.0, 100) == []
    assert sorted(await store.evict(0.0, 100)) == ["job2", "job3", "job4"]
    assert await store.count() == 2
    assert await store.get("job0") is not None and await store.get("job1") is not None


async def test_max_jobs_evicts_oldest_finished_first_never_active(store: JobStore) -> None:
    active = [make_job(n) for n in range(3)]
    for job in active:
        await store.put(job)
    for n in range(3, 8):
        await store.put(make_job(n, JobStatus.completed))
    # finish order, not creation order, decides who goes first
    active[2].status = JobStatus.completed
    await store.put(active[2])
    assert await store.evict(3600.0, 5) == ["job3", "job4", "job5"]
    assert await store.count() == 5
    # far below the count of active jobs: every finished one goes, no active one does
    assert await store.evict(3600.0, 1) == ["job6", "job7", "job2"]
    assert sorted(j.job_id for j in (await store.list(None, 100, None))[0]) == ["job0", "job1"]


async def test_finish_time_is_recorded_once(store: JobStore) -> None:
    first, second = make_job(1, JobStatus.completed), make_job(2, JobStatus.completed)
    await store.put(first)
    await store.put(second)
    await store.put(first)  # a later update does not make it "newer"
    assert await store.evict(3600.0, 1) == ["job1"]


async def test_count_by_status_counts_kept_records(store: JobStore) -> None:
    assert await store.count_by_status() == {}
    for n, status in enumerate(
        [JobStatus.queued, JobStatus.running, JobStatus.completed, JobStatus.completed]
    ):
        await store.put(make_job(n, status))
    assert await store.count_by_status() == {
        JobStatus.queued: 1,
        JobStatus.running: 1,
        JobStatus.completed: 2,
    }
    await store.put(make_job(0, JobStatus.canceled))  # an update moves a record, never adds one
    await store.delete("job2")
    assert await store.count_by_status() == {
        JobStatus.canceled: 1,
        JobStatus.running: 1,
        JobStatus.completed: 1,
    }


async def test_concurrent_claims_of_one_key_bind_it_once(store: JobStore) -> None:
    import asyncio

    for n in range(20):
        await store.put(make_job(n))
    results = await asyncio.gather(*(store.claim_key("k", f"job{n}", f"fp{n}") for n in range(20)))
    winners = [n for n, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert {r for r in results if r is not None} == {(f"job{winners[0]}", f"fp{winners[0]}")}


async def test_a_finished_record_is_not_replaced_by_an_unfinished_one(store: JobStore) -> None:
    job = make_job(1, JobStatus.completed)
    await store.put(job)
    await store.put(make_job(1, JobStatus.running))  # a late progress write
    assert (await store.get("job1")).status is JobStatus.completed


async def test_redis_keys_of_finished_jobs_expire_and_evict_leaves_none(redis_prefix: str) -> None:
    client = redis_client()
    store = RedisJobStore.from_url(f"{REDIS_URL}?prefix={redis_prefix}", ttl=60.0)
    try:
        running, done = make_job(1, JobStatus.running), make_job(2, JobStatus.completed)
        done.idempotency_key = "k2"
        await store.put(running)
        await store.put(done)
        assert await store.claim_key("k2", "job2", "fp") is None
        await store.put(done)  # the finishing write gives the key its expiry too
        assert client.ttl(f"{redis_prefix}job:job1") == -1  # never expires while active
        assert 0 < client.ttl(f"{redis_prefix}job:job2") <= 60
        assert 0 < client.ttl(f"{redis_prefix}idem:k2") <= 60
        assert await store.evict(0.0, 100) == ["job2"]
        left = sorted(k.decode() for k in client.scan_iter(match=f"{redis_prefix}*"))
        kept = [f"{redis_prefix}{k}" for k in ("fclock", "job:job1", "jobs", "seq", "status:running")]
        assert left == kept
    finally:
        await store.close()
        client.close()


async def test_a_long_wait_for_a_job_end_is_not_taken_for_a_lost_redis(redis_prefix: str) -> None:
    """A `?wait=` long-poll for a job on another replica blocks on the job's stream for as
    long as asked: longer than redis-py's default 5 s read timeout, which made such a wait
    fail as if Redis had gone (a 503)."""
    store = RedisJobStore.from_url(f"{REDIS_URL}?prefix={redis_prefix}")
    try:
        await store.put(make_job(1))
        assert await store.wait_end("job1", 6.5) is False  # no end came; no error either
        assert store.health.up and store.health.errors == 0
    finally:
        await store.close()


async def test_redis_store_raises_store_unavailable_while_redis_is_away(private_redis: RedisServer) -> None:
    store = RedisJobStore.from_url(private_redis.url)
    try:
        await store.put(make_job(1))
        private_redis.stop()
        calls = [
            store.put(make_job(2)),
            store.get("job1"),
            store.delete("job1"),
            store.list(None, 10, None),
            store.claim_key("k", "job1", "f"),
            store.lookup_key("k"),
            store.evict(1.0, 10),
            store.count(),
            store.count_by_status(),
            store.wait_end("job1", 0.1),
            store.request_cancel("job1", "why"),
            store.ping(),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="the job store is unavailable"):
                await call
        with pytest.raises(StoreUnavailable):
            async for _ in store.events("job1").read():
                pass
        assert store.health.up is False and store.health.errors == len(calls) + 1
        private_redis.start()  # empty again: persistence is off
        assert await store.get("job1") is None
        await store.put(make_job(3))
        assert await store.count() == 1 and store.health.up is True
    finally:
        await store.close()
