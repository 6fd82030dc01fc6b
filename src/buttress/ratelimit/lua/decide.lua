-- decide.lua: one hierarchical decision, every scope at once (common.lua is loaded in front).
--
-- KEYS[i]   the storage key of scope i (all in one hash slot: see docs/deployment.md)
-- ARGV[1]   cost (units)
-- ARGV[2]   "1" to store the new states if every scope admits, "0" to only look (peek)
-- ARGV[3]   now in seconds, or "" for the server's clock (TIME); only tests pass a time
-- ARGV[4]   TTL slack in milliseconds added to every key's expiry (0 on the server's clock)
-- ARGV[5+3(i-1) .. 7+3(i-1)]  scope i: algorithm letter, then its two parameters
--
-- Returns {allowed (1 or 0), now (seconds, as a string), then for each key the stored state
-- as read before deciding (a string, or nil when the key holds none)}.
-- Nothing is written unless every scope admits: a refusal consumes nothing anywhere.

local cost = tonumber(ARGV[1])
local now = clock(ARGV[3])
local raws = redis.call("MGET", unpack(KEYS))
local news = {}
local allowed = 1
for i = 1, #KEYS do
  local at = 5 + 3 * (i - 1)
  local new = admit(ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), decode(raws[i]), now, cost)
  if new == nil then
    allowed = 0
    break
  end
  news[i] = new
end
if allowed == 1 and ARGV[2] == "1" then
  local slack = tonumber(ARGV[4])
  for i = 1, #KEYS do
    store(KEYS[i], news[i], now, slack)
  end
end
local reply = { allowed, string.format("%.17g", now) }
for i = 1, #KEYS do
  reply[i + 2] = raws[i]
end
return reply
