"""The worker threads that sync steps run in.

A leaner stand-in for `loop.run_in_executor(ThreadPoolExecutor)`: a job is one tuple on
a SimpleQueue and its result comes back with one `call_soon_threadsafe`, with no
concurrent.futures.Future chained to an asyncio one. On the hot path of a one-step
pipeline that hop is the largest single cost, and this halves it (see bench/README.md).
Threads start lazily up to `max_threads`; a bounded pool keeps a flood of blocking
steps from exhausting the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = None


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _settle_error(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


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
        self._lock = threading.Lock()
        self._closed = False

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
            if len(self._threads) >= self.max_threads:
                return
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        get, idle = self._queue.get, self._idle
        while True:
            item = get()
            if item is _STOP:
                return
            loop, fut, ctx, fn, args, kwargs = item
            del item
            if fut.cancelled():
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
            del loop, fut, ctx, fn, args, kwargs
            idle.release()  # only now is this thread free for the next call

    @property
    def size(self) -> int:
        return len(self._threads)

    def shutdown(self) -> None:
        """Ask every thread to exit once its current call ends; does not wait for them."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
