-- refund.lua: give cost back to every scope (common.lua is loaded in front).
--
-- KEYS[i]   the storage key of scope i
-- ARGV[1]   cost (units)
-- ARGV[2]   now in seconds, or "" for the server's clock (TIME); only tests pass a time
-- ARGV[3]   TTL slack in milliseconds (0 on the server's clock)
-- ARGV[4+3(i-1) .. 6+3(i-1)]  scope i: algorithm letter, then its two parameters
--
-- Returns now (seconds, as a string). A key left with nothing to remember is deleted.

local cost = tonumber(ARGV[1])
local now = clock(ARGV[2])
local slack = tonumber(ARGV[3])
local raws = redis.call("MGET", unpack(KEYS))
for i = 1, #KEYS do
  local at = 4 + 3 * (i - 1)
  local new = refund(ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), decode(raws[i]), now, cost)
  if new == nil then
    redis.call("DEL", KEYS[i])
  else
    store(KEYS[i], new, now, slack)
  end
end
return string.format("%.17g", now)
