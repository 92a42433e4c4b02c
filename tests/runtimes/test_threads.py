"""The step-thread pool with abandoned calls: counted, replaced, and given back."""

from __future__ import annotations

import asyncio
import threading

import pytest
from polling import GUARD, wait_until_async

from runtimes.cancel import RunControl
from runtimes.threads import StepThreads

pytestmark = pytest.mark.anyio


async def test_an_abandoned_call_is_replaced_and_reported_when_it_returns() -> None:
    threads = StepThreads(1)
    started, release = threading.Event(), threading.Event()
    try:
        first = threads.submit(lambda: (started.set(), release.wait(GUARD)), (), {})
        await asyncio.to_thread(started.wait, GUARD)
        first.cancel()  # the run stopped waiting: its thread goes on
        control = RunControl()
        assert threads.abandon(first, control)
        assert (threads.busy, threads.abandoned, threads.abandoned_total) == (1, 1, 1)
        assert control.abandoned == 1
        idle = asyncio.Event()
        control.when_idle(idle.set)

        # A replacement thread runs the next call although the only thread is busy.
        assert await asyncio.wait_for(threads.submit(lambda: "next", (), {}), GUARD) == "next"
        assert threads.size == 2

        release.set()
        await asyncio.wait_for(idle.wait(), GUARD)
        assert control.abandoned == 0
        assert threads.abandoned == 0 and threads.abandoned_total == 1
        await wait_until_async(lambda: threads.size == 1, "the pool to shrink back", timeout=GUARD)
        assert await asyncio.wait_for(threads.submit(lambda: "again", (), {}), GUARD) == "again"
    finally:
        release.set()
        threads.shutdown()


async def test_a_call_cancelled_before_it_started_is_not_abandoned() -> None:
    threads = StepThreads(1)
    release = threading.Event()
    try:
        blocker = threads.submit(release.wait, (GUARD,), {})
        queued = threads.submit(lambda: "never", (), {})
        queued.cancel()
        assert not threads.abandon(queued, RunControl())
        release.set()
        assert await asyncio.wait_for(blocker, GUARD) is True
        assert threads.abandoned_total == 0 and threads.busy == 0
        assert await asyncio.wait_for(threads.submit(lambda: "ok", (), {}), GUARD) == "ok"
    finally:
        release.set()
        threads.shutdown()
