"""`RedisQueue`: the fleet's queue of async jobs, and the leases of running ones.

Layout under the store's key prefix (see jobs/redis_store.py for the records):

    {p}queue             list of queued job ids: LPUSH to queue, taken from the right
    {p}taken:{replica}   list: ids a replica took (BLMOVE) and has not leased yet
    {p}leases            zset: job id -> lease deadline (ms, Redis's clock)
    {p}alive:{replica}   a replica's heartbeat: expires after one lease unless renewed
    {p}replicas          set of replicas that may have taken jobs
    {p}job:{id}          the record's hash also holds params, timeout, owner, ended

A job is never only in a replica's memory: the move from the queue to the replica's
taken list is one command (BLMOVE, as RQ and arq keep a job in a "processing"
structure), and the move from the taken list to a lease is one script. A replica whose
heartbeat expired is gone: what it took and did not start goes back to the queue (it
never ran, so running it elsewhere repeats nothing); what it was running has a lease
that runs out, and a surviving replica fails it ("worker lost") and appends its
terminal event, so stream readers end.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import msgspec
import structlog

from jobs.queue import RATE_WINDOW, Enqueued, Outcome, Taken
from jobs.records import Job
from jobs.redis_lua import LEASE, NOW_MS, RECORD_PUT
from jobs.states import JobStatus
from runtimes import events as ev
from runtimes.ids import new_id

if TYPE_CHECKING:
    from jobs.redis_store import RedisJobStore

log = structlog.get_logger("jobs.queue")
_encoder = msgspec.json.Encoder(decimal_format="number")
_decoder = msgspec.json.Decoder(Job)

REAP_BUDGET = 100  # expired leases failed per call; the rest on the next

# Check the bound and push (or lease here) in one step; an idempotency key is bound in
# the same step, so a request that loses the race stores nothing.
_ENQUEUE = (
    RECORD_PUT
    + LEASE
    + """
local p, id, data, ttl, idem, binding = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local params, timeout, max_queue, here = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local replica, lease_ms, window_us = ARGV[11], ARGV[12], tonumber(ARGV[13])
if idem ~= '' then
  local bound = redis.call('GET', p .. 'idem:' .. idem)
  if bound then return {'bound', 0, 0, bound} end
end
local q = p .. 'queue'
local n = redis.call('LLEN', q)
local run_here = here == '1' and n == 0
if not run_here and n >= max_queue then
  local t = redis.call('TIME')
  local since = tonumber(t[1]) * 1000000 + tonumber(t[2]) - window_us
  return {'full', n, redis.call('ZCOUNT', p .. 'finished', string.format('%.0f', since), '+inf')}
end
if idem ~= '' then redis.call('SET', p .. 'idem:' .. idem, binding) end
put(p, id, data, 'queued', '0', ttl, idem)
redis.call('HSET', p .. 'job:' .. id, 'params', params, 'timeout', timeout)
if run_here then
  lease(p, id, replica, lease_ms)
  return {'run', 0, 0}
end
redis.call('LPUSH', q, id)
return {'queued', n + 1, 0}
"""
)

_START = (
    LEASE
    + """
local p, id, replica, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('LREM', p .. 'taken:' .. replica, 1, id) == 0 then return false end
local h = redis.call('HMGET', p .. 'job:' .. id, 'status', 'ended', 'data', 'params', 'timeout')
if h[1] ~= 'queued' or h[2] then return false end
lease(p, id, replica, lease_ms)
return {h[3], h[4], h[5]}
"""
)

_UNTAKE = """
local p, id, replica = ARGV[1], ARGV[2], ARGV[3]
if redis.call('LREM', p .. 'taken:' .. replica, 1, id) == 1 then redis.call('RPUSH', p .. 'queue', id) end
return 1
"""

# Newest taken first to the take end, so the oldest ends up taken first again.
_GIVE_BACK_FN = """
local function give_back(p, replica)
  local n = 0
  while redis.call('LMOVE', p .. 'taken:' .. replica, p .. 'queue', 'LEFT', 'RIGHT') do n = n + 1 end
  return n
