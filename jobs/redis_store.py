"""`RedisJobStore`: job records, idempotency keys and retention shared by every replica.

Layout under one key prefix (`serving:` unless the URL says `?prefix=`):

    {p}job:{id}          hash: data (the msgspec JSON record), status, score, idem
    {p}jobs              zset of every kept job, scored by creation order ({p}seq)
    {p}status:{status}   one zset per status, same scores: filtered pages stay O(page)
    {p}finished          zset of finished jobs, scored by finish time (microseconds,
                         strictly increasing through {p}fclock): TTL and MAX_JOBS order
    {p}idem:{key}        "job_id\\nfingerprint", bound with SET NX GET (one atomic step)
    {p}events:{id}       the job's event stream (jobs/redis_events.py)
    {p}queue, {p}taken:{replica}, {p}leases, {p}alive:{replica}, {p}replicas
                         the fleet's queue and the leases of running jobs
                         (jobs/redis_queue.py)

Every write that touches more than one key is a Lua script, so two replicas never see
half a change. A finished job's hash, idempotency key and events expire after the TTL
by themselves; the index entries they leave are removed by `evict`, which every
replica's sweeper calls, so no key and no index grows without bound.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from jobs.events import JobEventLog
from jobs.health import StoreHealth
from jobs.records import Job
from jobs.redis_events import BLOCK_MS, CancelBus, RedisEventLog, StreamMirror
from jobs.redis_lua import RECORD_PUT
from jobs.redis_queue import RedisQueue
from jobs.states import FINISHED, JobStatus

DEFAULT_PREFIX = "serving:"
SOCKET_TIMEOUT = 3 * BLOCK_MS / 1000  # seconds; see from_url
MAX_CONNECTIONS = 10_000  # per replica; Redis's own default maxclients
SCHEMES = ("redis", "rediss", "unix")

_encoder = msgspec.json.Encoder(decimal_format="number")
_decoder = msgspec.json.Decoder(Job)

_PUT = (
    RECORD_PUT
    + """
return put(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
)

# Drops one job everywhere; shared by delete and evict.
_DROP = """
local function drop(p, id)
  local key = p .. 'job:' .. id
  local old = redis.call('HMGET', key, 'status', 'idem')
  redis.call('DEL', key, p .. 'events:' .. id)
  redis.call('ZREM', p .. 'jobs', id)
  redis.call('ZREM', p .. 'finished', id)
  redis.call('ZREM', p .. 'leases', id)
  if old[1] then
    redis.call('ZREM', p .. 'status:' .. old[1], id)
  else  -- the hash expired: only a finished job's hash expires
    for _, s in ipairs({'completed', 'failed', 'canceled'}) do redis.call('ZREM', p .. 'status:' .. s, id) end
  end
  if old[2] and old[2] ~= '' then
    local bound = redis.call('GET', p .. 'idem:' .. old[2])
    if bound and string.sub(bound, 1, #id + 1) == id .. '\\n' then
      redis.call('DEL', p .. 'idem:' .. old[2])
    end
  end
end
"""

_DELETE = (
    _DROP
    + """
drop(ARGV[1], ARGV[2])
return 1
"""
)

# Finished jobs in finish order: drop those older than the TTL, then the oldest while
# more than max_jobs are kept. Queued and running jobs are never in {p}finished.
_EVICT = (
    _DROP
    + """
local p, ttl_us, max_jobs, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000000 + tonumber(t[2]) - ttl_us
local total = redis.call('ZCARD', p .. 'jobs')
local out = {}
while #out < budget do
  local head = redis.call('ZRANGE', p .. 'finished', 0, 0, 'WITHSCORES')
  if #head == 0 then break end
  if tonumber(head[2]) > deadline and total <= max_jobs then break end
  drop(p, head[1])
  total = total - 1
  out[#out + 1] = head[1]
end
return out
"""
)


