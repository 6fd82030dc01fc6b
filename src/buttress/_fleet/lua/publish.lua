-- Publish a configuration for every process of a fleet, or withdraw it (_publication.py).
-- KEYS: record (hash: generation, action, document, by, reason, at; never expires).
-- ARGV: action ('publish' or 'withdraw'), document (publish only), by, reason.
-- Returns {generation, at_ms}; a withdrawal with nothing published records nothing: {0, at}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local action = ARGV[1]
if action == 'publish' then
  redis.call('HSET', KEYS[1], 'document', ARGV[2])
elseif action == 'withdraw' then
  if redis.call('HGET', KEYS[1], 'action') ~= 'publish' then
    return {0, now}
  end
  redis.call('HDEL', KEYS[1], 'document')
else
  return redis.error_reply('unknown action ' .. action)
end
local gen = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'action', action, 'by', ARGV[3], 'reason', ARGV[4], 'at', now)
return {gen, now}