end
"""

_GIVE_BACK = (
    _GIVE_BACK_FN
    + """
return give_back(ARGV[1], ARGV[2])
"""
)

_LEAVE = (
    _GIVE_BACK_FN
    + """
local p, replica = ARGV[1], ARGV[2]
give_back(p, replica)
redis.call('DEL', p .. 'alive:' .. replica)
redis.call('SREM', p .. 'replicas', replica)
return 1
"""
)

_CANCEL_QUEUED = """
local p, id = ARGV[1], ARGV[2]
local key = p .. 'job:' .. id
local h = redis.call('HMGET', key, 'status', 'ended')
if h[1] ~= 'queued' or h[2] then return 0 end
if redis.call('ZSCORE', p .. 'leases', id) then return 0 end
redis.call('HSET', key, 'ended', '1')
redis.call('LREM', p .. 'queue', 0, id)
return 1
"""

_RENEW = (
    NOW_MS
    + """
local p, replica, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SET', p .. 'alive:' .. replica, '1', 'PX', lease_ms)
redis.call('SADD', p .. 'replicas', replica)
local deadline = now_ms() + lease_ms
local lost = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', p .. 'leases', ARGV[i]) then
    redis.call('ZADD', p .. 'leases', deadline, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""
)

# Expired leases are claimed for one more lease by the caller before it fails them, so
# if the caller dies half-way another replica retries; two never fail the same job.
_REAP = (
    _GIVE_BACK_FN
    + NOW_MS
    + """
local p, lease_ms, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local requeued = 0
for _, r in ipairs(redis.call('SMEMBERS', p .. 'replicas')) do
  if redis.call('EXISTS', p .. 'alive:' .. r) == 0 then
    requeued = requeued + give_back(p, r)
    redis.call('SREM', p .. 'replicas', r)
  end
end
local now = now_ms()
local out = {requeued}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now, 'LIMIT', 0, budget)) do
  redis.call('ZADD', p .. 'leases', now + lease_ms, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', p .. 'job:' .. id, 'owner') or '?'
end
return out
"""
)