# Binds an idempotency key unless bound (SET NX GET: check and write in one step), and
# notes the key on the job, so deleting the job frees it.
_CLAIM = """
local p, key, id, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local previous = redis.call('SET', p .. 'idem:' .. key, value, 'NX', 'GET')
if previous then return previous end
if redis.call('EXISTS', p .. 'job:' .. id) == 1 then redis.call('HSET', p .. 'job:' .. id, 'idem', key) end
return false
"""


def parse_store_url(url: str) -> tuple[str, str]:
    """Split `redis://host:port/db?prefix=x` into the client's URL and the key prefix.

    Raises ValueError with a message fit for one line after the variable's name.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError("expected 'memory' or a URL redis://host:port/db (rediss://, unix:// also work)")
    query = parse_qs(parts.query, keep_blank_values=True)
    prefix = query.pop("prefix", [DEFAULT_PREFIX])[-1]
    if parts.scheme != "unix":
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("the port is not a number from 0 to 65535") from None
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"the database {db!r} is not a number")
    rest = urlencode(query, doseq=True)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), prefix


class StoreGuard:
    """`with guard:` around a store call: Redis errors become `StoreUnavailable`, and the
    outcome is noted in the store's `StoreHealth` (a context manager, so it also spans awaits)."""

    __slots__ = ("health",)

    def __init__(self, health: StoreHealth) -> None:
        self.health = health

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.health.ok()
        elif isinstance(exc, (RedisError, TimeoutError)):  # TimeoutError: our own bound, in ping
            raise self.health.failed(exc) from exc


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


