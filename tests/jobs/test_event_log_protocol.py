"""The `EventLog` protocol, run against both logs a subscriber can read: the owner's
in-memory `JobEventLog`, and the job's Redis stream read from another replica (the
machine's Redis under a private key prefix). Same seqs, same resume, same `gap`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis_helpers import REDIS_URL, redis_client

from jobs import Job, JobEventLog, JobStatus
from jobs.events import EventLog
from jobs.redis_store import RedisJobStore
from runtimes import events as ev

pytestmark = pytest.mark.anyio

GUARD = 10.0  # seconds; a hang guard only

# (make a written log with max_events, the reader of that log, wait until all is shared)
Logs = Callable[..., Awaitable[tuple[JobEventLog, EventLog, Callable[[], Awaitable[None]]]]]


def progress(n: int) -> ev.Progress:
    return ev.Progress(seq=0, run_id="r", ts=0.0, step="s", fraction=None, message=f"m{n}")


def done() -> ev.RunCompleted:
    return ev.RunCompleted(seq=0, run_id="r", ts=0.0, duration=0.0)


@pytest.fixture(params=["memory", "redis"])
async def logs(request: pytest.FixtureRequest) -> AsyncIterator[Logs]:
    if request.param == "memory":

        async def local(max_events: int, max_bytes: int | None = None) -> Any:
            log = JobEventLog(max_events, max_bytes)

            async def settled() -> None:
                return None

            return log, log, settled

        yield local
        return
    redis_client().close()  # fails the test in one line when Redis is unreachable
    prefix = request.getfixturevalue("redis_prefix")
    store = RedisJobStore.from_url(f"{REDIS_URL}?prefix={prefix}")
    count = iter(range(1000))

    async def shared(max_events: int, max_bytes: int | None = None) -> Any:
        job_id = f"job{next(count)}"
        await store.put(
            Job(
                job_id=job_id,
                status=JobStatus.running,
                pipeline_name="p",
                parameters={},
                run_id="r",
                created_at="2026-01-01T00:00:00Z",
            )
        )
        log = JobEventLog(max_events, max_bytes)
        mirror = store.mirror(job_id, log, lambda: asyncio.sleep(0))

        async def settled() -> None:
            async with asyncio.timeout(GUARD):
                await mirror

        return log, store.events(job_id), settled

    yield shared
    await store.close()


async def read_all(reader: EventLog, after: int = 0) -> list[dict[str, Any]]:
    async with asyncio.timeout(GUARD):
        return [json.loads(entry.data) async for entry in reader.read(after)]


async def test_history_the_end_and_resume_from_any_point(logs: Logs) -> None:
    log, reader, settled = await logs(100)
    for i in range(5):
        log.append(progress(i))
    log.append(done(), terminal=True)
    await settled()
    events = await read_all(reader)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1]["type"] == "run_completed" and events[2]["message"] == "m2"
    for k in range(7):
        assert [e["seq"] for e in await read_all(reader, k)] == list(range(k + 1, 7))


async def test_a_live_reader_gets_every_event_once_in_order(logs: Logs) -> None:
    log, reader, settled = await logs(1000)
    got: list[int] = []
    halfway = asyncio.Event()

    async def follow() -> None:
        async for entry in reader.read(0):
            got.append(entry.seq)
            if entry.seq == 50:
                halfway.set()

    task = asyncio.create_task(follow())
    for i in range(50):
        log.append(progress(i))
    async with asyncio.timeout(GUARD):
        await halfway.wait()  # the reader is live, not reading history
    for i in range(50, 100):
        log.append(progress(i))
    log.append(done(), terminal=True)
    async with asyncio.timeout(GUARD):
        await task
    await settled()
    assert got == list(range(1, 102))


async def test_a_reader_behind_the_bounded_log_gets_one_gap_then_the_rest(logs: Logs) -> None:
    log, reader, settled = await logs(10)
    for i in range(500):
        log.append(progress(i))
    log.append(done(), terminal=True)
    await settled()
    events = await read_all(reader)
    gap, rest = events[0], events[1:]
    assert gap["type"] == "gap" and gap["from_seq"] == 1
    assert gap["to_seq"] == gap["seq"] == rest[0]["seq"] - 1
    assert [e["seq"] for e in rest] == list(range(rest[0]["seq"], 502))
    assert 10 <= len(rest) < 501  # Redis trims approximately (MAXLEN ~), never below the bound


async def test_a_byte_bounded_log_gives_a_late_reader_a_gap_then_the_newest(logs: Logs) -> None:
    log, reader, settled = await logs(1000, 6000)
    for _ in range(30):
        log.append(ev.Progress(seq=0, run_id="r", ts=0.0, step="s", fraction=None, message="x" * 1000))
    log.append(done(), terminal=True)
    await settled()
    events = await read_all(reader)
    gap = events[0]
    assert gap["type"] == "gap" and gap["from_seq"] == 1
    kept = [e["seq"] for e in events[1:]]
    assert 1 < len(kept) <= 5  # what fits in 6000 bytes of ~1.2 KB entries
    assert kept == list(range(gap["to_seq"] + 1, 32)) and events[-1]["type"] == "run_completed"
