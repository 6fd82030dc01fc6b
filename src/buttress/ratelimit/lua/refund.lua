-- refund.lua: give cost back to every scope (common.lua is loaded in front).
--
-- KEYS[i]   the storage key of scope i
-- ARGV[1]   the request (see common.lua; its commit flag is ignored)
--
-- Returns 0, or 1 if some value was no state of its scope's algorithm: the refund is then
-- taken from a spent state (see decide.lua). A key left with nothing to remember is deleted.

-- The request: its header, then (code, p1, p2) per key.
local function request(argv, n)
  local cost, commit, given, at, slack, pos = struct.unpack("<dBBdd", argv)
  local scopes = {}
  for i = 1, n do
    local code, p1, p2
    code, p1, p2, pos = struct.unpack("<Bdd", argv, pos)
    scopes[i] = { KIND[code], p1, p2 }
  end
  return cost, commit == 1, given == 1, at, slack, scopes
end

local cost, _, given, at, slack, scopes = request(ARGV[1], #KEYS)
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
