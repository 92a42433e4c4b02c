"""The worker threads that sync steps run in.

A leaner stand-in for `loop.run_in_executor(ThreadPoolExecutor)`: a job is one tuple on
a SimpleQueue and its result comes back with one `call_soon_threadsafe`, with no
concurrent.futures.Future chained to an asyncio one. On the hot path of a one-step
pipeline that hop is the largest single cost, and this halves it (see bench/README.md).
Threads start lazily up to `max_threads`; a bounded pool keeps a flood of blocking
steps from exhausting the process.

A call whose run has ended (timed out, canceled) while it still runs is *abandoned*:
Python cannot stop it, so it is counted (`busy`, `abandoned`, `abandoned_total`), its
run's `RunControl` is told when it returns (the run's slot is held until then), and it
no longer counts against `max_threads`: a replacement thread may start, so the runs
admitted meanwhile are not left waiting for a thread nobody can see. The slots the
abandoned runs hold bound how many such threads there can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

from runtimes.cancel import RunControl

_STOP = None


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _settle_error(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class _Slot:
    """What one worker thread is doing: the call's future while it runs, and the run
    that abandoned it (if one did). Guarded by `StepThreads._calls`."""

    __slots__ = ("fut", "owner")

    def __init__(self) -> None:
        self.fut: asyncio.Future[Any] | None = None
        self.owner: RunControl | None = None


class StepThreads:
    """Runs sync callables in up to `max_threads` threads, one awaitable per call.

    Cancelling the returned future before the call starts skips it; once started the
    call runs to its end (Python cannot stop a thread) and its result is dropped.
    """

    def __init__(self, max_threads: int, name: str = "serving-step") -> None:
        self.max_threads = max_threads
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self._calls = threading.Lock()  # the slots, and the abandoned counts
        self._closed = False
        self._spawned = 0
        self.abandoned = 0  # calls running now whose run has ended
        self.abandoned_total = 0

    def submit(self, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        if self._closed:
            raise RuntimeError("step threads are shut down")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._idle.acquire(blocking=False):
            self._maybe_spawn()
        self._queue.put((loop, fut, contextvars.copy_context(), fn, args, kwargs))
        return fut

    def _maybe_spawn(self) -> None:
        with self._lock:
            if len(self._threads) >= self.max_threads + self.abandoned:
                return
            slot = _Slot()
            thread = threading.Thread(
                target=self._work, args=(slot,), name=f"{self.name}-{self._spawned}", daemon=True
            )
            self._spawned += 1
            self._threads.append(thread)
            with self._calls:
                self._slots.append(slot)
            thread.start()

    def abandon(self, fut: asyncio.Future[Any], owner: RunControl | None) -> bool:
        """The run awaiting `fut` has ended without it: if the call is running, count it
        abandoned and tell `owner` when it returns. False if it never started (it is
        skipped) or has already returned."""
        with self._calls:
            for slot in self._slots:
                if slot.fut is fut:
                    if slot.owner is None:
                        slot.owner = owner or RunControl()
                        slot.owner.abandoned += 1
                        self.abandoned += 1
                        self.abandoned_total += 1
                    return True
        return False

    @property
    def busy(self) -> int:
        """Threads running a call now, abandoned ones included."""
        return sum(1 for slot in self._slots if slot.fut is not None)

    def stats(self) -> dict[str, int]:
        return {
            "max": self.max_threads,
            "threads": len(self._threads),
            "busy": self.busy,
            "abandoned": self.abandoned,
            "abandoned_total": self.abandoned_total,
        }

    def _work(self, slot: _Slot) -> None:
        get, idle, calls = self._queue.get, self._idle, self._calls
        while True:
            item = get()
            if item is _STOP:
                return
            loop, fut, ctx, fn, args, kwargs = item
            del item
            with calls:
                skip = fut.cancelled()
                if not skip:
                    slot.fut = fut
            if skip:
                idle.release()
                continue
            try:
                result = ctx.run(fn, *args, **kwargs)
            except BaseException as exc:
                if isinstance(exc, StopIteration):  # a future cannot carry StopIteration
                    error: BaseException = RuntimeError(f"step raised StopIteration: {exc}")
                    error.__cause__ = exc
                else:
                    error = exc  # SystemExit and friends become the step's failure, not ours
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_settle_error, fut, error)
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, fut, result)
            with calls:
                owner, slot.owner, slot.fut = slot.owner, None, None
                if owner is not None:
                    self.abandoned -= 1
            if owner is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(owner.thread_returned)
                if self._retire(slot):
                    return  # a replacement took this thread's place meanwhile
            del loop, fut, ctx, fn, args, kwargs, owner
            idle.release()  # only now is this thread free for the next call

    def _retire(self, slot: _Slot) -> bool:
        """Leave the pool if it holds more threads than `max_threads` plus the abandoned."""
        with self._lock:
            if len(self._threads) <= self.max_threads + self.abandoned:
                return False
            with self._calls:
                index = self._slots.index(slot)
                del self._slots[index]
            del self._threads[index]
            return True

    @property
    def size(self) -> int:
        return len(self._threads)

    def shutdown(self) -> None:
        """Ask every thread to exit once its current call ends; does not wait for them."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
