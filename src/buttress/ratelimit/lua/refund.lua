-- refund.lua: give cost back to every scope (common.lua is loaded in front).
--
-- KEYS[i]   the storage key of scope i
-- ARGV[1]   the request (see common.lua; its commit flag is ignored)
--
-- Returns 0, or 1 if some value was no state of its scope's algorithm: the refund is then
-- taken from a spent state (see decide.lua). A key left with nothing to remember is deleted.

local cost, _, given, at, slack, scopes = request(ARGV[1])
local now = clock(given, at)
local raws = redis.call("MGET", unpack(KEYS))
local unreadable = 0
for i = 1, #KEYS do
  local scope = scopes[i]
  local state, covered = decode(raws[i], scope[1])
  if state == false then
    state = spent(scope[1], scope[2], scope[3], now)
    unreadable = 1
  end
  local new = refund(scope[1], scope[2], scope[3], state, now, cost)
  if new == nil then
    redis.call("DEL", KEYS[i])
  else
    store(KEYS[i], new, now, slack, covered)
  end
end
return unreadable
