-- refund.lua: give cost back to every scope (common.lua is loaded in front).
--
-- KEYS[i]   the storage key of scope i
-- ARGV[1]   the request (see common.lua; its commit flag is ignored)
--
-- Returns nothing. A key left with nothing to remember is deleted.

local cost, _, given, at, slack, scopes = request(ARGV[1])
local now = clock(given, at)
local raws = redis.call("MGET", unpack(KEYS))
for i = 1, #KEYS do
  local scope = scopes[i]
  local state, covered = decode(raws[i])
  local new = refund(scope[1], scope[2], scope[3], state, now, cost)
  if new == nil then
    redis.call("DEL", KEYS[i])
  else
    store(KEYS[i], new, now, slack, covered)
  end
end
return 0
