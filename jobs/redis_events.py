"""A job's events in a Redis Stream, and cancel requests on a Redis channel.

The runtime's event callback is synchronous and local readers must not wait for a
network round trip, so the job's own replica keeps its in-memory `JobEventLog` and a
`StreamMirror` copies each entry to `{p}events:{id}` from a task, in order, in
batches. The stream entry's id is `<seq>-0`: the SSE id stays the per-job seq, and a
reader resumes with `XREAD` from `<last seq>-0`. `XADD ... MAXLEN ~ events_max` bounds
it; a reader whose next seq was trimmed gets one `gap` event, as from the local log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from jobs.events import Gap, LogEntry

log = structlog.get_logger("jobs.redis")
_encoder = msgspec.json.Encoder()
_pair = msgspec.json.Decoder(tuple[str, str])

BLOCK_MS = 5000  # a blocked reader wakes this often to see whether its job still exists
BATCH = 1000


def _seq(stream_id: bytes) -> int:
    return int(stream_id.partition(b"-")[0])


class StreamMirror:
    """Copies a local log's entries to the job's stream, in order, from one task.

    Called (synchronously) for every entry the local log appends. After each batch it
    calls `after_flush` (the manager stores the job's progress then), and after the
    terminal entry it gives the stream the TTL and ends. A Redis failure loses that
    batch for remote readers (logged); the job itself runs on.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        max_events: int,
        ttl_ms: str,
        after_flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.max_events = max_events
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
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for e in batch:
                        pipe.xadd(
                            self.key,
                            {"t": e.type, "d": e.data, "e": "1" if e.terminal else "0"},
                            id=f"{e.seq}-0",
                            maxlen=self.max_events,
                            approximate=True,
                        )
                    if end:
                        pipe.pexpire(self.key, int(self.ttl_ms))
                    await pipe.execute()
                if self.after_flush is not None and not end:
                    await self.after_flush()
            except RedisError as exc:
                log.warning("events_not_shared", stream=self.key, lost=len(batch), error=str(exc))
            if end:
                return


class RedisEventLog:
    """Reads one job's stream from any replica: the `read` of `JobEventLog`, remotely."""

    def __init__(self, client: aioredis.Redis, key: str, exists: Callable[[], Awaitable[bool]]) -> None:
        self.client = client
        self.key = key
        self.exists = exists

    async def read(self, after_seq: int = 0) -> AsyncIterator[LogEntry]:
        """Yield every event after `after_seq`: history, then live (`XREAD BLOCK`), until
        the terminal one. Ends early when the job is deleted or expires meanwhile.
        Raises RedisError when Redis fails."""
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
        returns whether it ended. Raises RedisError when Redis fails."""
        last: Any = await self.client.xrevrange(self.key, count=1)
        if last and last[0][1][b"e"] == b"1":
            return True
        cursor = last[0][0] if last else b"0-0"
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            reply: Any = await self.client.xread(
                {self.key: cursor}, count=BATCH, block=max(1, round(left * 1000))
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
            try:
                while True:
                    try:
                        message = await pubsub.get_message(timeout=None)
                    except RedisError as exc:
                        log.warning("cancel_channel_lost", error=str(exc))
                        await asyncio.sleep(1.0)
                        with contextlib.suppress(RedisError):
                            await pubsub.subscribe(self.channel)
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
