"""JobManager with the in-memory runtime: states, cancel, admission, retention, events.

Steps block on events the test sets, never on sleeps; `asyncio.timeout(GUARD)` only
keeps a broken build from hanging the suite.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import msgspec
import pytest
from polling import wait_until_async

from jobs import (
    IdempotencyConflict,
    Job,
    JobFinished,
    JobManager,
    JobNotFinished,
    JobNotFound,
    JobSettings,
    JobStatus,
    MemoryJobStore,
    QueueFull,
)
from jobs.states import can_move
from runtimes import Pipeline, RunStatus, create_runtime, pipeline, step
from runtimes.base import Runtime, RuntimeOptions
from serving import progress

pytestmark = pytest.mark.anyio

GUARD = 5.0  # seconds; a hang guard only, never reached by a passing test


class Control:
    """What the steps below report to, and wait on; one per test."""

    def __init__(self) -> None:
        self.started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.release: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.ran: list[str] = []
        self.cancelled: list[str] = []
        self.thread_entered = threading.Event()
        self.thread_go = threading.Event()
        self.thread_returned = threading.Event()

    def open_all(self) -> None:
        self.thread_go.set()
        for event in list(self.release.values()):
            event.set()


CTRL = Control()


@pytest.fixture(autouse=True)
def control() -> Iterator[Control]:
    global CTRL
    CTRL = Control()
    yield CTRL
    CTRL.open_all()


# -- pipelines ----------------------------------------------------------------------------


@step
async def work(name: str, block: bool) -> Annotated[str, "name"]:
    CTRL.ran.append(name)
    CTRL.started[name].set()
    if block:
        try:
            await CTRL.release[name].wait()
        except asyncio.CancelledError:
            CTRL.cancelled.append(name)
            raise
    return name


@pipeline
def one(name: str = "x", block: bool = False):
    return work(name, block)


@step
def first(name: str) -> Annotated[str, "first"]:
    return name


@step
async def middle(first: str, block: bool) -> Annotated[str, "middle"]:
    progress(0.5, "half")
    CTRL.started[first].set()
    if block:
        await CTRL.release[first].wait()
    return first


@step
async def last(middle: str) -> Annotated[str, "out"]:
    return middle + "!"


@pipeline
def three(name: str = "x", block: bool = False):
    return last(middle(first(name), block))


@step
def blocking(name: str, report: bool) -> Annotated[str, "name"]:
    CTRL.thread_entered.set()
    try:
        CTRL.thread_go.wait(GUARD)
        if report:
            progress(0.9, "too late")
        return name
    finally:
        CTRL.thread_returned.set()


@pipeline
def threaded(name: str = "x", report: bool = False):
    return blocking(name, report)


@step
async def letters(n: int, block: bool) -> AsyncIterator[str]:
    for i in range(n):
        if i == 1 and block:
            CTRL.started["gen"].set()
            await CTRL.release["gen"].wait()
        yield chr(ord("a") + i % 26)


@pipeline
def streamer(n: int = 3, block: bool = False):
    return letters(n, block)


@step
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@pipeline
def counter(n: int = 3):
    return numbers(n)


@step
def explode(name: str) -> Annotated[str, "never"]:
    raise ValueError("boom")


@pipeline
def failing(name: str = "x"):
    return explode(name)


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = create_runtime("memory", RuntimeOptions(max_threads=4))
    await rt.start()
    yield rt
    CTRL.open_all()
    await rt.stop()


@pytest.fixture
async def make_manager(runtime: Runtime) -> AsyncIterator[Any]:
    managers: list[JobManager] = []

    async def make(pipe: Pipeline = one, **settings: Any) -> JobManager:
        manager = JobManager(pipe, runtime, JobSettings(**settings))
        await manager.start()
        managers.append(manager)
        return manager

    yield make
    CTRL.open_all()
    for manager in managers:
        await manager.stop(grace=GUARD)


async def submit(manager: JobManager, **params: Any) -> Job:
    job, created = await manager.submit(manager.pipeline.parse_parameters(params))
    assert created
    await asyncio.sleep(0)  # the job's task takes its place in the queue, as it has by the time
    return job  # an HTTP client can act on the job id


async def gone(manager: JobManager, job_id: str) -> bool:
    try:
        await manager.get(job_id)
    except JobNotFound:
        return True
    return False


async def finished(manager: JobManager, job_id: str) -> Job:
    job = await manager.wait(job_id, GUARD)
    assert job.status.finished, f"job still {job.status} after {GUARD}s"
    return job


async def events_of(manager: JobManager, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    async with asyncio.timeout(GUARD):
        return [json.loads(e.data) async for e in await manager.subscribe(job_id, after)]


async def started(name: str) -> None:
    async with asyncio.timeout(GUARD):
        await CTRL.started[name].wait()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# -- states -------------------------------------------------------------------------------


def test_finished_states_are_final() -> None:
    finished_states = [JobStatus.completed, JobStatus.failed, JobStatus.canceled]
    for state in finished_states:
        assert state.finished
        assert not any(can_move(state, other) for other in JobStatus)
    assert can_move(JobStatus.queued, JobStatus.running)
    assert can_move(JobStatus.queued, JobStatus.canceled)
    assert not can_move(JobStatus.queued, JobStatus.completed)
    assert not can_move(JobStatus.running, JobStatus.queued)
    assert all(can_move(JobStatus.running, s) for s in finished_states)


# -- a job's life -------------------------------------------------------------------------


async def test_job_runs_to_completion_with_a_full_record(make_manager: Any) -> None:
    manager = await make_manager(one)
    job, created = await manager.submit(one.parse_parameters({"name": "ada"}))
    assert created and job.status is JobStatus.queued
    assert job.started_at is None and job.finished_at is None and job.result is None
    assert job.pipeline_name == "one" and job.progress.steps_total == 1
    done = await finished(manager, job.job_id)
    assert done.status is JobStatus.completed
    assert done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at
    assert done.error is None and done.cancel_reason is None
    assert isinstance(done.execution_time, float) and done.execution_time >= 0
    result = done.result
    assert result is not None and result.success and result.error is None
    assert done.run_status is RunStatus.completed
    assert result.outputs == {"name": "ada"}
    assert result.metadata.run_id == done.run_id
    assert result.metadata.pipeline_name == "one"
    assert msgspec.to_builtins(result.metadata.parameters_used) == {"name": "ada", "block": False}
    assert done.run_name is not None and done.run_name.startswith("one-")
    assert done.progress.steps_done == done.progress.steps_total == 1
    # the record is JSON as it is
    assert json.loads(msgspec.json.encode(done))["status"] == "completed"


async def test_events_are_numbered_from_one_and_end_with_the_terminal(make_manager: Any) -> None:
    manager = await make_manager(three)
    job = await submit(manager, name="n")
    events = await events_of(manager, job.job_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert types(events) == [
        "run_started",
        "step_started",
        "step_completed",
        "step_started",
        "progress",
        "step_completed",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    assert all(e["run_id"] == job.run_id for e in events)
    assert events[0]["steps_total"] == 3


async def test_a_reader_that_sees_the_end_then_reads_the_record_sees_it_finished(make_manager: Any) -> None:
    manager = await make_manager(one)

    async def follow(job_id: str, seen: list[JobStatus]) -> None:
        async for entry in await manager.subscribe(job_id):
            if entry.terminal:
                seen.append((await manager.get(job_id)).status)

    for block in (False, True):
        job = await submit(manager, name=f"b{block}", block=block)
        seen: list[JobStatus] = []
        async with asyncio.timeout(GUARD):
            task = asyncio.create_task(follow(job.job_id, seen))
            if block:
                await started(job.parameters.name)
                CTRL.release[job.parameters.name].set()
            await task
        assert seen == [JobStatus.completed]


async def test_failing_run_fails_the_job_with_the_error(make_manager: Any) -> None:
    manager = await make_manager(failing)
    job = await submit(manager)
    done = await finished(manager, job.job_id)
    assert done.status is JobStatus.failed
    assert "boom" in done.error
    assert done.result is not None and done.result.success is False and done.result.outputs is None
    assert done.run_status is RunStatus.failed
    assert done.result.error == done.error
    assert types(await events_of(manager, job.job_id))[-2:] == ["step_failed", "run_failed"]


async def test_run_timeout_fails_the_job_as_timed_out(make_manager: Any) -> None:
    manager = await make_manager(one)
    job, _ = await manager.submit(one.parse_parameters({"block": True}), timeout=0.05)
    done = await finished(manager, job.job_id)
    assert done.status is JobStatus.failed
    assert done.run_status is RunStatus.timed_out
    assert types(await events_of(manager, job.job_id))[-1] == "run_failed"


async def test_wait_returns_the_record_at_its_timeout_while_still_running(make_manager: Any) -> None:
    manager = await make_manager(one)
    job = await submit(manager, name="w", block=True)
    await started("w")
    assert (await manager.wait(job.job_id, 0.01)).status is JobStatus.running
    CTRL.release["w"].set()
    assert (await finished(manager, job.job_id)).status is JobStatus.completed


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_queued_job_at_once_and_it_never_runs(make_manager: Any) -> None:
    manager = await make_manager(one, max_concurrency=1, max_queue=5)
    blocker = await submit(manager, name="blocker", block=True)
    await started("blocker")
    queued = await submit(manager, name="queued")
    assert manager.counts() == {"running": 1, "queued": 1}
    job = await manager.cancel(queued.job_id, "no longer needed")
    assert job.status is JobStatus.canceled
    assert job.cancel_reason == "no longer needed"
    assert job.error == "canceled: no longer needed"
    assert job.started_at is None and job.finished_at is not None and job.result is None
    assert manager.counts() == {"running": 1, "queued": 0}
    events = await events_of(manager, queued.job_id)
    assert types(events) == ["run_canceled"]
    assert events[0]["reason"] == "no longer needed" and events[0]["seq"] == 1
    CTRL.release["blocker"].set()
    assert (await finished(manager, blocker.job_id)).status is JobStatus.completed
    # the freed slot does not bring the canceled job back
    after = await submit(manager, name="after")
    await finished(manager, after.job_id)
    assert CTRL.ran == ["blocker", "after"]
    assert (await manager.get(queued.job_id)).status is JobStatus.canceled


async def test_cancel_running_job_cancels_its_step(make_manager: Any) -> None:
    manager = await make_manager(one, max_concurrency=1)
    job = await submit(manager, name="r", block=True)
    await started("r")
    assert (await manager.get(job.job_id)).status is JobStatus.running
    canceled = await manager.cancel(job.job_id, "stop it", wait=GUARD)
    assert canceled.status is JobStatus.canceled
    assert canceled.cancel_reason == "stop it" and canceled.error == "canceled: stop it"
    assert canceled.started_at is not None and canceled.result is None and canceled.run_status is None
    assert CTRL.cancelled == ["r"]
    assert manager.counts() == {"running": 0, "queued": 0}
    events = await events_of(manager, job.job_id)
    assert types(events) == ["run_started", "step_started", "run_canceled"]
    assert events[-1]["reason"] == "stop it"
    # the slot is free again
    again = await submit(manager, name="again")
    assert (await finished(manager, again.job_id)).status is JobStatus.completed


async def test_cancel_without_waiting_returns_while_cancellation_is_under_way(make_manager: Any) -> None:
    manager = await make_manager(one)
    job = await submit(manager, name="r", block=True)
    await started("r")
    returned = await manager.cancel(job.job_id, "later", wait=0)
    assert returned.status is JobStatus.running  # requested, not yet done
    assert returned.cancel_reason == "later"
    done = await finished(manager, job.job_id)
    assert done.status is JobStatus.canceled and done.cancel_reason == "later"


async def test_cancel_finished_job_raises_and_leaves_it_unchanged(make_manager: Any) -> None:
    manager = await make_manager(one)
    job = await submit(manager, name="f")
    done = await finished(manager, job.job_id)
    before = msgspec.json.encode(done)
    with pytest.raises(JobFinished) as info:
        await manager.cancel(job.job_id, "too late")
    assert info.value.job.status is JobStatus.completed
    after = await manager.get(job.job_id)
    assert msgspec.json.encode(after) == before
    assert after.cancel_reason is None
    assert types(await events_of(manager, job.job_id))[-1] == "run_completed"
    # a second cancel of a canceled job is refused the same way
    blocked = await submit(manager, name="b", block=True)
    await manager.cancel(blocked.job_id, "first")
    with pytest.raises(JobFinished):
        await manager.cancel(blocked.job_id, "second")
    assert (await manager.get(blocked.job_id)).cancel_reason == "first"


async def test_unknown_job_ids_raise_job_not_found(make_manager: Any) -> None:
    manager = await make_manager(one)
    for call in (
        manager.get("nope"),
        manager.cancel("nope"),
        manager.wait("nope", 0.01),
        manager.delete("nope"),
        manager.subscribe("nope"),
    ):
        with pytest.raises(JobNotFound):
            await call


async def test_late_thread_completion_never_overwrites_canceled() -> None:
    """A sync step cannot be stopped: its thread returns after the job was canceled.

    With one worker thread, the next sync step runs only after that thread has handed
    the late result to the loop, and its own result reaches the loop after it: once a
    later job has completed, the late result has been dealt with."""
    runtime = create_runtime("memory", RuntimeOptions(max_threads=1))
    await runtime.start()
    manager = JobManager(threaded, runtime, JobSettings())
    await manager.start()
    try:
        job = await submit(manager, name="t")
        assert await asyncio.to_thread(CTRL.thread_entered.wait, GUARD)
        canceled = await manager.cancel(job.job_id, "abandon", wait=GUARD)
        assert canceled.status is JobStatus.canceled
        CTRL.thread_go.set()  # the step now returns normally, after the fact
        later = await submit(manager, name="later")
        assert (await finished(manager, later.job_id)).status is JobStatus.completed
        job = await manager.get(job.job_id)
        assert job.status is JobStatus.canceled
        assert job.result is None and job.error == "canceled: abandon"
        assert types(await events_of(manager, job.job_id))[-1] == "run_canceled"
    finally:
        CTRL.open_all()
        await manager.stop(grace=GUARD)
        await runtime.stop()


async def test_stop_cancels_queued_and_running_jobs(runtime: Runtime) -> None:
    manager = JobManager(one, runtime, JobSettings(max_concurrency=1))
    await manager.start()
    running = await submit(manager, name="r", block=True)
    await started("r")
    queued = [await submit(manager, name=f"q{n}", block=True) for n in range(3)]
    await manager.stop(grace=0.01)  # none can finish in time: all are canceled
    reasons = {running.job_id: "server shutting down"}
    reasons.update((job.job_id, "shut down before it started") for job in queued)
    for job_id, reason in reasons.items():
        job = await manager.get(job_id)
        assert job.status is JobStatus.canceled
        assert job.cancel_reason == reason
        assert types(await events_of(manager, job_id))[-1] == "run_canceled"
    # Before: the slot freed by canceling the running job went to a queued one, which
    # started only to be canceled in its turn.
    assert CTRL.ran == ["r"]
    assert manager.counts() == {"running": 0, "queued": 0}


# -- admission ----------------------------------------------------------------------------


async def test_full_queue_refuses_jobs_and_sync_runs_but_accepted_jobs_complete(make_manager: Any) -> None:
    manager = await make_manager(one, max_concurrency=1, max_queue=1)
    running = await submit(manager, name="a", block=True)
    await started("a")
    queued = await submit(manager, name="b")
    with pytest.raises(QueueFull) as info:
        await manager.submit(one.parse_parameters({"name": "c"}))
    assert info.value.retry_after >= 1 and (info.value.running, info.value.queued) == (1, 1)
    with pytest.raises(QueueFull):
        await manager.run_sync(one.parse_parameters({"name": "d"}))
    assert manager.counts() == {"running": 1, "queued": 1}
    page, _ = await manager.list()
    assert {j.job_id for j in page} == {running.job_id, queued.job_id}  # no record for refusals
    CTRL.release["a"].set()
    for job in (running, queued):
        assert (await finished(manager, job.job_id)).status is JobStatus.completed
    assert CTRL.ran == ["a", "b"]
    assert manager.counts() == {"running": 0, "queued": 0}


async def test_queued_jobs_start_in_submission_order(make_manager: Any) -> None:
    manager = await make_manager(one, max_concurrency=1, max_queue=20)
    head = await submit(manager, name="head", block=True)
    await started("head")
    names = [f"j{i}" for i in range(10)]
    jobs = [await submit(manager, name=n) for n in names]
    assert all(j.status is JobStatus.queued for j in jobs)
    assert manager.counts() == {"running": 1, "queued": 10}
    CTRL.release["head"].set()
    for job in (head, *jobs):
        await finished(manager, job.job_id)
    assert CTRL.ran == ["head", *names]


async def test_sync_runs_and_jobs_share_the_slots(make_manager: Any) -> None:
    manager = await make_manager(one, max_concurrency=1, max_queue=1)
    await submit(manager, name="job", block=True)
    await started("job")
    sync = asyncio.create_task(manager.run_sync(one.parse_parameters({"name": "sync"})))
    await wait_until_async(lambda: manager.counts()["queued"] == 1, "the sync run to queue")
    assert CTRL.ran == ["job"]  # the sync run waits for the job's slot
    CTRL.release["job"].set()
    async with asyncio.timeout(GUARD):
        result = await sync
    assert result.status is RunStatus.completed and result.outputs == {"name": "sync"}
    assert CTRL.ran == ["job", "sync"]
    assert manager.counts() == {"running": 0, "queued": 0}


# -- retention ----------------------------------------------------------------------------


async def test_finished_jobs_expire_after_the_ttl(make_manager: Any) -> None:
    manager = await make_manager(one, job_ttl=0.01)
    job = await submit(manager, name="e")
    await finished(manager, job.job_id)
    # the sweeper runs every half second at the least
    await wait_until_async(lambda: gone(manager, job.job_id), f"the sweeper to expire job {job.job_id}")
    with pytest.raises(JobNotFound):
        await manager.subscribe(job.job_id)


async def test_ttl_never_expires_queued_or_running_jobs(make_manager: Any) -> None:
    manager = await make_manager(one, job_ttl=0.01, max_concurrency=1)
    running = await submit(manager, name="r", block=True)
    await started("r")
    queued = await submit(manager, name="q")
    also_queued = await submit(manager, name="q2")
    expiring = await submit(manager, name="x")
    await manager.cancel(expiring.job_id)  # finished: may expire
    await wait_until_async(lambda: gone(manager, expiring.job_id), "the sweeper to expire the canceled job")
    for job in (running, queued, also_queued):
        assert not (await manager.get(job.job_id)).status.finished


async def test_max_jobs_evicts_the_oldest_finished_first(make_manager: Any) -> None:
    manager = await make_manager(one, max_jobs=3)
    jobs = []
    for i in range(5):
        job = await submit(manager, name=f"j{i}")
        await finished(manager, job.job_id)
        jobs.append(job)
    for job in jobs[:2]:
        with pytest.raises(JobNotFound):
            await manager.get(job.job_id)
        with pytest.raises(JobNotFound):
            await manager.subscribe(job.job_id)
    page, cursor = await manager.list()
    assert [j.job_id for j in page] == [j.job_id for j in reversed(jobs[2:])]
    assert cursor is None


async def test_max_jobs_never_evicts_queued_or_running_jobs(make_manager: Any) -> None:
    manager = await make_manager(one, max_jobs=1, max_concurrency=1, max_queue=10)
    head = await submit(manager, name="head", block=True)
    await started("head")
    queued = [await submit(manager, name=f"q{i}") for i in range(4)]
    assert await manager.store.count() == 5  # over max_jobs, but nothing is finished
    for job in (head, *queued):
        assert not (await manager.get(job.job_id)).status.finished
    CTRL.release["head"].set()
    for job in (head, *queued):
        assert (await finished(manager, job.job_id)).status is JobStatus.completed
    assert CTRL.ran == ["head", "q0", "q1", "q2", "q3"]
    newest = await submit(manager, name="newest")
    assert await manager.store.count() == 1  # all finished ones made room
    assert (await manager.get(newest.job_id)).job_id == newest.job_id


async def test_a_flood_of_submissions_keeps_the_store_bounded(make_manager: Any) -> None:
    max_jobs, batch, total = 50, 20, 2000
    manager = await make_manager(one, max_jobs=max_jobs, max_concurrency=8, max_queue=batch)
    fingerprint = "f"
    for start in range(0, total, batch):
        jobs = []
        for i in range(start, start + batch):
            job, created = await manager.submit(
                one.parse_parameters({"name": str(i)}), idempotency_key=f"k{i}", fingerprint=fingerprint
            )
            assert created
            jobs.append(job)
        for job in jobs:
            await finished(manager, job.job_id)
        count = await manager.store.count()
        assert count <= max_jobs + batch
        assert len(manager._logs) == count  # no event log outlives its record (white box)
    assert len(CTRL.ran) == total
    page, _ = await manager.list(limit=1000)
    assert len(page) <= max_jobs + batch
    # the evicted jobs' idempotency keys are free again
    job, created = await manager.submit(one.parse_parameters({}), idempotency_key="k0", fingerprint="new")
    assert created
    await finished(manager, job.job_id)


# -- event fan-out ------------------------------------------------------------------------


async def test_many_subscribers_get_the_same_full_sequence(make_manager: Any) -> None:
    manager = await make_manager(three)
    job = await submit(manager, name="fan", block=True)
    await started("fan")
    readers = [asyncio.create_task(events_of(manager, job.job_id)) for _ in range(30)]
    for _ in range(3):
        await asyncio.sleep(0)  # every reader has read the history and waits live
    CTRL.release["fan"].set()
    async with asyncio.timeout(GUARD):
        results = await asyncio.gather(*readers)
    first = results[0]
    assert all(r == first for r in results)
    assert [e["seq"] for e in first] == list(range(1, len(first) + 1))
    assert first[-1]["type"] == "run_completed"
    # a reader arriving after the end gets the history and the end
    assert await events_of(manager, job.job_id) == first
    # and one resuming part way gets exactly the rest
    assert await events_of(manager, job.job_id, after=4) == first[4:]


async def test_bounded_log_gives_late_readers_a_gap(make_manager: Any) -> None:
    manager = await make_manager(streamer, events_max=4)
    job = await submit(manager, n=20)
    assert (await finished(manager, job.job_id)).result.outputs == {"output": "abcdefghijklmnopqrst"}
    events = await events_of(manager, job.job_id)
    # run_started, step_started, 20 chunks, step_completed, run_completed: 24, the last 4 kept
    assert events[0] == {"type": "gap", "seq": 20, "from_seq": 1, "to_seq": 20}
    assert [e["seq"] for e in events[1:]] == [21, 22, 23, 24]
    assert types(events[1:]) == ["chunk", "chunk", "step_completed", "run_completed"]


async def test_generator_chunks_arrive_before_the_step_finishes(make_manager: Any) -> None:
    manager = await make_manager(streamer)
    job = await submit(manager, n=3, block=True)
    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        async for entry in await manager.subscribe(job.job_id):
            event = json.loads(entry.data)
            seen.append(event)
            if event["type"] == "chunk" and event["index"] == 0:
                # the step has yielded once and now waits for us
                assert (await manager.get(job.job_id)).status is JobStatus.running
                assert "step_completed" not in types(seen)
                CTRL.release["gen"].set()

    async with asyncio.timeout(GUARD):
        await follow()
    chunks = [e for e in seen if e["type"] == "chunk"]
    assert [(c["index"], c["data"], c["step"]) for c in chunks] == [
        (0, "a", "letters"),
        (1, "b", "letters"),
        (2, "c", "letters"),
    ]
    assert types(seen)[-2:] == ["step_completed", "run_completed"]
    assert (await finished(manager, job.job_id)).result.outputs == {"output": "abc"}


async def test_sync_generator_chunks_and_list_output(make_manager: Any) -> None:
    manager = await make_manager(counter)
    job = await submit(manager, n=4)
    assert (await finished(manager, job.job_id)).result.outputs == {"output": [0, 1, 2, 3]}
    chunks = [e for e in await events_of(manager, job.job_id) if e["type"] == "chunk"]
    assert [(c["index"], c["data"]) for c in chunks] == [(0, 0), (1, 1), (2, 2), (3, 3)]


# -- progress -----------------------------------------------------------------------------


async def test_progress_counters_follow_the_run(make_manager: Any) -> None:
    manager = await make_manager(three)
    job = await submit(manager, name="p", block=True)
    assert job.progress.steps_done == 0 and job.progress.steps_total == 3
    await started("p")
    current = (await manager.get(job.job_id)).progress
    assert (current.steps_done, current.steps_total) == (1, 3)
    assert (current.fraction, current.message, current.step) == (0.5, "half", "middle")
    CTRL.release["p"].set()
    done = await finished(manager, job.job_id)
    assert (done.progress.steps_done, done.progress.steps_total) == (3, 3)
    assert done.result.outputs == {"out": "p!"}
    [event] = [e for e in await events_of(manager, job.job_id) if e["type"] == "progress"]
    assert (event["fraction"], event["message"], event["step"]) == (0.5, "half", "middle")


# -- idempotency --------------------------------------------------------------------------


async def test_idempotency_key_returns_the_same_job_without_running_again(make_manager: Any) -> None:
    manager = await make_manager(one)
    params = one.parse_parameters({"name": "once"})
    job, created = await manager.submit(params, idempotency_key="k", fingerprint="fp")
    assert created and job.idempotency_key == "k"
    await finished(manager, job.job_id)
    again, created = await manager.submit(params, idempotency_key="k", fingerprint="fp")
    assert not created and again.job_id == job.job_id and again.status is JobStatus.completed
    assert CTRL.ran == ["once"]
    with pytest.raises(IdempotencyConflict):
        await manager.submit(params, idempotency_key="k", fingerprint="other")
    assert manager.counts() == {"running": 0, "queued": 0}  # a conflict holds no slot
    page, _ = await manager.list()
    assert [j.job_id for j in page] == [job.job_id]
    # once the job is deleted, the key is free
    await manager.delete(job.job_id)
    fresh, created = await manager.submit(params, idempotency_key="k", fingerprint="other")
    assert created and fresh.job_id != job.job_id
    await finished(manager, fresh.job_id)


async def test_idempotent_repeat_is_answered_even_when_the_queue_is_full(make_manager: Any) -> None:
    manager = await make_manager(one, max_concurrency=1, max_queue=0)
    params = one.parse_parameters({"name": "k", "block": True})
    job, _ = await manager.submit(params, idempotency_key="k", fingerprint="fp")
    await started("k")
    again, created = await manager.submit(params, idempotency_key="k", fingerprint="fp")
    assert not created and again.job_id == job.job_id
    with pytest.raises(QueueFull):
        await manager.submit(params, idempotency_key="other", fingerprint="fp")
    CTRL.release["k"].set()
    await finished(manager, job.job_id)
    assert CTRL.ran == ["k"]


# -- queries ------------------------------------------------------------------------------


async def test_list_pages_newest_first_and_filters_by_status(make_manager: Any) -> None:
    manager = await make_manager(one, max_concurrency=1)
    done0 = await submit(manager, name="d0")
    await finished(manager, done0.job_id)
    done1 = await submit(manager, name="d1")
    await finished(manager, done1.job_id)
    running = await submit(manager, name="r", block=True)
    await started("r")
    queued = await submit(manager, name="q")
    canceled = await submit(manager, name="c")
    await manager.cancel(canceled.job_id)
    ids = [canceled.job_id, queued.job_id, running.job_id, done1.job_id, done0.job_id]

    pages, cursor = [], None
    while True:
        page, cursor = await manager.list(limit=2, cursor=cursor)
        pages.append([j.job_id for j in page])
        if cursor is None:
            break
    assert pages == [ids[0:2], ids[2:4], ids[4:]]

    async def ids_with(status: JobStatus, limit: int = 100) -> list[str]:
        out, cursor = [], None
        while True:
            page, cursor = await manager.list(status, limit, cursor)
            assert all(j.status is status for j in page)
            out += [j.job_id for j in page]
            if cursor is None:
                return out

    assert await ids_with(JobStatus.completed, 1) == [done1.job_id, done0.job_id]
    assert await ids_with(JobStatus.running) == [running.job_id]
    assert await ids_with(JobStatus.queued) == [queued.job_id]
    assert await ids_with(JobStatus.canceled) == [canceled.job_id]
    assert await ids_with(JobStatus.failed) == []


async def test_delete_only_finished_jobs(make_manager: Any) -> None:
    manager = await make_manager(one)
    running = await submit(manager, name="r", block=True)
    await started("r")
    with pytest.raises(JobNotFinished):
        await manager.delete(running.job_id)
    assert (await manager.get(running.job_id)).status is JobStatus.running
    CTRL.release["r"].set()
    await finished(manager, running.job_id)
    await manager.delete(running.job_id)
    with pytest.raises(JobNotFound):
        await manager.get(running.job_id)
    with pytest.raises(JobNotFound):
        await manager.subscribe(running.job_id)
    with pytest.raises(JobNotFound):
        await manager.delete(running.job_id)


# -- edge cases: hung-up sync runs, late reports, racing keys, stop --------------------


async def test_cancelled_queued_sync_run_gives_back_only_its_place(make_manager: Any) -> None:
    """A sync /invoke waiting in the queue whose client hangs up must not free a slot it never had."""
    manager = await make_manager(one, max_concurrency=1, max_queue=5)
    running = await submit(manager, name="a", block=True)
    await started("a")
    sync = asyncio.create_task(manager.run_sync(one.parse_parameters({"name": "sync"})))
    await wait_until_async(lambda: manager.counts()["queued"] == 1, "the sync run to queue")
    sync.cancel()  # what the disconnect watcher does
    with pytest.raises(asyncio.CancelledError):
        await sync
    assert manager.counts() == {"running": 1, "queued": 0}
    second = await submit(manager, name="b", block=True)
    assert second.status is JobStatus.queued
    assert manager.counts() == {"running": 1, "queued": 1}  # no phantom slot: max_concurrency=1
    CTRL.release["a"].set()
    CTRL.release["b"].set()
    await finished(manager, running.job_id)
    await finished(manager, second.job_id)
    assert manager.counts() == {"running": 0, "queued": 0}


async def test_no_event_after_the_terminal_one(make_manager: Any) -> None:
    """A sync step's thread that reports progress after its job was canceled."""
    manager = await make_manager(threaded)
    job = await submit(manager, name="t", report=True)
    assert await asyncio.to_thread(CTRL.thread_entered.wait, GUARD)
    await manager.cancel(job.job_id, "abandon", wait=GUARD)
    CTRL.thread_go.set()
    assert await asyncio.to_thread(CTRL.thread_returned.wait, GUARD)
    # The late progress went to the loop (call_soon_threadsafe) before `thread_returned`
    # was set, so ahead of the to_thread result: it has been handled by now.
    events = await events_of(manager, job.job_id)
    terminal_seq = events[-1]["seq"]
    assert events[-1]["type"] == "run_canceled"
    assert await events_of(manager, job.job_id, after=terminal_seq) == []
    assert (await manager.get(job.job_id)).progress.message is None


