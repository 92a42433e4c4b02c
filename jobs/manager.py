"""The job manager: admission, queueing, running, cancelling and watching invocations.

Sync invocations (`run_sync`) and async jobs (`submit`) share one `Limiter`, so there
is one truth for load. A job's events go to its `JobEventLog`, which any number of
subscribers read; its record goes to the `JobStore`. No Starlette here: the HTTP edge
translates `QueueFull`, `JobNotFound` and `JobFinished` into status codes.

A networked store can be away for a while: calls made for a client (submit, get, list,
wait, cancel, delete, subscribe) raise `StoreUnavailable` and change nothing; the work
of jobs already running goes on, their progress writes are skipped, and their terminal
record is retried with backoff for up to `END_RETRY_FOR` seconds (see `_store_end`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from jobs import metrics
from jobs.events import EventBudget, JobEventLog, LogEntry
from jobs.health import StoreUnavailable
from jobs.limits import Limiter, QueueFull, Ticket
from jobs.queue import Outcome, SharedQueue, Taken, fleet_retry_after
from jobs.records import InvocationMetadata, InvocationResponse, Job, JobProgress
from jobs.states import JobStatus, can_move
from jobs.store import JobStore, MemoryJobStore, SharedJobStore
from runtimes import Pipeline, RunResult, RunStatus, Runtime
from runtimes import events as ev
from runtimes.cancel import RunControl
from runtimes.ids import new_id

log = structlog.get_logger("jobs")
_encoder = msgspec.json.Encoder()

TAKE_BLOCK = 5.0  # seconds an idle replica's blocking pop waits before it pops again
END_RETRY_FIRST = 0.05  # seconds before the first retry of a terminal record; doubles
END_RETRY_CAP = 2.0
END_RETRY_FOR = 300.0  # one outage this long and a finished job's end is not recorded
NOT_STARTED = "shut down before it started"
CANCEL_AGAIN = 1.0  # seconds stop() waits for a cancelled background task before cancelling it again


async def _give_back(queue: SharedQueue) -> None:
    with contextlib.suppress(Exception):  # Redis gone: requeued when this replica leaves
        await queue.give_back()


async def _cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait for its end, cancelling it again every
    CANCEL_AGAIN seconds while it still runs.

    One cancel is not enough: redis-py (with its default socket timeout) sends each
    command under `asyncio.wait_for`, which on Python 3.11 returns normally instead of
    raising when the cancel arrives in the same loop iteration as the end of the write;
    the task then carries on as if never cancelled (the drain-while-starting hang).
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=CANCEL_AGAIN)
    with contextlib.suppress(asyncio.CancelledError):
        await task


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} (unknown, or expired after its retention time)")


class JobFinished(Exception):
    """The job is already finished; its state is unchanged."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.job_id!r} is already {job.status.value}")


class JobNotFinished(Exception):
    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.job_id!r} is {job.status.value}; cancel it first")