class RedisJobStore:
    """The `JobStore` of a fleet: any replica reads, lists, deletes any job.

    `ttl` is the key expiry of finished jobs (SERVING_JOB_TTL); `evict` also takes
    the TTL to apply, like the memory store, for the index entries. Every call raises
    `StoreUnavailable` in place of a Redis error (Redis stopped, restarting, or out of
    reach), and notes the outcome in `health`; the client reconnects on the next call.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: float = 3600.0,
        lease: float = 10.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.health = StoreHealth("redis")
        self.guard = StoreGuard(self.health)
        self._cancels = CancelBus(client, self.key("cancel"))
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)
        self._evict = client.register_script(_EVICT)
        self._claim = client.register_script(_CLAIM)
        self.queue = RedisQueue(self, lease)

    @classmethod
    def from_url(cls, url: str, *, ttl: float = 3600.0, lease: float = 10.0) -> RedisJobStore:
        client_url, prefix = parse_store_url(url)
        # A connect to a Redis that is gone fails after 2 s, not the OS's minutes. Reads
        # wait at most SOCKET_TIMEOUT (a Redis that went silent is noticed), which must
        # stay above the longest block we ask for (BLMOVE, XREAD BLOCK: BLOCK_MS):
        # redis-py 8 otherwise reads with a 5 s timeout that races those 5 s blocks, and
        # a long-poll blocked longer than that failed as if Redis were gone. Every reader
        # of another replica's job holds a connection in XREAD BLOCK, so the pool must
        # outgrow redis-py's default of 100 (bench/redis_jobs.py hit it with 100 SSE readers).
        client = aioredis.Redis.from_url(
            client_url,
            socket_connect_timeout=2.0,
            socket_timeout=SOCKET_TIMEOUT,
            max_connections=MAX_CONNECTIONS,
        )
        return cls(client, prefix=prefix, ttl=ttl, lease=lease)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self, timeout: float = 1.0) -> None:
        """Ask Redis whether it answers, within `timeout` seconds (for /status); raises
        StoreUnavailable if not."""
        with self.guard:
            async with asyncio.timeout(timeout):
                await self.client.ping()

    async def put(self, job: Job) -> None:
        await self.put_record(job)

    async def put_record(self, job: Job) -> bool:
        """`put`, returning whether it applied (False: the record had already ended)."""
        args: list[str | bytes] = [
            self.prefix,
            job.job_id,
            _encoder.encode(job),
            job.status.value,
            "1" if job.status in FINISHED else "0",
            _ms(self.ttl),
            job.idempotency_key or "",
        ]
        with self.guard:
            return bool(await self._put(args=args))

    async def get(self, job_id: str) -> Job | None:
        with self.guard:
            data = await self.client.hget(self.key("job", job_id), "data")
        return None if data is None else _decoder.decode(data)

    async def delete(self, job_id: str) -> None:
        with self.guard:
            await self._delete(args=[self.prefix, job_id])

    async def list(
        self, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[builtins.list[Job], str | None]:
        index = self.key("jobs") if status is None else self.key("status", status.value)
        top = f"({cursor}" if cursor else "+inf"
        with self.guard:
            ids: Any = await self.client.zrevrangebyscore(
                index, top, "-inf", start=0, num=limit + 1, withscores=True
            )
            more = len(ids) > limit
            ids = ids[:limit]
            if not ids:
                return [], None
            async with self.client.pipeline(transaction=False) as pipe:
                for job_id, _ in ids:
                    pipe.hget(self.key("job", job_id.decode()), "data")
                records: builtins.list[Any] = await pipe.execute()
        page = [_decoder.decode(data) for data in records if data is not None]  # None: just expired
        return page, (f"{int(ids[-1][1])}" if more else None)

    async def claim_key(self, key: str, job_id: str, fingerprint: str) -> tuple[str, str] | None:
        with self.guard:
            previous = await self._claim(args=[self.prefix, key, job_id, f"{job_id}\n{fingerprint}"])
        return None if previous is None else _split_binding(previous)

    async def lookup_key(self, key: str) -> tuple[str, str] | None:
        with self.guard:
            bound: Any = await self.client.get(self.key("idem", key))
        return None if bound is None else _split_binding(bound)

    async def evict(self, ttl: float, max_jobs: int) -> builtins.list[str]:
        with self.guard:
            ids = await self._evict(args=[self.prefix, str(round(ttl * 1_000_000)), str(max_jobs), "10000"])
        return [i.decode() for i in ids]

    async def count(self) -> int:
        with self.guard:
            return int(await self.client.zcard(self.key("jobs")))

    async def count_by_status(self) -> dict[JobStatus, int]:
        with self.guard:
            async with self.client.pipeline(transaction=False) as pipe:
                for status in JobStatus:
                    pipe.zcard(self.key("status", status.value))
                counts = await pipe.execute()
        return {status: int(n) for status, n in zip(JobStatus, counts, strict=True) if n}

    # -- what replicas share besides records (SharedJobStore) ---------------------------

    def mirror(
        self, job_id: str, log: JobEventLog, after_flush: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        # The shared log keeps as many events and bytes as the local one
        # (SERVING_JOB_EVENTS_MAX, SERVING_JOB_EVENTS_MAX_BYTES).
        mirror = StreamMirror(
            self.client,
            self.key("events", job_id),
            log.max_events,
            _ms(self.ttl),
            after_flush,
            self.health,
            max_bytes=log.max_bytes,
        )
        log.listener = mirror
        return mirror.task

    def events(self, job_id: str) -> RedisEventLog:
        async def exists() -> bool:
            return bool(await self.client.exists(self.key("job", job_id)))

        return RedisEventLog(self.client, self.key("events", job_id), exists, self.guard)

    async def wait_end(self, job_id: str, timeout: float) -> bool:
        return await self.events(job_id).wait_end(timeout)

    async def request_cancel(self, job_id: str, reason: str) -> None:
        with self.guard:
            await self._cancels.request(job_id, reason)

    async def listen_cancels(self, handle: Callable[[str, str], Awaitable[None]]) -> asyncio.Task[None]:
        return await self._cancels.listen(handle)


def _split_binding(raw: bytes) -> tuple[str, str]:
    job_id, _, fingerprint = raw.decode().partition("\n")
    return job_id, fingerprint
