"""The capture publisher: records in, batches out, never on the request path.

`publish()` appends to a bounded deque and returns; it never awaits and never blocks.
A background task drains the deque in batches (`batch_size` records, or whatever
arrived within `batch_interval` seconds, whichever comes first) and writes each batch
to the sink in one dedicated writer thread. A full queue drops the record and counts
it (with a rate-limited warning); a failing sink trips the circuit breaker. `stop()`
flushes everything still queued before it returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import structlog

from capture import metrics
from capture.breaker import BreakerState, CircuitBreaker
from capture.records import Record, RunRecord
from capture.redact import finish
from capture.sinks import Sink

Queued = Record

log = structlog.get_logger("capture")


class _RateLimited:
    """At most one warning per `interval` seconds per key, with the count suppressed."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = collections.defaultdict(int)

    def warn(self, key: str, event: str, **fields: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        log.warning(event, suppressed_since_last=self._suppressed.pop(key, 0), **fields)


class Publisher:
    def __init__(
        self,
        sink: Sink,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        batch_interval: float = 0.25,
        breaker: CircuitBreaker | None = None,
        preview_max_bytes: int = 4096,
    ) -> None:
        self.sink = sink
        self.preview_max_bytes = preview_max_bytes  # where finish_previews cuts
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.breaker = breaker or CircuitBreaker()
        self.written = 0
        self.dropped = 0
        self._queue: collections.deque[Queued] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="capture-writer")
        self._warn = _RateLimited()
        self._closing = False
        self._late: asyncio.Future[None] | None = None  # a write past its deadline, still running
        metrics.queue_depth.set_function(lambda: len(self._queue))

    @property
    def queued(self) -> int:
        return len(self._queue)

    def publish(self, record: Queued) -> bool:
        """Queue a record; False (and counted) when the queue is full. Never blocks."""
        if len(self._queue) >= self.max_queue:
            self._drop(1, "queue_full")
            self._warn.warn("queue_full", "capture_queue_full", max_queue=self.max_queue)
            return False
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        return True

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        metrics.dropped_total.labels(reason).inc(count)

    async def start(self) -> None:
        """Open the sink (in the writer thread) and start draining; raises if it cannot open."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self.sink.open)
        self._task = asyncio.create_task(self._drain_forever(), name="capture:publisher")

    async def _drain_forever(self) -> None:
        while not self._closing:
            if len(self._queue) < self.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.batch_interval):
                        await self._wake.wait()
            await self._flush_once()

    async def _flush_once(self) -> None:
        if not self._queue:
            return
        queue = self._queue
        if len(queue) <= self.batch_size:  # the usual case: take everything, in C
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(self.batch_size)]
        await self._write(batch)

    async def _write(self, batch: list[Queued]) -> None:
        if not self.breaker.allow():
            self._drop(len(batch), "breaker_open")
            return
        if self._late is not None:  # the writer thread is still stuck in a late write
            self.breaker.trip(
                f"the sink is still busy with a write started over {self.breaker.write_deadline:g}s ago"
            )
            self._drop(len(batch), "breaker_open")
            metrics.breaker_open.set(1)
            return
        started = time.perf_counter()
        try:
            future = asyncio.get_running_loop().run_in_executor(self._writer, self._write_batch, batch)
            done, _ = await asyncio.wait((future,), timeout=self.breaker.write_deadline)
            if not done:
                self._late_write(future, len(batch))
                return
            future.result()
        except Exception as exc:
            self.breaker.failure(f"{type(exc).__name__}: {exc}")
            self._drop(len(batch), "sink_error")
            self._warn.warn(
                "sink_error",
                "capture_sink_failed",
                sink=self.sink.name,
                error=f"{type(exc).__name__}: {exc}",
                breaker=self.breaker.state.value,
            )
        else:
            if self.breaker.state is not BreakerState.closed:
                log.info("capture_sink_recovered", sink=self.sink.name)
            self.breaker.success()
            self.written += len(batch)
            metrics.events_total.inc(len(batch))
            metrics.batch_seconds.observe(time.perf_counter() - started)
        finally:
            metrics.breaker_open.set(0 if self.breaker.state is BreakerState.closed else 1)

    def _late_write(self, future: asyncio.Future[None], count: int) -> None:
        """A write past its deadline: the breaker opens now, so the drain loop goes on
        dropping (and counting) batches under it instead of queueing behind the stuck
        writer; this batch is counted written or dropped whenever the write ends."""
        self._late = future
        error = f"a write took longer than {self.breaker.write_deadline:g}s"
        self.breaker.trip(error)
        self._warn.warn("sink_slow", "capture_sink_slow", sink=self.sink.name, error=error, breaker="open")

        def ended(done: asyncio.Future[None]) -> None:
            self._late = None
            if done.cancelled() or done.exception() is not None:
                self._drop(count, "sink_error")
            else:
                self.written += count
                metrics.events_total.inc(count)

        future.add_done_callback(ended)

    def _write_batch(self, batch: list[Queued]) -> None:
        """In the writer thread: finish the previews left as JSON, then write the batch."""
        max_bytes = self.preview_max_bytes
        for record in batch:
            if type(record) is RunRecord:
                finish_previews(record, max_bytes)
        self.sink.write(batch)

    async def stop(self, timeout: float = 30.0) -> None:
        """Flush everything queued (bounded by `timeout`), then close the sink."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task  # lets a batch being written finish and be counted
            self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._queue:
                    await self._flush_once()
        if self._queue:
            self._drop(len(self._queue), "shutdown_timeout")
            log.warning("capture_not_flushed", dropped=len(self._queue))
            self._queue.clear()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self.sink.close)
        self._writer.shutdown(wait=False)
        log.info("capture_flushed", written=self.written, dropped=self.dropped)

    def status(self) -> dict[str, object]:
        return {
            "sink": self.sink.name,
            "queued": len(self._queue),
            "written": self.written,
            "dropped": self.dropped,
            "breaker": self.breaker.snapshot(),
        }


def finish_previews(record: RunRecord, max_bytes: int) -> None:
    """Turn the previews the event loop left as JSON bytes into their stored text, in place.

    In the writer thread, a batch at a time: the secret scan (and the redaction it
    rarely calls for) is the dearest part of a preview, and here it runs neither on the
    event loop nor cold between two requests. A record is the loop's no more once
    published, so changing it here races with nothing.
    """
    # The fields are typed as stored but may hold bytes here (see StepRecord). Each
    # test reads its field again rather than keeping it in a local: bytes are rare,
    # and this runs per record in the writer thread, where every bytecode counts.
    if type(record.parameters) is bytes:
        record.parameters = finish(record.parameters, max_bytes)
    if type(record.output_preview) is bytes:
        record.output_preview = finish(record.output_preview, max_bytes)
    for step in record.steps:
        if type(step.input_preview) is bytes:
            step.input_preview = finish(step.input_preview, max_bytes)
        if type(step.output_preview) is bytes:
            step.output_preview = finish(step.output_preview, max_bytes)
