"""A job's events in a Redis Stream, and cancel requests on a Redis channel.

The runtime's event callback is synchronous and local readers must not wait for a
network round trip, so the job's own replica keeps its in-memory `JobEventLog` and a
`StreamMirror` copies each entry to `{p}events:{id}` from a task, in order, in
batches. The stream entry's id is `<seq>-0`: the SSE id stays the per-job seq, and a
reader resumes with `XREAD` from `<last seq>-0`. `XADD ... MAXLEN ~ events_max` bounds
it by count and, like the local log's byte bound, an `XTRIM MINID` keeps it within
`SERVING_JOB_EVENTS_MAX_BYTES` (counted as the local log counts; the newest entry
always stays), so ten thousand 1 KB events do not sit in Redis for the job's TTL; a
reader whose next seq was trimmed gets one `gap` event, as from the local log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from jobs.events import Gap, LogEntry, entry_size
from jobs.health import StoreHealth

if TYPE_CHECKING:
    from jobs.redis_store import StoreGuard

log = structlog.get_logger("jobs.redis")
_encoder = msgspec.json.Encoder()
_pair = msgspec.json.Decoder(tuple[str, str])

BLOCK_MS = 5000  # a blocked reader wakes this often to see whether its job still exists
BATCH = 1000
# While Redis is away, a mirror retries its batch with backoff (first wait, cap), for at
# most RETRY_FOR seconds of one outage; then that batch is dropped for remote readers.
RETRY_FIRST = 0.05
RETRY_CAP = 2.0
RETRY_FOR = 300.0


def _seq(stream_id: bytes) -> int:
    return int(stream_id.partition(b"-")[0])


class StreamMirror:
    """Copies a local log's entries to the job's stream, in order, from one task.

    Called (synchronously) for every entry the local log appends. After each batch it
    calls `after_flush` (the manager stores the job's progress then), and after the
    terminal entry it gives the stream the TTL and ends.

    While Redis is away the job runs on and its entries wait here (at most `max_events`
    of them: older ones are dropped, and remote readers get a `gap` for them, as from a
    trimmed stream); the batch is retried with backoff until Redis answers, for up to
    `RETRY_FOR` seconds, then dropped (logged). Before a retry the stream's last id is
    read, so entries a failed call did write are not written twice.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        max_events: int,
        ttl_ms: str,
        after_flush: Callable[[], Awaitable[None]] | None = None,
        health: StoreHealth | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.client = client
        self.health = health
        self.key = key
        self.max_events = max_events
        self.max_bytes = max_bytes
        # (seq, bytes) of what the stream keeps, oldest first: for the byte bound.
        self._kept: collections.deque[tuple[int, int]] = collections.deque()
        self._kept_bytes = 0
        self.ttl_ms = ttl_ms
        self.after_flush = after_flush
        self._pending: list[LogEntry] = []
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"events:{key}")

    def __call__(self, entry: LogEntry) -> None:
        self._pending.append(entry)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            end = any(e.terminal for e in batch)
            end = await self._flush(batch, end)
            if self.after_flush is not None and not end:
                try:
                    await self.after_flush()
                except Exception as exc:  # StoreUnavailable: the next batch stores progress again
                    log.warning("progress_not_shared", stream=self.key, error=str(exc))
            if end:
                return

    async def _flush(self, batch: list[LogEntry], end: bool) -> bool:
        """Write `batch` to the stream, retrying while Redis is away (see the class);
        returns whether the terminal entry was in it (entries that came during retries join)."""
        delay, give_up = RETRY_FIRST, None
        while True:
            try:
                if give_up is not None:  # a failed call may have written part of the batch
                    last: Any = await self.client.xrevrange(self.key, count=1)
                    written = _seq(last[0][0]) if last else 0
                    batch = [e for e in batch if e.seq > written]
                await self._write(batch, end)
            except RedisError as exc:
                if self.health is not None:
                    self.health.failed(exc)
                now = time.monotonic()
                if give_up is None:
                    give_up = now + RETRY_FOR
                    log.warning("events_not_shared_yet", stream=self.key, pending=len(batch), error=str(exc))
                elif now >= give_up:
                    log.error("events_not_shared", stream=self.key, lost=len(batch), error=str(exc))
                    return end
                await asyncio.sleep(delay)
                delay = min(RETRY_CAP, delay * 2)
                # Entries appended meanwhile join the retry, within the log's bound.
                batch = batch + self._pending
                self._pending = []
                self._wake.clear()
                end = end or any(e.terminal for e in batch)
                if len(batch) > self.max_events:
                    batch = batch[-self.max_events :]
                batch = self._within_bytes(batch)
                continue
            if self.health is not None:
                self.health.ok()
            if give_up is not None:
                log.warning("events_shared_again", stream=self.key)
            return end

    def _within_bytes(self, batch: list[LogEntry]) -> list[LogEntry]:
        """The newest entries of a waiting batch that fit the byte bound (at least one)."""
        if self.max_bytes is None:
            return batch
        total, start = 0, len(batch)
        while start > 0 and (start == len(batch) or total + entry_size(batch[start - 1]) <= self.max_bytes):
            start -= 1
            total += entry_size(batch[start])
        return batch[start:]

    def _trim_to(self, batch: list[LogEntry]) -> int | None:
        """Account for `batch`; the first seq the stream must keep to stay within the
        byte bound, or None when it fits."""
        if self.max_bytes is None:
            return None
        kept = self._kept
        for e in batch:
            if kept and e.seq <= kept[-1][0]:
                continue  # counted already: a retry of a batch a failed call may have written
            size = entry_size(e)
            kept.append((e.seq, size))
            self._kept_bytes += size
        trimmed = False
        while self._kept_bytes > self.max_bytes and len(kept) > 1:
            self._kept_bytes -= kept.popleft()[1]
            trimmed = True
        while len(kept) > self.max_events:  # MAXLEN trims these anyway
            self._kept_bytes -= kept.popleft()[1]
        return kept[0][0] if trimmed else None

    async def _write(self, batch: list[LogEntry], end: bool) -> None:
        first_kept = self._trim_to(batch)
        async with self.client.pipeline(transaction=False) as pipe:
            for e in batch:
                pipe.xadd(
                    self.key,
                    {"t": e.type, "d": e.data, "e": "1" if e.terminal else "0"},
                    id=f"{e.seq}-0",
                    maxlen=self.max_events,
                    approximate=True,
                )
            if first_kept is not None:
                # Exact: a stream holds at most events_max entries, so this trims few.
                pipe.xtrim(self.key, minid=f"{first_kept}-0", approximate=False)
            if end:
                pipe.pexpire(self.key, int(self.ttl_ms))
            await pipe.execute()


