"""The DAG executor: concurrency, ordering, retries, timeouts, cancellation and events.

Concurrency is shown with barriers and events that deadlock unless steps overlap, never
with sleeps; `asyncio.timeout(GUARD)` only keeps a broken build from hanging the suite.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import pytest

from runtimes import (
    DagExecutor,
    RunResult,
    RunStatus,
    RunTimeoutError,
    StepError,
    StepTimeoutError,
    available_runtimes,
    create_runtime,
    pipeline,
    step,
)
from runtimes import events as ev
from runtimes.base import Runtime, RuntimeOptions, UnknownRuntimeError
from runtimes.memory import MemoryOnlyRuntime
from runtimes.progress import progress

GUARD = 5.0  # seconds; a hang guard only, never reached by a passing test


@pytest.fixture
def executor() -> Iterator[DagExecutor]:
    ex = DagExecutor(max_threads=4)
    yield ex
    ex.shutdown()


class Recorder:
    """Collects run events; `kinds()` gives their tags in order."""

    def __init__(self) -> None:
        self.events: list[ev.RunEvent] = []

    def __call__(self, event: ev.RunEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__struct_config__.tag for e in self.events]  # type: ignore[attr-defined]

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def assert_well_formed(events: list[ev.RunEvent], run_id: str) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.run_id == run_id for e in events)
    assert isinstance(events[0], ev.RunStarted)
    assert isinstance(events[-1], ev.TERMINAL)
    assert sum(isinstance(e, ev.TERMINAL) for e in events) == 1


# -- concurrency ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_independent_async_steps_run_concurrently(executor: DagExecutor) -> None:
    a_ready, b_ready = asyncio.Event(), asyncio.Event()

    @step
    async def left() -> str:
        a_ready.set()
        await b_ready.wait()  # deadlocks unless `right` runs meanwhile
        return "L"

    @step
    async def right() -> str:
        b_ready.set()
        await a_ready.wait()
        return "R"

    @pipeline
    def both(x: int = 0):
        return {"left": left(), "right": right()}

    async with asyncio.timeout(GUARD):
        result = await executor.run(both, {"x": 0})
    assert result.status is RunStatus.completed
    assert result.outputs == {"left": "L", "right": "R"}


@pytest.mark.anyio
async def test_blocking_sync_step_does_not_block_the_loop(executor: DagExecutor) -> None:
    release = threading.Event()
    sibling_done = asyncio.Event()
    events = Recorder()

    @step
    def blocking() -> bool:
        return release.wait(GUARD)  # False only if nobody released it

    @step
    async def sibling() -> str:
        await asyncio.sleep(0)
        sibling_done.set()
        return "done"

    @pipeline
    def mixed(x: int = 0):
        return {"blocked": blocking(), "sibling": sibling()}

    async with asyncio.timeout(GUARD):
        task = asyncio.create_task(executor.run(mixed, {"x": 0}, on_event=events))
        await sibling_done.wait()  # reached while `blocking` still waits in its thread
        assert not task.done()
        assert "blocking" not in [e.step for e in events.of(ev.StepCompleted)]
        release.set()
        result = await task
    assert result.status is RunStatus.completed
    assert result.outputs == {"blocked": True, "sibling": "done"}
    assert [e.step for e in events.of(ev.StepCompleted)] == ["sibling", "blocking"]


@pytest.mark.anyio
async def test_independent_sync_steps_run_concurrently_in_threads(executor: DagExecutor) -> None:
    barrier = threading.Barrier(2, timeout=GUARD)  # breaks unless both threads wait at once

    @step
    def left() -> int:
        barrier.wait()
        return threading.get_ident()

    @step
    def right() -> int:
        barrier.wait()
        return threading.get_ident()

    @pipeline
    def both(x: int = 0):
        return {"left": left(), "right": right()}

    result = await executor.run(both, {"x": 0})
    assert result.status is RunStatus.completed, result.error
    assert result.outputs is not None and result.outputs["left"] != result.outputs["right"]


# -- ordering ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_chain_runs_in_order(executor: DagExecutor) -> None:
    order: list[str] = []

    @step
    async def fetch(x: int) -> int:
        order.append("fetch")
        await asyncio.sleep(0)
        return x + 1

    @step
    def transform(x: int) -> int:
        order.append("transform")
        return x * 10

    @step
    async def store(x: int) -> Annotated[str, "stored"]:
        order.append("store")
        return f"stored {x}"

    @pipeline
    def chain(x: int = 1):
        return store(transform(fetch(x)))

    events = Recorder()
    result = await executor.run(chain, {"x": 4}, on_event=events)
    assert result.outputs == {"stored": "stored 50"}
    assert order == ["fetch", "transform", "store"]
    assert [(k, getattr(e, "step", None)) for k, e in zip(events.kinds(), events.events, strict=True)] == [
        ("run_started", None),
        ("step_started", "fetch"),
        ("step_completed", "fetch"),
        ("step_started", "transform"),
        ("step_completed", "transform"),
        ("step_started", "store"),
        ("step_completed", "store"),
        ("run_completed", None),
    ]


@pytest.mark.anyio
async def test_downstream_waits_for_every_upstream(executor: DagExecutor) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    @step
    async def slow() -> int:
        await gate.wait()
        order.append("slow")
        return 1

    @step
    async def fast() -> int:
        order.append("fast")
        gate.set()
        return 2

    @step
    def join(a: int, b: int) -> int:
        order.append("join")
        return a + b

    @step
    async def later() -> str:
        order.append("later")
        return "later"

    @pipeline
    def diamond(x: int = 0):
        s = slow()
        j = join(s, fast())
        return {"sum": j, "later": later(after=[s, j])}

    async with asyncio.timeout(GUARD):
        result = await executor.run(diamond, {"x": 0})
    assert result.outputs == {"sum": 3, "later": "later"}
    assert order == ["fast", "slow", "join", "later"]


@pytest.mark.anyio
async def test_context_variables_reach_sync_and_async_steps(executor: DagExecutor) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("test_var", default="unset")

    @step
    def in_thread() -> str:
        return var.get()

    @step
    async def on_loop() -> str:
        return var.get()

    @pipeline
    def p(x: int = 0):
        return {"thread": in_thread(), "loop": on_loop()}

    var.set("request-1")
    result = await executor.run(p, {"x": 0})
    assert result.outputs == {"thread": "request-1", "loop": "request-1"}


# -- retries ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retries_rerun_a_failing_step(executor: DagExecutor) -> None:
    calls: list[int] = []

    @step(retries=2)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return x * 2

    @pipeline
    def p(x: int = 1):
        return flaky(x)

    events = Recorder()
    result = await executor.run(p, {"x": 21}, on_event=events)
    assert result.status is RunStatus.completed
    assert result.ok
    assert result.outputs == {"output": 42}
    assert calls == [21, 21, 21]
    assert events.kinds() == [
        "run_started",
        "step_started",
        "step_retrying",
        "step_started",
        "step_retrying",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    assert [e.attempt for e in events.of(ev.StepStarted)] == [1, 2, 3]
    assert [(e.attempt, e.error, e.delay) for e in events.of(ev.StepRetrying)] == [
        (1, "ConnectionError: attempt 1 failed", 0.0),
        (2, "ConnectionError: attempt 2 failed", 0.0),
    ]
    (completed,) = events.of(ev.StepCompleted)
    assert completed.attempts == 3


@pytest.mark.anyio
async def test_retry_delay_is_reported(executor: DagExecutor) -> None:
    calls: list[int] = []

    @step(retries=1, retry_delay=0.001)
    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("once")
        return "ok"

    @pipeline
    def p(x: int = 0):
        return flaky()

    events = Recorder()
    result = await executor.run(p, {"x": 0}, on_event=events)
    assert result.outputs == {"output": "ok"}
    assert [(e.attempt, e.delay) for e in events.of(ev.StepRetrying)] == [(1, 0.001)]


@pytest.mark.anyio
async def test_exhausted_retries_fail_the_run(executor: DagExecutor) -> None:
    calls: list[int] = []

    @step(retries=1)
    def always(x: int) -> int:
        calls.append(x)
        raise ValueError(f"nope {len(calls)}")

    @step
    def after_it(x: int) -> int:
        return x

    @pipeline
    def p(x: int = 1):
        return after_it(always(x))

    events = Recorder()
    result = await executor.run(p, {"x": 1}, run_id="run-1", on_event=events)
    assert result.status is RunStatus.failed
    assert not result.ok
    assert result.outputs is None
    assert result.error == "step 'always' failed: ValueError: nope 2"
    assert isinstance(result.exception, StepError)
    assert result.exception.step_id == "always"
    assert result.exception.attempts == 2
    assert isinstance(result.exception.cause, ValueError)
    assert calls == [1, 1]
    assert events.kinds() == [
        "run_started",
        "step_started",
        "step_retrying",
        "step_started",
        "step_failed",
        "run_failed",
    ]
    (failed,) = events.of(ev.StepFailed)
    assert (failed.step, failed.error, failed.attempts) == (
        "always",
        "step 'always' failed: ValueError: nope 2",
        2,
    )
    (run_failed,) = events.of(ev.RunFailed)
    assert run_failed.error == "step 'always' failed: ValueError: nope 2"
    assert_well_formed(events.events, "run-1")


# -- timeouts ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_step_timeout_on_an_async_step(executor: DagExecutor) -> None:
    never = asyncio.Event()
    seen: list[str] = []

    @step(timeout=0.01)
    async def stuck() -> str:
        try:
            await never.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("completed")  # pragma: no cover - never set
        return "late"

    @pipeline
    def p(x: int = 0):
        return stuck()

    events = Recorder()
    async with asyncio.timeout(GUARD):
        result = await executor.run(p, {"x": 0}, on_event=events)
    assert result.status is RunStatus.failed
    assert result.error == "step 'stuck' failed: StepTimeoutError: step timed out after 0.01s"
    assert isinstance(result.exception, StepError)
    assert isinstance(result.exception.cause, StepTimeoutError)
    assert seen == ["cancelled"]
    assert events.kinds()[-2:] == ["step_failed", "run_failed"]


@pytest.mark.anyio
async def test_step_timeout_is_retried(executor: DagExecutor) -> None:
    never = asyncio.Event()
    attempts: list[int] = []

    @step(timeout=0.01, retries=1)
    async def stuck() -> str:
        attempts.append(1)
        await never.wait()
        return "late"  # pragma: no cover

    @pipeline
    def p(x: int = 0):
        return stuck()

    events = Recorder()
    async with asyncio.timeout(GUARD):
        result = await executor.run(p, {"x": 0}, on_event=events)
    assert result.status is RunStatus.failed
    assert isinstance(result.exception.cause, StepTimeoutError)
    assert result.exception.attempts == 2
    assert len(attempts) == 2
    assert [e.error for e in events.of(ev.StepRetrying)] == ["StepTimeoutError: step timed out after 0.01s"]


@pytest.mark.anyio
async def test_step_timeout_on_a_sync_step(executor: DagExecutor) -> None:
    release = threading.Event()

    @step(timeout=0.01)
    def stuck() -> str:
        release.wait(GUARD)
        return "late"

    @pipeline
    def p(x: int = 0):
        return stuck()

    try:
        result = await executor.run(p, {"x": 0})
    finally:
        release.set()  # let the abandoned worker thread finish
    assert result.status is RunStatus.failed
    assert isinstance(result.exception.cause, StepTimeoutError)


@pytest.mark.anyio
async def test_a_step_raising_timeout_error_itself_is_not_a_step_timeout(executor: DagExecutor) -> None:
    @step(timeout=GUARD)
    async def own() -> str:
        raise TimeoutError("upstream API timed out")

    @pipeline
    def p(x: int = 0):
        return own()

    result = await executor.run(p, {"x": 0})
    assert result.error == "step 'own' failed: TimeoutError: upstream API timed out"


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True])
async def test_run_timeout(executor: DagExecutor, concurrent: bool) -> None:
    never = asyncio.Event()
    seen: list[str] = []

    @step
    async def stuck() -> str:
        try:
            await never.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "late"  # pragma: no cover

    @step
    async def quick() -> str:
        return "quick"

    @pipeline
    def single(x: int = 0):
        return stuck()

    @pipeline
    def pair(x: int = 0):
        return {"stuck": stuck(), "quick": quick()}

    events = Recorder()
    async with asyncio.timeout(GUARD):
        result = await executor.run(
            pair if concurrent else single, {"x": 0}, timeout=0.02, run_id="r", on_event=events
        )
    assert result.status is RunStatus.timed_out
    assert result.outputs is None
    assert result.error == "run timed out after 0.02s"
    assert isinstance(result.exception, RunTimeoutError)
    assert result.exception.timeout == 0.02
    assert seen == ["cancelled"]
    assert events.kinds()[-1] == "run_failed"
    assert events.of(ev.RunFailed)[0].error == "run timed out after 0.02s"
    assert "stuck" not in [e.step for e in events.of(ev.StepCompleted)]
    assert_well_formed(events.events, "r")


@pytest.mark.anyio
async def test_a_step_swallowing_the_run_deadline_leaves_the_caller_uncancelled(
    executor: DagExecutor,
) -> None:
    """The run deadline restores the caller's cancel count exactly, as asyncio.timeout does.

    A step that catches the deadline's cancellation and returns lets the run end after its
    deadline. The run still reports timed_out (README: 504 once the run exceeded its
    timeout), and the caller task must be left with cancelling() == 0: a leftover count
    turned the next deadline in that task into a bare CancelledError, and misleads every
    later `uncancel() == 0` check (DisconnectWatch in serving/invoke.py).
    """
    never = asyncio.Event()

    @step
    async def stubborn() -> str:
        try:
            await never.wait()
        except asyncio.CancelledError:
            return "late"  # swallowed: the run goes on past its deadline
        return "never"  # pragma: no cover

    @step
    async def stuck() -> str:
        await never.wait()
        return "never"  # pragma: no cover

    @pipeline
    def swallowing(x: int = 0):
        return stubborn()

    @pipeline
    def plain(x: int = 0):
        return stuck()

    async def caller() -> tuple[RunResult, int, RunResult, int]:
        task = asyncio.current_task()
        assert task is not None
        first = await executor.run(swallowing, {"x": 0}, timeout=0.01)
        after_first = task.cancelling()
        second = await executor.run(plain, {"x": 0}, timeout=0.01)
        return first, after_first, second, task.cancelling()

    async with asyncio.timeout(GUARD):
        first, after_first, second, after_second = await asyncio.create_task(caller())
    assert (first.status, first.outputs, first.error) == (
        RunStatus.timed_out,
        None,
        "run timed out after 0.01s",
    )
    assert after_first == 0
    assert second.status is RunStatus.timed_out  # not a CancelledError out of run()
    assert after_second == 0


# -- failure and cancellation -----------------------------------------------------------


@pytest.mark.anyio
async def test_first_failure_cancels_running_and_pending_steps(executor: DagExecutor) -> None:
    sibling_started = asyncio.Event()
    never = asyncio.Event()
    flags: dict[str, bool] = {"cancelled": False, "completed": False, "downstream": False}

    @step
    async def sibling() -> str:
        sibling_started.set()
        try:
            await never.wait()
            flags["completed"] = True  # pragma: no cover
        except asyncio.CancelledError:
            flags["cancelled"] = True
            raise
        return "sibling"  # pragma: no cover

    @step
    async def downstream(value: str) -> str:
        flags["downstream"] = True  # pragma: no cover
        return value  # pragma: no cover

    @step
    async def failing() -> str:
        await sibling_started.wait()  # fail only once the sibling is running
        raise KeyError("missing")

    @pipeline
    def p(x: int = 0):
        s = sibling()
        return {"failing": failing(), "downstream": downstream(s)}

    events = Recorder()
    async with asyncio.timeout(GUARD):
        result = await executor.run(p, {"x": 0}, on_event=events)
    assert result.status is RunStatus.failed
    assert result.error == "step 'failing' failed: KeyError: 'missing'"
    assert flags == {"cancelled": True, "completed": False, "downstream": False}
    started = [e.step for e in events.of(ev.StepStarted)]
    assert sorted(started) == ["failing", "sibling"]
    assert [e.step for e in events.of(ev.StepFailed)] == ["failing"]
    assert events.of(ev.StepCompleted) == []
    assert events.kinds()[-1] == "run_failed"


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True])
async def test_cancelling_the_caller_cancels_the_run(executor: DagExecutor, concurrent: bool) -> None:
    started = asyncio.Event()
    never = asyncio.Event()
    flags: dict[str, bool] = {"cancelled": False, "completed": False}

    @step
    async def working() -> str:
        started.set()
        try:
            await never.wait()
            flags["completed"] = True  # pragma: no cover
        except asyncio.CancelledError:
            flags["cancelled"] = True
            raise
        return "done"  # pragma: no cover

    @step
    async def other() -> str:
        await never.wait()
        return "other"  # pragma: no cover

    @pipeline
    def single(x: int = 0):
        return working()

    @pipeline
    def pair(x: int = 0):
        return {"working": working(), "other": other()}

    events = Recorder()
    async with asyncio.timeout(GUARD):
        task = asyncio.create_task(
            executor.run(pair if concurrent else single, {"x": 0}, run_id="c", on_event=events)
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert flags == {"cancelled": True, "completed": False}
    assert events.kinds()[-1] == "run_canceled"
    (canceled,) = events.of(ev.RunCanceled)
    assert canceled.reason == "canceled"
    assert events.of(ev.StepCompleted) == []
    assert events.of(ev.StepFailed) == []
    assert_well_formed(events.events, "c")


@pytest.mark.anyio
async def test_a_result_that_does_not_fit_its_tuple_outputs_fails_the_run(executor: DagExecutor) -> None:
    @step
    def two(x: int) -> tuple[Annotated[int, "a"], Annotated[int, "b"]]:
        return x  # not a tuple

    @pipeline
    def p(x: int = 1):
        return two(x)

    events = Recorder()
    result = await executor.run(p, {"x": 1}, on_event=events)
    assert result.status is RunStatus.failed
    assert isinstance(events.events[-1], ev.RunFailed)


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["dag", "chain"])
async def test_a_step_raising_cancelled_error_fails_the_run(executor: DagExecutor, shape: str) -> None:
    """A step's own CancelledError is its failure: it used to hang the run (dag) or
    cancel the caller (chain)."""

    @step
    async def cancels_itself() -> int:
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        return await fut

    @step
    async def other() -> int:
        return 1

    @step
    async def join(a: int, b: int) -> int:
        return a + b

    @pipeline
    def fan_in():
        return join(cancels_itself(), other())

    @pipeline
    def chain():
        return join(cancels_itself(), 1)

    events = Recorder()
    async with asyncio.timeout(GUARD):
        result = await executor.run(fan_in if shape == "dag" else chain, {}, on_event=events)
    assert result.status is RunStatus.failed
    assert result.error == "step 'cancels_itself' failed: CancelledError: "
    assert isinstance(events.events[-1], ev.RunFailed)


@pytest.mark.anyio
async def test_system_exit_and_stop_iteration_from_a_step_fail_the_run(executor: DagExecutor) -> None:
    @step
    def exits() -> int:
        raise SystemExit(3)

    @step
    async def exits_async() -> int:
        raise SystemExit(4)

    @step
    def stops() -> int:
        raise StopIteration("done")

    @step
    async def join(a: int, b: int) -> int:
        return a + b  # pragma: no cover

    @pipeline
    def exiting():
        return join(exits(), exits_async())

    @pipeline
    def stopping():
        return stops()

    async with asyncio.timeout(GUARD):
        result = await executor.run(exiting, {})
        stopped = await executor.run(stopping, {})
    assert result.status is RunStatus.failed and "SystemExit" in (result.error or "")
    assert stopped.status is RunStatus.failed and "StopIteration" in (stopped.error or "")


# -- events -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_events_are_numbered_and_stamped(executor: DagExecutor) -> None:
    @step
    def one(x: int) -> Annotated[int, "one"]:
        return x + 1

    @step
    async def two(x: int) -> Annotated[int, "two"]:
        return x + 2

    @step
    def both(a: int, b: int) -> Annotated[int, "both"]:
        return a * b

    @pipeline
    def p(x: int = 0):
        return both(one(x), two(x))

    events = Recorder()
    result = await executor.run(p, {"x": 1}, run_id="abc", run_name="nightly", on_event=events)
    assert (result.run_id, result.run_name) == ("abc", "nightly")
    assert result.outputs == {"both": 6}
    assert result.execution_time >= 0
    assert_well_formed(events.events, "abc")
    start = events.events[0]
    assert isinstance(start, ev.RunStarted)
    assert (start.pipeline, start.run_name, start.steps_total) == ("p", "nightly", 3)
    kinds = events.kinds()
    assert kinds.count("step_started") == 3
    assert kinds.count("step_completed") == 3
    assert kinds[-1] == "run_completed"
    assert [e.step for e in events.of(ev.StepCompleted)][-1] == "both"
    decoded = [msgspec.json.decode(msgspec.json.encode(e), type=ev.Event) for e in events.events]
    assert decoded == events.events


@pytest.mark.anyio
async def test_default_run_id_and_name(executor: DagExecutor) -> None:
    @step
    def one() -> int:
        return 1

    @pipeline
    def nightly(x: int = 0):
        return one()

    first = await executor.run(nightly, {"x": 0})
    second = await executor.run(nightly, {"x": 0})
    assert re.fullmatch(r"[0-9a-f]{32}", first.run_id)
    assert first.run_id != second.run_id
    assert re.fullmatch(r"nightly-\d{8}T\d{6}\.\d{6}Z", first.run_name)


@pytest.mark.anyio
async def test_no_callback_no_events(executor: DagExecutor) -> None:
    @step
    def boom() -> int:
        raise OSError("disk")

    @pipeline
    def p(x: int = 0):
        return boom()

    result = await executor.run(p, {"x": 0})
    assert result.status is RunStatus.failed
    assert result.error == "step 'boom' failed: OSError: disk"


@pytest.mark.anyio
async def test_nothing_is_emitted_after_the_terminal_event(executor: DagExecutor) -> None:
    """A sync step that timed out keeps running in its thread and may still report."""
    release, reported = threading.Event(), threading.Event()

    @step(timeout=0.01)
    def abandoned() -> int:
        release.wait(GUARD)
        progress(0.5, "too late")
        reported.set()
        return 1

    @pipeline
    def slow():
        return abandoned()

    events = Recorder()
    result = await executor.run(slow, {}, run_id="late", on_event=events)
    assert result.status is RunStatus.failed
    release.set()  # the abandoned thread now reports progress
    assert await asyncio.to_thread(reported.wait, GUARD)
    # The report reached the loop with call_soon_threadsafe before `reported` was set,
    # so before the to_thread result: it has been handled by now, and dropped.
    assert isinstance(events.events[-1], ev.RunFailed)
    assert_well_formed(events.events, "late")


def test_progress_and_chunk_events_decode_with_the_event_union() -> None:
    for event in (
        ev.Progress(seq=1, run_id="r", ts=0.0, step="s", fraction=0.5, message="m"),
        ev.Chunk(seq=2, run_id="r", ts=0.0, step="s", index=0, data="x"),
    ):
        assert msgspec.json.decode(msgspec.json.encode(event), type=ev.Event) == event


# -- the memory runtime -----------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_runtime_runs_with_parsed_parameters() -> None:
    @step
    def greet(name: str, times: int) -> Annotated[str, "greeting"]:
        return " ".join([f"hi {name}"] * times)

    @pipeline
    def hello(name: str = "World", times: int = 1):
        return greet(name, times)

    runtime = create_runtime("memory", RuntimeOptions(max_threads=2))
    assert isinstance(runtime, MemoryOnlyRuntime)
    assert isinstance(runtime, Runtime)
    assert runtime.executor.max_threads == 2
    await runtime.start()
    try:
        events = Recorder()
        result = await runtime.run(
            hello, hello.parse_parameters({"name": "Ada", "times": "2"}), run_id="m", on_event=events
        )
        defaults = await runtime.run(hello, hello.parse_parameters({}))
    finally:
        await runtime.stop()
    assert result.outputs == {"greeting": "hi Ada hi Ada"}
    assert defaults.outputs == {"greeting": "hi World"}
    assert_well_formed(events.events, "m")


@pytest.mark.anyio
async def test_memory_runtime_timeout_and_failure() -> None:
    never = asyncio.Event()

    @step
    async def stuck() -> str:
        await never.wait()
        return "late"  # pragma: no cover

    @pipeline
    def slow(x: int = 0):
        return stuck()

    runtime = MemoryOnlyRuntime()
    await runtime.start()
    try:
        async with asyncio.timeout(GUARD):
            result = await runtime.run(slow, slow.parse_parameters({}), timeout=0.01)
    finally:
        await runtime.stop()
    assert result.status is RunStatus.timed_out


def test_runtime_registry() -> None:
    assert "memory" in available_runtimes()
    assert isinstance(create_runtime("memory"), MemoryOnlyRuntime)
    with pytest.raises(UnknownRuntimeError, match=r"^unknown runtime 'nope' \(available: .*memory.*\)$"):
        create_runtime("nope")
    assert issubclass(UnknownRuntimeError, LookupError)
