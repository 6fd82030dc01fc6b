-- decide.lua: one hierarchical decision, every scope at once (common.lua is loaded in front).
--
-- KEYS[i]   the storage key of scope i (all in one hash slot: see docs/deployment.md)
-- ARGV[1]   the request (see common.lua): cost, commit or peek, the clock, TTL slack, and
--           each scope's algorithm and parameters
--
-- Returns one string (see common.lua): whether every scope admitted, the time decided at
-- (seconds), and each key's state as read before deciding. New states are written only if
-- every scope admits and the request commits: a refusal consumes nothing anywhere. A value
-- that is no state of its scope's algorithm is decided on as spent (and, committing, stored so).

local cost, commit, given, at, slack, scopes = request(ARGV[1])
local now = clock(given, at)
local raws = redis.call("MGET", unpack(KEYS))
local states = {}
local covers = {}
local unreadable = nil
for i = 1, #KEYS do
  local scope = scopes[i]
  local state, covered = decode(raws[i], scope[1])
  if state == false then
    state = spent(scope[1], scope[2], scope[3], now)
    unreadable = unreadable or {}
    unreadable[i] = true
  end
  states[i] = state
  covers[i] = covered
end
local news = {}
local allowed = 1
for i = 1, #KEYS do
  local scope = scopes[i]
  local new = admit(scope[1], scope[2], scope[3], states[i], now, cost)
  if new == nil then
    allowed = 0
    break
  end
  news[i] = new
end
if commit then
  if allowed == 1 then
    for i = 1, #KEYS do
      store(KEYS[i], news[i], now, slack, covers[i])
    end
  elseif unreadable then
    for i in pairs(unreadable) do
      store(KEYS[i], states[i], now, slack, nil)
    end
  end
end
local reply = { struct.pack("<Bd", allowed + (unreadable and 2 or 0), now) }
for i = 1, #KEYS do
  local raw = raws[i]
  if unreadable and unreadable[i] then
    local state = states[i]
    reply[i + 1] = string.char(#state + 128) .. struct.pack("<" .. string.rep("d", #state), unpack(state))
  elseif raw then
    local n = #raw / 8 - 1 -- the state's doubles, without the TTL's
    reply[i + 1] = string.char(n) .. string.sub(raw, 1, 8 * n)
  else
    reply[i + 1] = "\0"
  end
end
return table.concat(reply)
