-- An operator's action on one breaker, fleet-wide: transcribes _core.override; a reset also
-- closes the fleet and starts a new epoch (the windows counted so far count no more).
-- KEYS: override, state, probes. ARGV: action, reason, by.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local action = ARGV[1]
if action == 'force_open' then
  redis.call('HSET', KEYS[1], 'force_open', 1)
elseif action == 'disable' then
  redis.call('HSET', KEYS[1], 'disabled', 1)
elseif action == 'reset' then
  redis.call('HSET', KEYS[1], 'force_open', 0, 'disabled', 0)
  local epoch = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
  redis.call('HSET', KEYS[2], 'epoch', epoch + 1, 'until', 0)
  redis.call('DEL', KEYS[3])
else
  return redis.error_reply('unknown action ' .. action)
end
local gen = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'action', action, 'reason', ARGV[2], 'by', ARGV[3], 'at', now)
return {gen, now}