class PutAwaitsStore(MemoryJobStore):
    """A store whose first put() takes a while, like a network round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.first_put = asyncio.Event()
        self.slow = True

    async def put(self, job: Job) -> None:
        if self.slow:
            self.slow = False
            await self.first_put.wait()
        await super().put(job)


async def test_concurrent_same_key_gives_one_job_with_an_awaiting_store(runtime: Runtime) -> None:
    store = PutAwaitsStore()
    manager = JobManager(one, runtime, JobSettings(max_concurrency=1), store=store)
    await manager.start()
    params = one.parse_parameters({"name": "k"})
    first = asyncio.create_task(manager.submit(params, idempotency_key="k", fingerprint="fp"))
    await asyncio.sleep(0)  # the first submission has claimed the key and is storing its record
    second_job, second_created = await manager.submit(params, idempotency_key="k", fingerprint="fp")
    store.first_put.set()
    first_job, first_created = await first
    try:
        assert second_job.job_id == first_job.job_id  # one job per key
        assert [first_created, second_created].count(True) == 1
        assert await store.count() == 1
    finally:
        await manager.stop(grace=GUARD)


async def test_stop_without_grace_leaves_no_unawaited_coroutine(runtime: Runtime) -> None:
    manager = JobManager(one, runtime, JobSettings())
    await manager.start()
    await submit(manager, name="r", block=True)
    await started("r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await manager.stop(grace=0)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_cancel_right_after_submit_releases_the_job(runtime: Runtime) -> None:
    manager = JobManager(one, runtime, JobSettings(max_concurrency=1))
    await manager.start()
    blocker = await submit(manager, name="a", block=True)
    await started("a")
    job, _ = await manager.submit(one.parse_parameters({"name": "b"}))
    await manager.cancel(job.job_id)  # before its task ever ran
    CTRL.release["a"].set()
    await finished(manager, blocker.job_id)
    async with asyncio.timeout(GUARD):  # nothing is left running: stop returns at once
        await manager.stop(grace=60)


# -- a store that is a network round trip away ----------------------------------------------


class RemoteLikeStore(MemoryJobStore):
    """Keeps copies of records, as a networked store does (the manager's own `Job` is not
    what `get` returns), and holds every write of a finished record until `go` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.finishing = asyncio.Event()
        self.go = asyncio.Event()

    async def put(self, job: Job) -> None:
        if job.status.finished:
            self.finishing.set()
            await self.go.wait()
        await super().put(msgspec.structs.replace(job))

    async def get(self, job_id: str) -> Job | None:
        job = await super().get(job_id)
        return None if job is None else msgspec.structs.replace(job)


