"""The DAG executor: runs a traced pipeline's steps as soon as their inputs are ready.

Async steps are awaited on the event loop; sync steps run in a bounded thread pool so a
blocking step never stalls other requests. The first step to fail (after its retries)
fails the run and cancels every other pending or running step.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import structlog

from runtimes import events as ev
from runtimes.cache import StepCache
from runtimes.cancel import RunControl, current_run
from runtimes.errors import RunTimeoutError, StepError, StepTimeoutError
from runtimes.graph import StepNode
from runtimes.ids import new_id
from runtimes.pipeline import Pipeline
from runtimes.progress import StepScope, current_step
from runtimes.threads import StepThreads

log = structlog.get_logger("runtimes.executor")

EventCallback = Callable[[ev.RunEvent], None]


class RunStatus(enum.StrEnum):
    """How a run that returned ended; a canceled run returns nothing (CancelledError)."""

    completed = "completed"
    failed = "failed"
    timed_out = "timed_out"


class RunResult(msgspec.Struct):
    """What one run produced; `error` is safe for clients, `exception` is for Python callers.

    A Struct, not a class with `__init__`: one is made per run on the request path, and
    msgspec's constructor runs in C. Tracked by the GC like any object: `exception`'s
    traceback holds frames, and a caller's frame may hold this result.
    """

    run_id: str
    run_name: str
    status: RunStatus
    outputs: dict[str, Any] | None
    execution_time: float
    error: str | None = None
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.completed


_stamp_cache: list[Any] = [-1, ""]


def default_run_name(pipeline: str) -> str:
    """`<pipeline>-<UTC timestamp>`; the per-second prefix is cached (strftime is slow)."""
    now = time.time()
    second = int(now)
    if _stamp_cache[0] != second:
        _stamp_cache[0] = second
        _stamp_cache[1] = datetime.fromtimestamp(second, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{pipeline}-{_stamp_cache[1]}.{int((now - second) * 1e6):06d}Z"


class _Emitter:
    """Stamps events with the run id and the next `seq`."""

    __slots__ = ("callback", "closed", "run_id", "seq")

    def __init__(self, run_id: str, callback: EventCallback) -> None:
        self.run_id = run_id
        self.seq = 0
        self.callback = callback
        self.closed = False

    def __call__(self, cls: type[ev.RunEvent], **fields: Any) -> None:
        # After the terminal event nothing more is sent: a step thread abandoned by a
        # timeout or a cancel may still report progress, but the run is over.
        if self.closed:
            return
        if cls in ev.TERMINAL:
            self.closed = True
        self.seq += 1
        self.callback(cls(seq=self.seq, run_id=self.run_id, ts=time.time(), **fields))


class _RunContext(msgspec.Struct):
    """What every step of one run needs to report to: the event stream, the observer and
    the run it keeps (`observed`), and the loop that step threads send events back to."""

    run_id: str
    emit: _Emitter | None
    observer: RunObserver | None
    observed: Any
    loop: asyncio.AbstractEventLoop
    loop_thread: int


class _Deadline:
    """A run's deadline: cancels the run's task when its time comes, and remembers that
    it did, so the cancellation it caused is told apart from anybody else's."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


class RunObserver(Protocol):
    """Sees each step's inputs, output and captured logs; the Realtime runtime's capture hook.

    One observer serves every run of a pipeline: what belongs to one run is `run`, the
    object passed to `DagExecutor.run` as `observed`, handed back on every call. Called
    on the event loop thread; must not raise or block. `step_started` is called before
    the step runs (a step may change its inputs in place), and what it returns comes
    back to `step_completed` or `step_ended` as `taken`, once.
    """

    capture_logs: bool
    capture_artifacts: bool

    def step_started(self, run: Any, node: StepNode, args: list[Any], kwargs: dict[str, Any]) -> Any: ...

    def step_completed(
        self, run: Any, taken: Any, scope: StepScope, value: Any, attempts: int, duration: float
    ) -> None:
        """The common case, positional: each argument has a type of its own but `value`."""
        ...

    def step_ended(
        self,
        run: Any,
        taken: Any,
        scope: StepScope | None,
        *,
        status: str,
        value: Any,
        error: str | None,
        attempts: int,
        duration: float,
    ) -> None:
        """Every other end (failed, canceled, cached); keyword-only, because `value` and
        `error` may both be strings and a call in the wrong order would still run."""
        ...