class RedisEventLog:
    """Reads one job's stream from any replica: the `read` of `JobEventLog`, remotely."""

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        exists: Callable[[], Awaitable[bool]],
        guard: StoreGuard | contextlib.nullcontext[None] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.exists = exists
        self.guard = guard if guard is not None else contextlib.nullcontext()

    async def read(self, after_seq: int = 0) -> AsyncIterator[LogEntry]:
        """Yield every event after `after_seq`: history, then live (`XREAD BLOCK`), until
        the terminal one. Ends early when the job is deleted or expires meanwhile.
        Raises StoreUnavailable (RedisError without a guard) when Redis fails; a
        reader resumes after the last seq it got once Redis is back."""
        with self.guard:
            async for entry in self._read(after_seq):
                yield entry

    async def _read(self, after_seq: int) -> AsyncIterator[LogEntry]:
        cursor = after_seq
        last: Any = await self.client.xrevrange(self.key, count=1)
        if last and last[0][1][b"e"] == b"1" and _seq(last[0][0]) <= cursor:
            return  # resumed after the end: nothing more will come
        while True:
            reply: Any = await self.client.xread({self.key: f"{cursor}-0"}, count=BATCH, block=BLOCK_MS)
            if not reply:
                if not await self.exists():
                    return
                continue
            for stream_id, fields in reply[0][1]:
                seq = _seq(stream_id)
                if seq > cursor + 1:
                    gap = Gap(seq=seq - 1, from_seq=cursor + 1, to_seq=seq - 1)
                    yield LogEntry(gap.seq, "gap", _encoder.encode(gap), False)
                terminal = fields[b"e"] == b"1"
                yield LogEntry(seq, fields[b"t"].decode(), fields[b"d"], terminal)
                cursor = seq
                if terminal:
                    return

    async def wait_end(self, timeout: float) -> bool:
        """Wait until the job's terminal event is in the stream or `timeout` passes;
        returns whether it ended. Raises StoreUnavailable (RedisError without a guard)
        when Redis fails."""
        with self.guard:
            return await self._wait_end(timeout)

    async def _wait_end(self, timeout: float) -> bool:
        last: Any = await self.client.xrevrange(self.key, count=1)
        if last and last[0][1][b"e"] == b"1":
            return True
        cursor = last[0][0] if last else b"0-0"
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            reply: Any = await self.client.xread(
                {self.key: cursor}, count=BATCH, block=max(1, min(BLOCK_MS, round(left * 1000)))
            )
            for stream_id, fields in reply[0][1] if reply else ():
                cursor = stream_id
                if fields[b"e"] == b"1":
                    return True
        return False


class CancelBus:
    """Cancel requests between replicas: one pub/sub channel every replica listens on.

    A request names the job; the replica running it cancels it, the others ignore it.
    Pub/sub delivers at once (well within the 100 ms a cross-replica cancel may take)
    and keeps nothing, which suits a request that only matters to a live owner.
    """

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self.client = client
        self.channel = channel

    async def request(self, job_id: str, reason: str) -> None:
        await self.client.publish(self.channel, _encoder.encode((job_id, reason)))

    async def listen(self, handle: Callable[[str, str], Awaitable[None]]) -> asyncio.Task[None]:
        """Subscribe (awaited, so a request sent after this returns is not missed) and
        hand each request to `handle` from a task; returns the task."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)

        async def run() -> None:
            # While Redis is away: resubscribe with backoff (capped at RETRY_CAP / 2), and
            # log the loss and the return once each. Requests published meanwhile are
            # lost (pub/sub keeps nothing); the canceller got a 503 or a 202 for them.
            lost, delay = False, RETRY_FIRST
            try:
                while True:
                    try:
                        if lost:
                            await pubsub.subscribe(self.channel)
                            lost, delay = False, RETRY_FIRST
                            log.warning("cancel_channel_back", channel=self.channel)
                        message = await pubsub.get_message(timeout=None)
                    except RedisError as exc:
                        if not lost:
                            lost = True
                            log.warning("cancel_channel_lost", channel=self.channel, error=str(exc))
                        await asyncio.sleep(delay)
                        delay = min(RETRY_CAP / 2, delay * 2)
                        continue
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        job_id, reason = _pair.decode(message["data"])
                    except msgspec.DecodeError:
                        continue
                    try:
                        await handle(job_id, reason)
                    except Exception:
                        log.exception("remote_cancel_failed", job_id=job_id)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

        return asyncio.create_task(run(), name="jobs:cancel-bus")