class IdempotencyConflict(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used with a different request body")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class JobSettings(msgspec.Struct, frozen=True, kw_only=True):
    max_concurrency: int = 64
    max_queue: int = 1024
    job_ttl: float = 3600.0
    max_jobs: int = 10_000
    events_max: int = 10_000
    events_max_bytes: int | None = 4 * 1024 * 1024  # per job
    events_memory_max: int | None = 64 * 1024 * 1024  # all jobs' logs of this process


class _Active:
    """What only this process knows about a job: its live record, task, ticket and event log.

    `job` is the record the job's task updates; a store may hand out copies of it.
    """

    __slots__ = (
        "closing",
        "done",
        "events",
        "held_terminal",
        "job",
        "params",
        "raw_params",
        "task",
        "ticket",
        "timeout",
    )

    def __init__(
        self, job: Job, events: JobEventLog, params: msgspec.Struct | None, timeout: float | None
    ) -> None:
        self.job = job
        self.events = events
        self.params = params
        # A job taken from the shared queue: its parameters as JSON, decoded when it runs.
        self.raw_params: bytes = b""
        self.timeout = timeout
        self.task: asyncio.Task[None] | None = None
        self.ticket: Any = None
        self.done = asyncio.Event()
        self.held_terminal: ev.RunEvent | None = None
        # Set by cancel() on a queued job: it writes the end and closes the job itself.
        self.closing = False


class JobManager:
    def __init__(
        self,
        pipeline: Pipeline,
        runtime: Runtime,
        settings: JobSettings | None = None,
        *,
        metadata: InvocationMetadata | None = None,
        store: JobStore | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.runtime = runtime
        self.settings = settings or JobSettings()
        self.limiter = Limiter(self.settings.max_concurrency, self.settings.max_queue)
        self.store: JobStore = store or MemoryJobStore()
        self.metadata = metadata or InvocationMetadata(pipeline_name=pipeline.name)
        self._active: dict[str, _Active] = {}
        self._logs: dict[str, JobEventLog] = {}
        self.event_budget = EventBudget(self.settings.events_memory_max)
        self._sweeper: asyncio.Task[None] | None = None
        # With a store replicas share, events and cancel requests go through it too.
        self.shared: SharedJobStore | None = self.store if isinstance(self.store, SharedJobStore) else None
        self._mirrors: set[asyncio.Task[None]] = set()
        self._cancel_listener: asyncio.Task[None] | None = None
        # The shared queue (with a shared store): this replica takes jobs from it while
        # it has free slots and is not draining, and keeps the leases of what it runs.
        self.queue: SharedQueue | None = self.shared.queue if self.shared is not None else None
        self.draining = False
        self._taker: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        # Jobs being leased to this replica right now, and cancel requests that came
        # for them before they were registered as active.
        self._starting: set[str] = set()
        self._early_cancels: dict[str, str] = {}
        self._params_decoder = msgspec.json.Decoder(pipeline.input_type)
        self._last_counts: dict[JobStatus, int] = {}
        self._stopping = False  # past the grace: ends are no longer retried for long

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        interval = min(30.0, max(0.5, self.settings.job_ttl / 10))
        self._sweeper = asyncio.create_task(self._sweep(interval), name="jobs:retention")
        if self.shared is not None:
            self._cancel_listener = await self.shared.listen_cancels(self._remote_cancel)
        if self.queue is not None:
            await self.queue.renew([])  # a heartbeat before the first take
            self._keeper = asyncio.create_task(self._keep_leases(self.queue), name="jobs:leases")
            if not self.draining:  # a drain (SIGTERM) that came while we were starting: take nothing
                self._taker = asyncio.create_task(self._take_jobs(self.queue), name="jobs:take")

    def drain(self) -> None:
        """Stop taking jobs from the shared queue (SIGTERM): queued jobs run elsewhere,
        and the ones this replica runs finish here. Idempotent; a no-op without one."""
        self.draining = True
        if self._taker is not None:
            self._taker.cancel()

    async def stop(self, grace: float = 0.0) -> None:
        """Let active jobs finish for up to `grace` seconds, then cancel the rest."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.drain()
        await _cancel_and_wait(self._taker)
        if self._active and grace > 0:
            pending = [a.done.wait() for a in self._active.values()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*pending)
        self._stopping = True
        if self.queue is None:  # a shared queue keeps its jobs for the other replicas
            await self._cancel_unstarted(NOT_STARTED)
        for job_id in list(self._active):
            try:
                await self.cancel(job_id, "server shutting down", wait=0)
            except (JobNotFound, JobFinished):
                pass
            except StoreUnavailable:  # cancel() reads the store first; stop the task anyway
                active = self._active.get(job_id)
                if active is not None and active.task is not None:
                    active.job.cancel_reason = "server shutting down"
                    active.task.cancel()
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._mirrors:  # the last events (the ends) reach the shared log before exit
            await asyncio.wait(self._mirrors, timeout=5)
            for mirror in self._mirrors:  # still retrying: the store is away, and we go
                mirror.cancel()
        await _cancel_and_wait(self._keeper)
        if self.queue is not None:
            try:
                await self.queue.leave()
            except Exception as exc:  # Redis gone: other replicas requeue after the heartbeat expires
                log.warning("queue_leave_failed", error=str(exc))
        await _cancel_and_wait(self._cancel_listener)

    async def _cancel_unstarted(self, reason: str) -> None:
        """At shutdown, end every job still waiting for a slot: `canceled` with `reason`,
        in the job store and (through the runtime, when it captures) the run store.

        All their places are given up before any end is written: cancelling the running
        jobs afterwards frees slots, and a queued job granted one would start only to be
        canceled in its turn, while the ones left over would vanish with the process.
        One log line with the count.
        """
        queued = [a for a in self._active.values() if a.job.status is JobStatus.queued]
        if not queued:
            return
        for active in queued:
            active.closing = True  # _drive returns at once if its slot was granted meanwhile
            active.job.cancel_reason = reason
            active.ticket.cancel()
        record = getattr(self.runtime, "record_not_run", None)
        for active in queued:
            job = active.job
            try:
                await self._finish(job, active, JobStatus.canceled, error=f"canceled: {reason}")
            finally:
                if active.task is not None:
                    active.task.cancel()
                active.done.set()
                self._active.pop(job.job_id, None)
            if record is not None and active.params is not None:
                record(self.pipeline, active.params, run_id=job.run_id, run_name=job.run_name, error=reason)
        log.warning("queued_jobs_canceled", count=len(queued), reason=reason)

    async def _remote_cancel(self, job_id: str, reason: str) -> None:
        """A cancel request from another replica: ours to act on only if we run the job."""
        if job_id in self._starting:
            self._early_cancels[job_id] = reason
        elif job_id in self._active:
            with contextlib.suppress(JobNotFound, JobFinished, StoreUnavailable):
                await self.cancel(job_id, reason, wait=0)

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(StoreUnavailable):  # logged by the store's health; next sweep
                await self._evict()

    async def _evict(self) -> None:
        for job_id in await self.store.evict(self.settings.job_ttl, self.settings.max_jobs):
            self._logs.pop(job_id, None)

    # -- sync invocations --------------------------------------------------------------

    async def run_sync(
        self, params: msgspec.Struct, *, run_name: str | None = None, timeout: float | None = None
    ) -> RunResult:
        """Run now (or after queueing) under the shared limits; raises QueueFull.

        Cancelling the caller (a client that disconnected) cancels the run.
        """
        limiter = self.limiter
        ticket = None
        if limiter.try_acquire():  # the common case, without a Ticket
            release = limiter.release_slot
        else:
            try:
                ticket = limiter.reserve()
            except QueueFull:
                metrics.rejected_total.labels("sync").inc()
                raise
            release = ticket.release
        control = RunControl()
        try:
            if ticket is not None:
                await ticket.wait()
            try:
                result = await self.runtime.run(
                    self.pipeline, params, run_name=run_name, timeout=timeout, control=control
                )
            except asyncio.CancelledError:
                metrics.count_invocation("sync", "canceled")
                raise
            limiter.record(result.execution_time)
            # str() of a StrEnum is its value, without `.value`'s Python-level property.
            metrics.count_invocation("sync", str(result.status))
            metrics.invocation_duration.observe((), result.execution_time)
            return result
        finally:
            self._release_when_idle(control, release)

    def _release_when_idle(self, control: RunControl, release: Callable[[], None]) -> None:
        """Give the run's slot back now, or once the sync steps it left running return.

        A thread cannot be stopped: until they return they take a slot's worth of
        capacity, so admission (429, queueing, Retry-After) must see it taken."""
        if not control.abandoned:
            release()
            return
        held_from = time.perf_counter()
        log.warning("run_slot_held", threads=control.abandoned)

        def done() -> None:
            self.limiter.record(time.perf_counter() - held_from)  # Retry-After sees the hold
            release()

        control.when_idle(done)

    # -- async jobs ----------------------------------------------------------------

    async def submit(
        self,
        params: msgspec.Struct,
        *,
        run_name: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> tuple[Job, bool]:
        """Accept a job; returns (job, created). Raises QueueFull, IdempotencyConflict,
        or StoreUnavailable (then nothing was accepted and nothing runs).

        With an idempotency key seen before (and the same fingerprint) the existing job
        comes back with created=False and nothing runs again.
        """
        if idempotency_key is not None:
            existing = await self._existing(idempotency_key, fingerprint)
            if existing is not None:
                return existing, False
        if self.queue is not None:
            return await self._submit_shared(
                self.queue, params, run_name, timeout, idempotency_key, fingerprint
            )
        try:
            ticket = self.limiter.reserve()  # admission is decided here, atomically
        except QueueFull:
            metrics.rejected_total.labels("async").inc()
            raise
        try:
            return await self._accept(params, ticket, run_name, timeout, idempotency_key, fingerprint)
        except StoreUnavailable:
            ticket.cancel()
            raise

    async def _accept(
        self,
        params: msgspec.Struct,
        ticket: Any,
        run_name: str | None,
        timeout: float | None,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> tuple[Job, bool]:
        job = self._new_job(params, run_name, idempotency_key)
        job_id = job.job_id
        if idempotency_key is not None:
            # Stored before the key points at it, so a request that loses the race
            # below always finds the winner's record.
            await self.store.put(job)
            if await self.store.claim_key(idempotency_key, job_id, fingerprint) is not None:
                ticket.cancel()
                await self.store.delete(job_id)
                existing = await self._existing(idempotency_key, fingerprint)
                if existing is None:  # the winner expired in between: treat as a conflict
                    raise IdempotencyConflict(idempotency_key)
                return existing, False
        events = self._new_log()
        active = _Active(job, events, params, timeout)
        active.ticket = ticket
        self._active[job_id] = active
        self._logs[job_id] = events
        try:
            await self.store.put(job)
        except StoreUnavailable:
            self._active.pop(job_id, None)
            self._logs.pop(job_id, None)
            raise
        active.task = asyncio.create_task(self._drive(job, active), name=f"job:{job_id}")
        with contextlib.suppress(StoreUnavailable):  # accepted already; the sweeper trims later
            if await self.store.count() > self.settings.max_jobs:
                await self._evict()
        return job, True

    def _new_log(self) -> JobEventLog:
        settings = self.settings
        return JobEventLog(settings.events_max, settings.events_max_bytes, self.event_budget)

    async def _submit_shared(
        self,
        queue: SharedQueue,
        params: msgspec.Struct,
        run_name: str | None,
        timeout: float | None,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> tuple[Job, bool]:
        """Queue the job for the fleet, or run it here at once when this replica has a
        free slot and nobody is queued ahead of it (no round trip through the queue).

        Raises QueueFull when the fleet's queue holds SERVING_MAX_QUEUE jobs.
        """
        job = self._new_job(params, run_name, idempotency_key)
        ticket = None if self.draining else self.limiter.try_reserve()
        self._starting.add(job.job_id)
        try:
            try:
                placed = await queue.enqueue(
                    job,
                    _encoder.encode(params),
                    timeout,
                    fingerprint=fingerprint,
                    max_queue=self.settings.max_queue,
                    run_here=ticket is not None,
                )
            except BaseException:
                if ticket is not None:
                    ticket.release()
                raise
            if placed.outcome is Outcome.run:
                assert ticket is not None
                self._launch(job, params, timeout, ticket)
                return job, True
            if ticket is not None:
                ticket.release()  # queued behind others: the slot goes to the oldest
        finally:
            self._starting.discard(job.job_id)
            self._early_cancels.pop(job.job_id, None)
        if placed.outcome is Outcome.full:
            metrics.rejected_total.labels("async").inc()
            retry = fleet_retry_after(placed.depth, placed.recent, self.limiter.retry_after())
            raise QueueFull(retry, placed.depth, self.limiter.running)
        if placed.outcome is Outcome.bound:
            assert placed.binding is not None
            bound_id, bound_fingerprint = placed.binding
            if bound_fingerprint != fingerprint:
                raise IdempotencyConflict(idempotency_key or "")
            existing = await self.store.get(bound_id)
            if existing is None:  # the winner expired in between: treat as a conflict
                raise IdempotencyConflict(idempotency_key or "")
            return existing, False
        return job, True

    def _new_job(self, params: msgspec.Struct, run_name: str | None, idempotency_key: str | None) -> Job:
        return Job(
            job_id=new_id(),
            status=JobStatus.queued,
            pipeline_name=self.pipeline.name,
            parameters=params,
            run_id=new_id(),
            run_name=run_name,
            created_at=utc_now(),
            progress=JobProgress(steps_total=len(self.pipeline.nodes)),
            idempotency_key=idempotency_key,
        )

    def _launch(
        self, job: Job, params: msgspec.Struct | None, timeout: float | None, ticket: Ticket
    ) -> _Active:
        """Run a job leased to this replica (with a slot already held): register it, share
        its events, start its task, and honour a cancel that came while it was leased."""
        assert self.shared is not None
        events = self._new_log()
        active = _Active(job, events, params, timeout)
        active.ticket = ticket
        self._active[job.job_id] = active
        mirror = self.shared.mirror(job.job_id, events, lambda: self._share_progress(job))
        self._mirrors.add(mirror)
        mirror.add_done_callback(self._mirrors.discard)
        reason = self._early_cancels.pop(job.job_id, None)
        if reason is not None:
            job.cancel_reason = reason  # _drive sees it before running
        active.task = asyncio.create_task(self._drive(job, active), name=f"job:{job.job_id}")
        return active

    async def _take_jobs(self, queue: SharedQueue) -> None:
        """Take queued jobs while this replica has a free slot, until it drains.

        Waits for room locally first, then in a blocking pop, so an idle or full replica
        sends Redis nothing but one pop every TAKE_BLOCK seconds. On cancellation (drain)
        what was taken and not started goes back to the queue.

        It also ends by itself at the next pop once `draining` is set: a cancel can be
        lost inside the Redis client (see `_cancel_and_wait`), and this loop must not
        outlive the drain because of it.
        """
        try:
            while not self.draining:
                await self.limiter.room()
                try:
                    job_id = await queue.take(TAKE_BLOCK)
                except StoreUnavailable:  # logged once by the store's health; try again soon
                    await asyncio.sleep(1.0)
                    continue
                except Exception as exc:
                    log.warning("queue_take_failed", error=str(exc))
                    await asyncio.sleep(1.0)
                    continue
                if job_id is None:
                    continue
                if self.draining:  # taken as the drain began: give_back() below returns it
                    break
                ticket = self.limiter.try_reserve()
                if ticket is None:  # a sync run took the slot meanwhile: let another replica run it
                    try:
                        await queue.untake(job_id)
                    except Exception as exc:  # it stays taken: requeued when this replica leaves
                        log.warning("queue_untake_failed", job_id=job_id, error=str(exc))
                    continue
                await self._start_taken(queue, job_id, ticket)
        finally:
            # Shielded: stop() cancels again while this task runs (`_cancel_and_wait`).
            # Anything still taken after that is requeued by the queue's leave().
            await asyncio.shield(_give_back(queue))

    async def _start_taken(self, queue: SharedQueue, job_id: str, ticket: Ticket) -> None:
        """Lease a taken job and run it. The lease is awaited to its end even when the
        caller is cancelled meanwhile: a job leased to us must run (or be failed) here."""
        self._starting.add(job_id)
        start = asyncio.ensure_future(queue.start(job_id))
        try:
            await asyncio.shield(start)
        except asyncio.CancelledError:
            while not start.done():  # stop() cancels again while this task runs
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(start)
            if start.done() and not start.cancelled() and start.exception() is None:
                self._run_taken(start.result(), ticket)
            else:
                ticket.release()
            raise
        except Exception as exc:
            log.warning("queue_start_failed", job_id=job_id, error=str(exc))
            ticket.release()
            self._starting.discard(job_id)
            self._early_cancels.pop(job_id, None)
            return
        self._run_taken(start.result(), ticket)

    def _run_taken(self, taken: Taken | None, ticket: Ticket) -> None:
        job_id = taken.job.job_id if taken is not None else None
        try:
            if taken is None:  # canceled while queued, or given back meanwhile
                ticket.release()
                return
            log.info("job_taken", job_id=taken.job.job_id, replica=self.queue.replica if self.queue else None)
            active = self._launch(taken.job, None, taken.timeout, ticket)
            active.raw_params = taken.params
        finally:
            if job_id is not None:
                self._starting.discard(job_id)
                self._early_cancels.pop(job_id, None)

    async def _keep_leases(self, queue: SharedQueue) -> None:
        """Renew this replica's leases every lease/4, and fail other replicas' jobs whose
        lease ran out: a replica killed mid-job is noticed within about 1.25 leases."""
        interval = queue.lease / 4
        while True:
            try:
                lost = await queue.renew(list(self._active))
                for job_id in lost:
                    active = self._active.get(job_id)
                    if active is not None and not active.job.status.finished and active.task is not None:
                        log.warning("lease_lost", job_id=job_id)
                        active.job.cancel_reason = "lease lost: another replica declared this job lost"
                        active.task.cancel()
                await queue.reap()
            except StoreUnavailable:
                pass  # logged once by the store's health; leases run out fleet-wide meanwhile
            except Exception as exc:
                log.warning("lease_renewal_failed", error=str(exc))
            await asyncio.sleep(interval)

    async def _existing(self, key: str, fingerprint: str) -> Job | None:
        bound = await self.store.lookup_key(key)
        if bound is None:
            return None
        job_id, bound_fingerprint = bound
        if bound_fingerprint != fingerprint:
            raise IdempotencyConflict(key)
        return await self.store.get(job_id)

    async def _drive(self, job: Job, active: _Active) -> None:
        try:
            await active.ticket.wait()
        except asyncio.CancelledError:
            if not active.closing:
                active.done.set()
                self._active.pop(job.job_id, None)
            return
        started = time.perf_counter()
        control = RunControl()
        try:
            if active.closing or not can_move(job.status, JobStatus.running):
                return  # canceled while queued: cancel() records the end
            if job.cancel_reason is not None:  # canceled (through the queue) before it ran
                raise asyncio.CancelledError
            if active.params is None:  # taken from the shared queue
                active.params = self._params_decoder.decode(active.raw_params)
            job.status = JobStatus.running
            job.started_at = utc_now()
            await self._share_progress(job)
            result = await self.runtime.run(
                self.pipeline,
                active.params,
                run_id=job.run_id,
                run_name=job.run_name,
                timeout=active.timeout,
                on_event=lambda event: self._on_event(job, active, event),
                control=control,
            )
        except asyncio.CancelledError:
            if can_move(job.status, JobStatus.canceled):
                reason = job.cancel_reason or "canceled"
                await self._finish(job, active, JobStatus.canceled, error=f"canceled: {reason}")
        except Exception as exc:  # a runtime bug or invalid parameters: fail the job, keep serving
            log.exception("job_crashed", job_id=job.job_id)
            if can_move(job.status, JobStatus.failed):
                await self._finish(job, active, JobStatus.failed, error=f"{type(exc).__name__}: {exc}")
        else:
            self.limiter.record(result.execution_time)
            if can_move(job.status, JobStatus.completed):
                status = JobStatus.completed if result.status is RunStatus.completed else JobStatus.failed
                await self._finish(job, active, status, result=result)
        finally:
            self._release_when_idle(control, active.ticket.release)
            job.execution_time = job.execution_time or round(time.perf_counter() - started, 6)
            active.done.set()
            self._active.pop(job.job_id, None)

    async def _share_progress(self, job: Job) -> None:
        """Store a running job's progress, so a GET on another replica shows it.

        Skipped while the store is away: the run goes on, and the next write (progress,
        or the end) carries the latest state anyway."""
        if not job.status.finished:
            with contextlib.suppress(StoreUnavailable):
                await self.store.put(job)

    def _on_event(self, job: Job, active: _Active, event: ev.RunEvent) -> None:
        if active.held_terminal is not None or job.status.finished:
            return  # a straggler from a cancelled step's abandoned thread
        progress = job.progress
        if isinstance(event, ev.StepCompleted):
            progress.steps_done += 1
        elif isinstance(event, ev.Progress):
            progress.fraction = event.fraction
            progress.message = event.message
            progress.step = event.step
        if isinstance(event, (ev.RunCompleted, ev.RunFailed, ev.RunCanceled)):
            # Held back until the record says finished, so a subscriber that sees the
            # end and then reads the job never sees it still running.
            active.held_terminal = event
            return
        active.events.append(event)

    async def _finish(
        self,
        job: Job,
        active: _Active,
        status: JobStatus,
        *,
        result: RunResult | None = None,
        error: str | None = None,
    ) -> None:
        """Write the job's terminal record, then append its terminal event.

        Waits for both even when the calling task is cancelled meanwhile (shutdown
        cancelling a job that is already finishing, or a second cancel), and re-raises
        the cancellation afterwards: an end that is not recorded leaves the job running
        forever and its subscribers without an end. arq shields its `finish_failed_job`
        for the same reason; it matters once a store write is a network round trip.
        Raises CancelledError only then, or when the write itself is cancelled (the
        event loop is closing).
        """
        write = asyncio.ensure_future(self._record_end(job, active, status, result, error))
        cancelled = False
        while True:
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                if write.done():
                    raise
                cancelled = True
                continue
            break
        if cancelled:
            raise asyncio.CancelledError

    async def _record_end(
        self, job: Job, active: _Active, status: JobStatus, result: RunResult | None, error: str | None
    ) -> None:
        job.status = status
        job.finished_at = utc_now()
        outcome = status.value if result is None else result.status.value
        metrics.count_invocation("async", outcome)
        if result is not None:
            metrics.invocation_duration.observe((), result.execution_time)
        if result is not None:
            job.execution_time = result.execution_time
            job.run_status = result.status
            job.error = result.error
            job.run_name = result.run_name
            job.result = InvocationResponse(
                success=result.status is RunStatus.completed,
                outputs=result.outputs,
                execution_time=result.execution_time,
                metadata=msgspec.structs.replace(
                    self.metadata,
                    run_id=result.run_id,
                    run_name=result.run_name,
                    parameters_used=job.parameters,
                ),
                error=result.error,
            )
            try:  # stored results are served as JSON later: refuse what cannot be
                _encoder.encode(job.result)
            except (TypeError, ValueError, OverflowError) as exc:
                job.status = JobStatus.failed
                job.error = f"the pipeline's outputs cannot be encoded as JSON: {exc}"
                job.result = msgspec.structs.replace(job.result, success=False, outputs=None, error=job.error)
        else:
            job.error = error
        await self._store_end(job)
        terminal = active.held_terminal
        if terminal is None:  # canceled before the run began, or a crash
            if status is JobStatus.canceled:
                terminal = ev.RunCanceled(
                    seq=0,
                    run_id=job.run_id,
                    ts=time.time(),
                    reason=job.cancel_reason or "canceled",
                    duration=0.0,
                )
            else:
                terminal = ev.RunFailed(
                    seq=0, run_id=job.run_id, ts=time.time(), error=job.error or "failed", duration=0.0
                )
        elif isinstance(terminal, ev.RunCanceled) and job.cancel_reason:
            terminal = msgspec.structs.replace(terminal, reason=job.cancel_reason)
        active.events.append(terminal, terminal=True)

    async def _store_end(self, job: Job) -> None:
        """Write a finished job's record, retrying with backoff while the store is away.

        The end must reach the store, or every other replica shows the job running
        forever; local subscribers wait for it meanwhile (the terminal event follows
        the record). After END_RETRY_FOR seconds of one outage it gives up (logged), so
        a job's task and its subscribers do end; at shutdown (`stop`) after one retry.
        """
        delay, give_up = END_RETRY_FIRST, None
        while True:
            try:
                await self.store.put(job)
            except StoreUnavailable as exc:
                now = time.monotonic()
                if give_up is None:
                    give_up = now + END_RETRY_FOR
                    log.warning("job_end_not_stored_yet", job_id=job.job_id, status=job.status.value)
                elif now >= give_up or self._stopping:
                    log.error("job_end_not_stored", job_id=job.job_id, error=str(exc))
                    return
                await asyncio.sleep(delay)
                delay = min(END_RETRY_CAP, delay * 2)
                continue
            if give_up is not None:
                log.warning("job_end_stored", job_id=job.job_id, status=job.status.value)
            return

    # -- queries and control -------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list(
        self, status: JobStatus | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        return await self.store.list(status, limit, cursor)

    async def cancel(self, job_id: str, reason: str = "canceled by request", wait: float = 1.0) -> Job:
        """Cancel a queued job at once, or a running one at its next await.

        Waits up to `wait` seconds for the job to reach `canceled`. Raises JobNotFound,
        or JobFinished when it already ended (its state is left as it was).
        """
        job = await self.get(job_id)
        active = self._active.get(job_id)
        if active is not None:
            job = active.job  # the record its task finishes, not a copy from the store
        if job.status.finished:
            raise JobFinished(job)
        if active is None:
            if self.shared is None:
                raise JobFinished(job)
            queued = self.queue is not None and job.status is JobStatus.queued
            if queued and self.queue is not None and await self.queue.cancel_queued(job_id, reason):
                return await self.store.get(job_id) or job
            # Another replica runs it: ask, then wait for its end like a local cancel.
            await self.shared.request_cancel(job_id, reason)
            if wait > 0:
                await self.shared.wait_end(job_id, wait)
            return await self.store.get(job_id) or job
        job.cancel_reason = reason
        if job.status is JobStatus.queued:
            # The task may never start now, so it cannot clean up after itself; and it
            # must not mark the job done before its end is recorded.
            active.closing = True
            active.ticket.cancel()
            try:
                await self._finish(job, active, JobStatus.canceled, error=f"canceled: {reason}")
            finally:
                if active.task is not None:
                    active.task.cancel()
                active.done.set()
                self._active.pop(job_id, None)
            return job
        if active.task is not None:
            active.task.cancel()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await active.done.wait()
        return job

    async def wait(self, job_id: str, timeout: float) -> Job:
        """Wait until the job finishes or `timeout` passes; returns its record either way.

        The record is read again after waiting: a store that keeps copies (a networked
        one) does not show the manager's later changes on a record read before.
        """
        job = await self.get(job_id)
        active = self._active.get(job_id)
        if job.status.finished:
            return job
        if active is None:
            if self.shared is None or timeout <= 0:
                return job
            await self.shared.wait_end(job_id, timeout)  # it runs on another replica
            return await self.store.get(job_id) or job
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await active.done.wait()
        return await self.store.get(job_id) or job  # `or`: evicted meanwhile (a tiny TTL)

    async def delete(self, job_id: str) -> None:
        job = await self.get(job_id)
        if not job.status.finished:
            raise JobNotFinished(job)
        await self.store.delete(job_id)
        self._logs.pop(job_id, None)

    async def subscribe(self, job_id: str, after_seq: int = 0) -> AsyncIterator[LogEntry]:
        """Every event of the job after `after_seq`: history, then live, then the end.

        Raises JobNotFound before yielding anything.
        """
        if self.shared is None:
            events = self._logs.get(job_id)
            if events is None:
                raise JobNotFound(job_id)
            return events.read(after_seq)
        active = self._active.get(job_id)
        if active is not None:  # ours: the local log, without a round trip per event
            return active.events.read(after_seq)
        if await self.store.get(job_id) is None:
            raise JobNotFound(job_id)
        return self.shared.events(job_id).read(after_seq)

    async def status_counts(self) -> dict[JobStatus, int]:
        """Kept jobs by status, as the store counts them; for metrics. While the store is
        away, the last counts it gave (`serving_job_store_up` says they are stale)."""
        with contextlib.suppress(StoreUnavailable):
            self._last_counts = await self.store.count_by_status()
        return self._last_counts

    async def store_state(self) -> dict[str, Any]:
        """For /status: the store's kind and whether it answers now (a fresh ping for a
        networked store, bounded to a second)."""
        if self.shared is None:
            return {"kind": "memory", "up": True}
        with contextlib.suppress(StoreUnavailable):
            await self.shared.ping()
        return self.shared.health.state()

    def counts(self) -> dict[str, int]:
        return {"running": self.limiter.running, "queued": self.limiter.queued}