class DagExecutor:
    """Runs pipelines; owns the worker threads that sync steps run in."""

    def __init__(self, max_threads: int = 32, cache: StepCache | None = None) -> None:
        self.max_threads = max_threads
        self.cache = cache  # used for steps marked @step(cache=True); None disables caching
        self._threads: StepThreads | None = None

    @property
    def threads(self) -> StepThreads:
        if self._threads is None:
            self._threads = StepThreads(self.max_threads)
        return self._threads

    def thread_stats(self) -> dict[str, int]:
        """Busy and abandoned step threads, for /status and /metrics."""
        if self._threads is None:
            return {"max": self.max_threads, "threads": 0, "busy": 0, "abandoned": 0, "abandoned_total": 0}
        return self._threads.stats()

    def shutdown(self) -> None:
        """Stop the worker threads; steps still running in them finish on their own."""
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None

    async def run(
        self,
        pipeline: Pipeline,
        kwargs: dict[str, Any],
        *,
        run_id: str | None = None,
        run_name: str | None = None,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
        observer: RunObserver | None = None,
        observed: Any = None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Run the pipeline with already-validated parameters.

        Waits for the whole run. Step failures and a timeout come back as a RunResult
        with an error; only cancellation of the caller propagates (as CancelledError,
        after a `run_canceled` event and the cancellation of every running step).
        A run that ended that way may leave sync steps running in their threads:
        `control` (pass one to see it) counts them and marks the run cancelled for
        `cancelled()`, which its steps see through the `current_run` contextvar.
        `observer` sees every step of the run, and `observed` is what it keeps of this
        run (see RunObserver).
        """
        run_id = run_id or new_id()
        run_name = run_name or default_run_name(pipeline.name)
        emit = _Emitter(run_id, on_event) if on_event is not None else None
        ctx = None
        if emit is not None or observer is not None:
            ctx = _RunContext(
                run_id, emit, observer, observed, asyncio.get_running_loop(), threading.get_ident()
            )
        if control is None:
            control = RunControl()
        started = time.perf_counter()
        if emit:
            emit(ev.RunStarted, pipeline=pipeline.name, run_name=run_name, steps_total=len(pipeline.nodes))
        token = current_run.set(control)
        try:
            if timeout is None:
                results = await self._execute(pipeline, kwargs, ctx)
            else:
                results = await self._execute_by(pipeline, kwargs, ctx, timeout)
        except asyncio.CancelledError:
            control.cancelled = True
            if emit:
                emit(ev.RunCanceled, reason="canceled", duration=time.perf_counter() - started)
            raise
        except (StepError, RunTimeoutError) as exc:
            control.cancelled = True
            elapsed = time.perf_counter() - started
            if emit:
                emit(ev.RunFailed, error=str(exc), duration=elapsed)
            status = RunStatus.timed_out if isinstance(exc, RunTimeoutError) else RunStatus.failed
            return RunResult(run_id, run_name, status, None, elapsed, str(exc), exc)
        finally:
            current_run.reset(token)
        elapsed = time.perf_counter() - started
        outputs = {key: resolve(kwargs, results) for key, resolve in pipeline.output_resolvers}
        if (bad := pipeline.check_outputs(outputs)) is not None:
            if emit:
                emit(ev.RunFailed, error=str(bad), duration=elapsed)
            return RunResult(run_id, run_name, RunStatus.failed, None, elapsed, str(bad), bad)
        if emit:
            emit(ev.RunCompleted, duration=elapsed)
        return RunResult(run_id, run_name, RunStatus.completed, outputs, elapsed)

    async def _execute_by(
        self, pipeline: Pipeline, kwargs: dict[str, Any], ctx: _RunContext | None, timeout: float
    ) -> dict[str, Any]:
        """`_execute` with a deadline; raises RunTimeoutError once it has passed.

        What `asyncio.timeout` does, in one frame instead of its context manager's five
        calls per run (every /invoke has a deadline): the deadline cancels the task, and
        the task's cancel count is restored exactly (a step that swallows the
        cancellation must not leave `cancelling() == 1`, which the `uncancel()` checks
        in DisconnectWatch rely on); only a cancellation of our own, with no other
        cancel pending, becomes the timeout. A run that ends after its deadline (a step
        swallowed the cancellation) is still timed out: the caller was promised an
        answer within `timeout`.
        """
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a run with a timeout must run in a task")
        loop = asyncio.get_running_loop()
        deadline = _Deadline(task)
        cancelling = task.cancelling()
        handle = loop.call_at(loop.time() + timeout, deadline.expire)
        try:
            results = await self._execute(pipeline, kwargs, ctx)
        except BaseException as exc:
            handle.cancel()
            if deadline.expired and task.uncancel() <= cancelling and isinstance(exc, asyncio.CancelledError):
                raise RunTimeoutError(timeout) from None
            raise
        handle.cancel()
        if deadline.expired:
            task.uncancel()
            raise RunTimeoutError(timeout)
        return results

    async def _execute(
        self, pipeline: Pipeline, kwargs: dict[str, Any], ctx: _RunContext | None
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        nodes = pipeline.nodes
        if _is_chain(nodes):
            # Nothing can run concurrently: run in this task and skip task creation.
            for node in nodes:
                results[node.id] = await self._run_step(node, kwargs, results, ctx)
            return results
        return await self._execute_concurrently(nodes, kwargs, results, ctx)

    async def _execute_concurrently(
        self,
        nodes: list[StepNode],
        kwargs: dict[str, Any],
        results: dict[str, Any],
        ctx: _RunContext | None,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        done: dict[str, asyncio.Future[None]] = {n.id: loop.create_future() for n in nodes}
        first_error: list[BaseException] = []

        async def run_node(node: StepNode) -> None:
            for up in node.upstream:
                await done[up]
            try:
                results[node.id] = await self._run_step(node, kwargs, results, ctx)
            except StepError as exc:
                if not first_error:
                    first_error.append(exc)
                raise
            done[node.id].set_result(None)

        tasks = [asyncio.create_task(run_node(n), name=f"step:{n.id}") for n in nodes]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            pending = [t for t in tasks if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
            for t in tasks:  # mark every outcome as retrieved
                if not t.cancelled():
                    t.exception()
        if first_error:
            raise first_error[0]
        for t in tasks:
            if not t.cancelled() and (exc := t.exception()) is not None:
                raise exc
        return results

    async def _run_step(
        self,
        node: StepNode,
        kwargs: dict[str, Any],
        results: dict[str, Any],
        ctx: _RunContext | None,
    ) -> Any:
        step = node.step
        args = [resolve(kwargs, results) for resolve in node.arg_resolvers]
        kw = {k: resolve(kwargs, results) for k, resolve in node.kwarg_resolvers} if node.kwargs else {}
        if ctx is None:
            if not step.cache:
                return await self._attempts(node, step, args, kw, None, None)
            emit = observer = observed = taken = None
        else:
            emit = ctx.emit
            observer = ctx.observer
            observed = ctx.observed
            taken = observer.step_started(observed, node, args, kw) if observer is not None else None
        cache_key = None
        if step.cache and self.cache is not None:
            cache_key = self.cache.key(step, args, kw)
            hit, value = self.cache.get(cache_key)
            if hit:
                if emit:
                    emit(ev.StepStarted, step=node.id, attempt=0)
                    emit(ev.StepCompleted, step=node.id, duration=0.0, attempts=0)
                if observer is not None:
                    observer.step_ended(
                        observed,
                        taken,
                        None,
                        status="cached",
                        value=value,
                        error=None,
                        attempts=0,
                        duration=0.0,
                    )
                return value
        scope = None
        if ctx is not None:
            scope = StepScope(
                node.id,
                ctx.run_id,
                emit,
                ctx.loop,
                ctx.loop_thread,
                [] if observer is not None and observer.capture_logs else None,
                [] if observer is not None and observer.capture_artifacts else None,
            )
        started = time.perf_counter()
        try:
            value = await self._attempts(node, step, args, kw, emit, scope)
        except StepError as exc:
            if observer is not None:
                observer.step_ended(
                    observed,
                    taken,
                    scope,
                    status="failed",
                    value=None,
                    error=str(exc),
                    attempts=exc.attempts,
                    duration=time.perf_counter() - started,
                )
            raise
        except asyncio.CancelledError:
            if observer is not None:
                observer.step_ended(
                    observed,
                    taken,
                    scope,
                    status="canceled",
                    value=None,
                    error=None,
                    attempts=scope.attempt if scope is not None else 1,
                    duration=time.perf_counter() - started,
                )
            raise
        if cache_key is not None:
            self.cache.put(cache_key, value)  # type: ignore[union-attr]
        if observer is not None and scope is not None:  # an observer always has its scope
            observer.step_completed(
                observed, taken, scope, value, scope.attempt, time.perf_counter() - started
            )
        return value

    async def _attempts(
        self,
        node: StepNode,
        step: Any,
        args: list[Any],
        kw: dict[str, Any],
        emit: _Emitter | None,
        scope: StepScope | None,
    ) -> Any:
        """Run the step, retrying as configured; raises StepError after the last attempt."""
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            if emit:
                emit(ev.StepStarted, step=node.id, attempt=attempt)
            if scope is not None:
                scope.attempt = attempt
            token = current_step.set(scope) if scope else None
            failure: BaseException | None = None
            try:
                if step.is_async and step.timeout is None:
                    value = await step.fn(*args, **kw)  # the common case, without two more frames
                else:
                    value = await self._attempt(step, args, kw, scope)
                size = step.tuple_size
                if size and not (isinstance(value, (tuple, list)) and len(value) == size):
                    names = ", ".join(o.name for o in step.outputs)
                    raise TypeError(
                        f"returned {type(value).__name__}, not a tuple of its {size} outputs ({names})"
                    )
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # the run, or whoever awaits it, is being cancelled
                failure = exc  # the step cancelled something of its own: a failure, not a cancel
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                failure = exc  # a step's SystemExit must fail the run, not stop the daemon
            finally:
                if token is not None:
                    current_step.reset(token)
            if failure is not None:
                if attempt <= step.retries:
                    error = f"{type(failure).__name__}: {failure}"
                    log.warning("step_retrying", step=node.id, attempt=attempt, error=error)
                    if emit:
                        emit(
                            ev.StepRetrying,
                            step=node.id,
                            attempt=attempt,
                            error=error,
                            delay=step.retry_delay,
                        )
                    if step.retry_delay:
                        await asyncio.sleep(step.retry_delay)
                    continue
                step_error = StepError(node.id, failure, attempts=attempt)
                log.error("step_failed", step=node.id, attempts=attempt, exc_info=failure)
                if emit:
                    emit(
                        ev.StepFailed,
                        step=node.id,
                        error=str(step_error),
                        duration=time.perf_counter() - started,
                        attempts=attempt,
                    )
                raise step_error from failure
            if emit:
                emit(ev.StepCompleted, step=node.id, duration=time.perf_counter() - started, attempts=attempt)
            return value

    async def _attempt(self, step: Any, args: list[Any], kw: dict[str, Any], scope: StepScope | None) -> Any:
        call = self._call(step, args, kw, scope)
        try:
            if step.timeout is None:
                return await call
            try:
                async with asyncio.timeout(step.timeout) as deadline:
                    return await call
            except TimeoutError:
                if deadline.expired():
                    raise StepTimeoutError(f"step timed out after {step.timeout:g}s") from None
                raise
        finally:
            if isinstance(call, asyncio.Future) and call.cancelled():
                # A sync step's thread we stopped waiting for: it may still be running.
                self.threads.abandon(call, current_run.get())

    def _call(self, step: Any, args: list[Any], kw: dict[str, Any], scope: StepScope | None) -> Any:
        if step.is_async:
            return step.fn(*args, **kw)
        if step.is_async_gen:
            return _collect_async(step.fn(*args, **kw), scope)
        if step.is_gen:
            stop = threading.Event()
            fut = self.threads.submit(_collect_sync, (step.fn, args, kw, scope, stop), {})
            fut.add_done_callback(lambda f: stop.set() if f.cancelled() else None)
            return fut
        return self.threads.submit(step.fn, args, kw)


def _joined(items: list[Any]) -> Any:
    """A generator step's output: the joined string for str items, else the list."""
    if items and all(isinstance(i, str) for i in items):
        return "".join(items)
    return items


async def _collect_async(agen: Any, scope: StepScope | None) -> Any:
    items: list[Any] = []
    async for item in agen:
        if scope is not None:
            scope.send(ev.Chunk, step=scope.step_id, index=len(items), data=item)
        items.append(item)
    return _joined(items)


def _collect_sync(
    fn: Any, args: list[Any], kw: dict[str, Any], scope: StepScope | None, stop: threading.Event
) -> Any:
    """Iterate a sync generator in its worker thread; stops between items once cancelled."""
    items: list[Any] = []
    gen = fn(*args, **kw)
    try:
        for item in gen:
            if stop.is_set():
                break
            if scope is not None:
                scope.send(ev.Chunk, step=scope.step_id, index=len(items), data=item)
            items.append(item)
    finally:
        gen.close()
    return _joined(items)


def _is_chain(nodes: list[StepNode]) -> bool:
    """True when each step needs the previous one: no two steps could overlap."""
    if len(nodes) == 1:
        return True
    return all(n.upstream == (nodes[i - 1].id,) for i, n in enumerate(nodes) if i) and not nodes[0].upstream
