-- One process's sync of one breaker: transcribes _core.step (see there).
-- KEYS: procs (hash pid -> "expires calls failures epoch"), state (hash epoch, until),
--       probes (counter with an expiry), override (hash, never expires).
-- ARGV: pid, calls, failures, epoch, recovered, probes_wanted, failure_threshold (-1: none),
--       failure_rate_threshold (-1: none), minimum_calls, quorum, open_ms, probe_budget,
--       probe_ttl_ms, heartbeat_ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pid = ARGV[1]
local r_calls, r_failures, r_epoch = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local recovered, wanted = ARGV[5] == '1', tonumber(ARGV[6])
local ft, rt = tonumber(ARGV[7]), tonumber(ARGV[8])
local minimum, quorum, open_ms = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local budget, probe_ttl, heartbeat = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])

redis.call('HSET', KEYS[1], pid,
  string.format('%d %d %d %d', now + heartbeat, r_calls, r_failures, r_epoch))
local st = redis.call('HMGET', KEYS[2], 'epoch', 'until')
local epoch, untl = tonumber(st[1]) or 0, tonumber(st[2]) or 0
if recovered and r_epoch == epoch and untl > 0 and untl <= now then
  untl = 0
end

local recs = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local e, c, f, ep = string.match(flat[i + 1], '^(%-?%d+) (%d+) (%d+) (%d+)$')
  e = tonumber(e)
  if e == nil or e <= now then
    redis.call('HDEL', KEYS[1], flat[i])
  else
    recs[#recs + 1] = {tonumber(c), tonumber(f), tonumber(ep)}
  end
end

local function signal(ep)
  local live, sick, calls, failures = 0, 0, 0, 0
  for _, r in ipairs(recs) do
    live = live + 1
    if r[3] == ep then
      calls = calls + r[1]
      failures = failures + r[2]
      if r[2] > 0 then sick = sick + 1 end
    end
  end
  return live, sick, calls, failures
end

local function crosses(calls, failures, sick)
  if sick < quorum then return false end
  if ft >= 0 and failures >= ft then return true end
  return rt >= 0 and calls >= minimum and failures >= rt * calls
end

local probes = tonumber(redis.call('GET', KEYS[3]) or '0')
local live, sick, calls, failures = signal(epoch)
if untl <= now and crosses(calls, failures, sick) then
  epoch = epoch + 1
  untl = now + open_ms
  redis.call('DEL', KEYS[3])
  probes = 0
  live, sick, calls, failures = signal(epoch)
end
local granted = 0
if wanted > 0 and untl > 0 and untl <= now then
  granted = math.max(0, math.min(wanted, budget - probes))
  if granted > 0 then
    if redis.call('INCRBY', KEYS[3], granted) == granted then
      redis.call('PEXPIRE', KEYS[3], probe_ttl)
    end
  end
end
redis.call('HSET', KEYS[2], 'epoch', epoch, 'until', untl)
local keep = open_ms + 10 * heartbeat + math.max(0, untl - now)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)

local left = -1
if untl > 0 then left = math.max(0, untl - now) end
local ov = redis.call('HMGET', KEYS[4], 'generation', 'force_open', 'disabled', 'action',
  'reason', 'by', 'at')
return {now, epoch, left, live, sick, calls, failures, granted,
  tonumber(ov[1]) or 0, tonumber(ov[2]) or 0, tonumber(ov[3]) or 0,
  ov[4] or '', ov[5] or '', ov[6] or '', tonumber(ov[7]) or 0}
