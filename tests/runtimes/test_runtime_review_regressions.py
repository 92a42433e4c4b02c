"""Regressions from the code review of the executor; each test failed before its fix."""

from __future__ import annotations

import asyncio
import threading
from typing import NotRequired, TypedDict

import msgspec
import pytest

from runtimes import DagExecutor, RunStatus, pipeline, step
from runtimes import events as ev
from runtimes.progress import progress


class Item(msgspec.Struct):
    n: int


class TD(TypedDict):
    a: int
    b: NotRequired[str]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.mark.anyio
@pytest.mark.parametrize("p", [fan_in, chain], ids=["dag", "chain"])
async def test_a_step_raising_cancelled_error_fails_the_run(p: object) -> None:
    events: list[ev.RunEvent] = []
    async with asyncio.timeout(5):  # it used to hang (dag) or cancel the caller (chain)
        result = await DagExecutor().run(p, {}, on_event=events.append)  # type: ignore[arg-type]
    assert result.status is RunStatus.failed
    assert result.error == "step 'cancels_itself' failed: CancelledError: "
    assert isinstance(events[-1], ev.RunFailed)


release = threading.Event()


@step(timeout=0.05)
def abandoned() -> int:
    release.wait(5)
    progress(0.5, "too late")
    return 1


@pipeline
def slow():
    return abandoned()


@pytest.mark.anyio
async def test_nothing_is_emitted_after_the_terminal_event() -> None:
    events: list[ev.RunEvent] = []
    executor = DagExecutor()
    result = await executor.run(slow, {}, on_event=events.append)
    assert result.status is RunStatus.failed
    release.set()  # the abandoned thread now reports progress
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert isinstance(events[-1], ev.RunFailed)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


@step
def exits() -> int:
    raise SystemExit(3)


@step
async def exits_async() -> int:
    raise SystemExit(4)


@step
def stops() -> int:
    raise StopIteration("done")


@pipeline
def exiting():
    return join(exits(), exits_async())


@pipeline
def stopping():
    return stops()


@pytest.mark.anyio
async def test_system_exit_and_stop_iteration_from_a_step_fail_the_run() -> None:
    async with asyncio.timeout(5):
        result = await DagExecutor().run(exiting, {})
        stopped = await DagExecutor().run(stopping, {})
    assert result.status is RunStatus.failed and "SystemExit" in (result.error or "")
    assert stopped.status is RunStatus.failed and "StopIteration" in (stopped.error or "")


def test_progress_and_chunk_events_decode_with_the_event_union() -> None:
    import msgspec

    for event in (
        ev.Progress(seq=1, run_id="r", ts=0.0, step="s", fraction=0.5, message="m"),
        ev.Chunk(seq=2, run_id="r", ts=0.0, step="s", index=0, data="x"),
    ):
        assert msgspec.json.decode(msgspec.json.encode(event), type=ev.Event) == event


def test_namedtuple_of_handles_is_rebuilt_and_hidden_handles_are_refused() -> None:
    import collections
    import dataclasses

    from runtimes import PipelineDefinitionError

    Point = collections.namedtuple("Point", "x y")

    @step
    def use_point(p: Point) -> int:
        return p.x + p.y

    @pipeline
    def nt():
        return use_point(Point(other(), 2))

    assert nt() == 3

    @dataclasses.dataclass
    class Cfg:
        value: object

    with pytest.raises(PipelineDefinitionError, match="inside a Cfg is not resolved"):

        @pipeline
        def dc():
            return use_point(Cfg(other()))


def test_set_of_unhashable_items_and_not_required_fields_at_load() -> None:
    from runtimes import PipelineDefinitionError

    @step
    def count(items: object) -> int:
        return len(items)  # type: ignore[arg-type]

    with pytest.raises(PipelineDefinitionError, match="set items must be hashable"):

        @pipeline
        def p(items: set[Item] = set()):
            return count(items)

    @pipeline
    def q(td: TD = {"a": 1}):
        return count(td)

    assert q(td={"a": 2, "b": "x"}) == 2
