"""Lua functions that more than one Redis script needs, so both write a record the same way.

The record store's `put` and the queue's `enqueue` (which stores the record and queues
it in one step) share `put`; the queue's scripts share `lease`. Each is prepended to
the scripts that call it.
"""

from __future__ import annotations

# A record update. A finished record is final: neither a late progress write nor a
# different end (an owner that finishes after another replica declared the job lost)
# replaces it, so the first end written wins. Finishing also drops the job's lease.
RECORD_PUT = """
local function put(p, id, data, status, finished, ttl, idem)
  local key = p .. 'job:' .. id
  local old = redis.call('HMGET', key, 'status', 'score')
  if (old[1] == 'completed' or old[1] == 'failed' or old[1] == 'canceled') and old[1] ~= status then
    return 0
  end
  local score = old[2]
  if not score then
    score = redis.call('INCR', p .. 'seq')
    redis.call('ZADD', p .. 'jobs', score, id)
  end
  if old[1] ~= status then
    if old[1] then redis.call('ZREM', p .. 'status:' .. old[1], id) end
    redis.call('ZADD', p .. 'status:' .. status, score, id)
  end
  redis.call('HSET', key, 'data', data, 'status', status, 'score', score)
  if idem ~= '' then redis.call('HSET', key, 'idem', idem) end
  if finished == '1' then
    redis.call('ZREM', p .. 'leases', id)
    if not redis.call('ZSCORE', p .. 'finished', id) then
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
      local last = tonumber(redis.call('GET', p .. 'fclock') or '0')
      if now <= last then now = last + 1 end
      now = string.format('%.0f', now)
      redis.call('SET', p .. 'fclock', now)
      redis.call('ZADD', p .. 'finished', now, id)
    end
    redis.call('PEXPIRE', key, ttl)
    idem = redis.call('HGET', key, 'idem') or ''
    if idem ~= '' then
      local bound = redis.call('GET', p .. 'idem:' .. idem)
      if bound and string.sub(bound, 1, #id + 1) == id .. '\\n' then
        redis.call('PEXPIRE', p .. 'idem:' .. idem, ttl)
      end
    end
  end
  return 1
end
"""

# Redis's own clock in ms, so replicas with skewed clocks agree on every deadline.
NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# The job is now `replica`'s to run, until `lease_ms` from now unless renewed.
LEASE = (
    NOW_MS
    + """
local function lease(p, id, replica, lease_ms)
  redis.call('ZADD', p .. 'leases', now_ms() + tonumber(lease_ms), id)
  redis.call('HSET', p .. 'job:' .. id, 'owner', replica)
end
"""
)
