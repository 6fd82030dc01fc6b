-- One process's look at the fleet's published configuration, once per sync interval
-- (_publication.py): it records what it runs, and learns the record's generation; only when
-- that differs from the generation it saw last does the answer carry the record.
-- KEYS: record (hash, see publish.lua), running (hash pid -> "expires running seen state
--       refusal", the processes' reports, expiring with them).
-- ARGV: pid, running, seen, state, refusal, heartbeat_ms.
-- Returns {generation} or {generation, action, document, by, reason, at}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local heartbeat = tonumber(ARGV[6])
local report = string.format('%d %d %d %s %s', now + heartbeat, tonumber(ARGV[2]),
  tonumber(ARGV[3]), ARGV[4], ARGV[5])
if redis.call('HSET', KEYS[2], ARGV[1], report) == 1 then
  -- A process new to the fleet: drop the reports of those gone (their expiry passed). Only
  -- then: the reports are read whole once per process, not once per process per interval.
  local flat = redis.call('HGETALL', KEYS[2])
  for i = 1, #flat, 2 do
    local e = tonumber(string.match(flat[i + 1], '^(%-?%d+) '))
    if e == nil or e <= now then
      redis.call('HDEL', KEYS[2], flat[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[2], 10 * heartbeat)
local gen = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if gen == tonumber(ARGV[3]) then
  return {gen}
end
local r = redis.call('HMGET', KEYS[1], 'action', 'document', 'by', 'reason', 'at')
return {gen, r[1] or '', r[2] or '', r[3] or '', r[4] or '', tonumber(r[5]) or 0}