def job_task(job: Job) -> asyncio.Task[Any]:
    """The task driving a job, as a loop shutting down would find it."""
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == f"job:{job.job_id}"]
    return task


async def test_wait_returns_the_record_as_it_is_after_the_job_finished(runtime: Runtime) -> None:
    store = RemoteLikeStore()
    store.go.set()
    manager = JobManager(one, runtime, JobSettings(), store=store)
    await manager.start()
    try:
        job = await submit(manager, name="w", block=True)
        await started("w")
        waiting = asyncio.create_task(manager.wait(job.job_id, GUARD))
        CTRL.release["w"].set()
        async with asyncio.timeout(GUARD):
            done = await waiting
        assert done.status is JobStatus.completed  # not the copy read before waiting
    finally:
        await manager.stop(grace=GUARD)


async def test_a_job_cancelled_again_while_finishing_still_records_its_end(runtime: Runtime) -> None:
    """Shutdown cancelling a job whose cancel is being written must not lose the write."""
    store = RemoteLikeStore()
    manager = JobManager(one, runtime, JobSettings(), store=store)
    await manager.start()
    try:
        job = await submit(manager, name="r", block=True)
        await started("r")
        await manager.cancel(job.job_id, "first", wait=0)
        async with asyncio.timeout(GUARD):
            await store.finishing.wait()  # the job's task is writing its canceled record
        job_task(job).cancel()  # the second cancel: the event loop closing, say
        store.go.set()
        done = await finished(manager, job.job_id)
        assert done.status is JobStatus.canceled and done.error == "canceled: first"
        events = await events_of(manager, job.job_id)
        assert types(events)[-1] == "run_canceled" and events[-1]["reason"] == "first"
    finally:
        await manager.stop(grace=GUARD)