def replica_name() -> str:
    """Readable in logs and in "worker lost" errors, unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    method: Callable[Concatenate[RedisQueue, _P], Awaitable[_R]],
) -> Callable[Concatenate[RedisQueue, _P], Awaitable[_R]]:
    """Run a queue call under the store's guard: a Redis error becomes `StoreUnavailable`
    and is noted in the store's health, as for every other call of a shared store."""

    @functools.wraps(method)
    async def call(self: RedisQueue, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.store.guard:
            return await method(self, *args, **kwargs)

    return call


class RedisQueue:
    """The `SharedQueue` of a `RedisJobStore`. Calls raise `redis.exceptions.RedisError`."""

    def __init__(self, store: RedisJobStore, lease: float) -> None:
        self.store = store
        self.client = store.client
        self.prefix = store.prefix
        self.lease = lease
        self.replica = replica_name()
        script = self.client.register_script
        self._enqueue = script(_ENQUEUE)
        self._start = script(_START)
        self._untake = script(_UNTAKE)
        self._give_back = script(_GIVE_BACK)
        self._leave = script(_LEAVE)
        self._cancel_queued = script(_CANCEL_QUEUED)
        self._renew = script(_RENEW)
        self._reap = script(_REAP)

    @property
    def _lease_ms(self) -> str:
        return str(max(1, round(self.lease * 1000)))

    @_guarded
    async def enqueue(
        self,
        job: Job,
        params: bytes,
        timeout: float | None,
        *,
        fingerprint: str,
        max_queue: int,
        run_here: bool,
    ) -> Enqueued:
        idem = job.idempotency_key or ""
        reply: Any = await self._enqueue(
            args=[
                self.prefix,
                job.job_id,
                _encoder.encode(job),
                str(max(1, round(self.store.ttl * 1000))),
                idem,
                f"{job.job_id}\n{fingerprint}",
                params,
                "" if timeout is None else repr(timeout),
                str(max_queue),
                "1" if run_here else "0",
                self.replica,
                self._lease_ms,
                str(round(RATE_WINDOW * 1_000_000)),
            ]
        )
        outcome = Outcome(reply[0].decode())
        binding = None
        if outcome is Outcome.bound:
            job_id, _, bound_fingerprint = reply[3].decode().partition("\n")
            binding = (job_id, bound_fingerprint)
        return Enqueued(outcome=outcome, depth=int(reply[1]), recent=int(reply[2]), binding=binding)

    @_guarded
    async def take(self, block: float) -> str | None:
        job_id: Any = await self.client.blmove(
            self.store.key("queue"),
            self.store.key("taken", self.replica),
            max(1, round(block)),
            "RIGHT",
            "LEFT",
        )
        return None if job_id is None else job_id.decode()

    @_guarded
    async def start(self, job_id: str) -> Taken | None:
        reply: Any = await self._start(args=[self.prefix, job_id, self.replica, self._lease_ms])
        if not reply:
            return None
        data, params, timeout = reply
        return Taken(job=_decoder.decode(data), params=params, timeout=float(timeout) if timeout else None)

    @_guarded
    async def untake(self, job_id: str) -> None:
        await self._untake(args=[self.prefix, job_id, self.replica])

    @_guarded
    async def give_back(self) -> int:
        return int(await self._give_back(args=[self.prefix, self.replica]))

    @_guarded
    async def leave(self) -> None:
        await self._leave(args=[self.prefix, self.replica])

    @_guarded
    async def cancel_queued(self, job_id: str, reason: str) -> bool:
        if not await self._cancel_queued(args=[self.prefix, job_id]):
            return False
        await self._finish_elsewhere(job_id, JobStatus.canceled, f"canceled: {reason}", reason)
        return True

    @_guarded
    async def renew(self, job_ids: Sequence[str]) -> list[str]:
        lost: Any = await self._renew(args=[self.prefix, self.replica, self._lease_ms, *job_ids])
        return [i.decode() for i in lost]

    @_guarded
    async def reap(self) -> list[str]:
        reply: Any = await self._reap(args=[self.prefix, self._lease_ms, str(REAP_BUDGET)])
        if int(reply[0]):
            log.info("taken_jobs_requeued", count=int(reply[0]))
        failed: list[str] = []
        for i in range(1, len(reply), 2):
            job_id, owner = reply[i].decode(), reply[i + 1].decode()
            error = f"worker lost: replica {owner} stopped renewing its lease on the job"
            if await self._finish_elsewhere(job_id, JobStatus.failed, error, None):
                log.warning("worker_lost", job_id=job_id, replica=owner)
                failed.append(job_id)
        return failed

    async def _finish_elsewhere(self, job_id: str, status: JobStatus, error: str, reason: str | None) -> bool:
        """Record the end of a job no replica runs any more, then append its terminal
        event after the last one shared, so readers on every replica end.
        Returns False if the job had already ended (or is gone)."""
        job = await self.store.get(job_id)
        if job is None or job.status.finished:
            await self.client.zrem(self.store.key("leases"), job_id)
            return False
        job.status = status
        job.error = error
        job.cancel_reason = reason
        job.finished_at = _utc_now()
        if not await self.store.put_record(job):
            return False
        key = self.store.key("events", job_id)
        last: Any = await self.client.xrevrange(key, count=1)
        seq = int(last[0][0].partition(b"-")[0]) + 1 if last else 1
        event: ev.RunEvent
        if status is JobStatus.canceled:
            event = ev.RunCanceled(
                seq=seq, run_id=job.run_id, ts=time.time(), reason=reason or "", duration=0.0
            )
        else:
            event = ev.RunFailed(seq=seq, run_id=job.run_id, ts=time.time(), error=error, duration=0.0)
        tag = type(event).__struct_config__.tag
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"t": str(tag), "d": _encoder.encode(event), "e": "1"}, id=f"{seq}-0")
            pipe.pexpire(key, max(1, round(self.store.ttl * 1000)))
            await pipe.execute()
        return True