async def test_a_job_finishing_its_result_when_cancelled_still_records_its_end(runtime: Runtime) -> None:
    store = RemoteLikeStore()
    manager = JobManager(one, runtime, JobSettings(), store=store)
    await manager.start()
    try:
        job = await submit(manager, name="c")
        async with asyncio.timeout(GUARD):
            await store.finishing.wait()  # the run completed; its result is being written
        job_task(job).cancel()
        store.go.set()
        done = await finished(manager, job.job_id)
        assert done.status is JobStatus.completed and done.result is not None
        assert types(await events_of(manager, job.job_id))[-1] == "run_completed"
    finally:
        await manager.stop(grace=GUARD)


async def test_cancelling_a_queued_job_closes_it_only_once_its_end_is_recorded(runtime: Runtime) -> None:
    store = RemoteLikeStore()
    manager = JobManager(one, runtime, JobSettings(max_concurrency=1), store=store)
    await manager.start()
    try:
        blocker = await submit(manager, name="a", block=True)
        await started("a")
        queued = await submit(manager, name="b")
        canceling = asyncio.create_task(manager.cancel(queued.job_id, "not needed"))
        async with asyncio.timeout(GUARD):
            await store.finishing.wait()
        waiting = asyncio.create_task(manager.wait(queued.job_id, GUARD))
        store.go.set()
        async with asyncio.timeout(GUARD):
            await canceling
            assert (await waiting).status is JobStatus.canceled
        assert types(await events_of(manager, queued.job_id)) == ["run_canceled"]
        CTRL.release["a"].set()
        assert (await finished(manager, blocker.job_id)).status is JobStatus.completed
    finally:
        await manager.stop(grace=GUARD)


async def test_status_counts_are_the_stores_own(make_manager: Any, runtime: Runtime) -> None:
    class Counting(MemoryJobStore):
        """A store that counts elsewhere (a database's GROUP BY, say)."""

        async def count_by_status(self) -> dict[JobStatus, int]:
            return {JobStatus.failed: 7}

    assert await JobManager(one, runtime, store=Counting()).status_counts() == {JobStatus.failed: 7}
    manager = await make_manager(one)
    await finished(manager, (await submit(manager, name="a")).job_id)
    assert await manager.status_counts() == {JobStatus.completed: 1}
