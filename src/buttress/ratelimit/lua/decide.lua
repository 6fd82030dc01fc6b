-- decide.lua: one or more hierarchical decisions, in order, each with every one of its scopes
-- at once (common.lua is loaded in front).
--
-- KEYS      every storage key the decisions touch, each once (all in one hash slot: see
--           docs/deployment.md)
-- ARGV[1]   the request (see common.lua): the clock, TTL slack, then each decision's cost,
--           commit or peek, and its scopes (a key's index, the algorithm and its parameters)
--
-- The decisions are decided one after another, exactly as if each were its own call: each
-- sees the states the ones before it left, and each is all-or-nothing over its scopes (a
-- refusal consumes nothing anywhere). Every key is read once and written once, at the end.
-- Returns one string (see common.lua): the time decided at (seconds), then per decision
-- whether every scope admitted and each of its keys' states as read before deciding. A value
-- that is no state of its scope's algorithm is decided on as spent (and, by a committing
-- decision, stored so).

local request = ARGV[1]
local given, at, slack, count, pos = struct.unpack("<BddH", request)
local now = given == 1 and at or clock(false, 0)

-- One decision of one scope, the common case of a lone caller: the same decision as the loop
-- below makes, without its bookkeeping for keys shared between scopes and decisions (a fifth
-- of the server's time for such a call).
if count == 1 and #KEYS == 1 then
  local cost, commit, n, at_scope = struct.unpack("<dBB", request, pos)
  if n == 1 then
    local _, code, p1, p2 = struct.unpack("<HBdd", request, at_scope)
    local kind = KIND[code]
    local raw = redis.call("GET", KEYS[1])
    local state, covered = decode(raw, kind)
    local flags, before = 0, "\0"
    if state == false then
      state, covered, flags = spent(kind, p1, p2, now), nil, 2
      before = string.char(#state + 128) .. pack_state(state)
    elseif state ~= nil then
      before = string.char(#state) .. string.sub(raw, 1, #raw - 8)
    end
    local new = admit(kind, p1, p2, state, now, cost)
    if commit == 1 and (new ~= nil or flags == 2) then
      -- Admitted: its new state; refused over an unreadable value: the spent state stands in.
      store(KEYS[1], new or state, now, slack, covered)
    end
    return struct.pack("<dB", now, (new ~= nil and 1 or 0) + flags) .. before
  end
end

local raws = redis.call("MGET", unpack(KEYS))
-- Per key, once it is known: its state now (nil: none), the TTL its stored value covers, its
-- state's doubles packed as they stand now (for the replies), whether it must be written.
local states, covers, packed, dirty = {}, {}, {}, {}
local known = {}
local reply = { struct.pack("<d", now) }
-- Each decision's scopes, in tables made once and overwritten (only the first n are read).
local index, kinds, p1s, p2s, views, before, news = {}, {}, {}, {}, {}, {}, {}
for _ = 1, count do
  local cost, commit, n
  cost, commit, n, pos = struct.unpack("<dBB", request, pos)
  local flags = 0
  for s = 1, n do
    local i, code, p1, p2
    i, code, p1, p2, pos = struct.unpack("<HBdd", request, pos)
    local kind = KIND[code]
    index[s], kinds[s], p1s[s], p2s[s] = i, kind, p1, p2
    local state
    if known[i] then
      state = states[i]
      before[s] = nil
    else
      local raw = raws[i]
      local covered
      state, covered = decode(raw, kind)
      if state == false then
        -- Unreadable: decided on as spent. A committing decision stores that (later ones then
        -- read it as any state); after a peek the next decision finds it unreadable again.
        state = spent(kind, p1, p2, now)
        flags = 2
        before[s] = string.char(#state + 128) .. pack_state(state)
        if commit == 1 then
          known[i], states[i], dirty[i] = true, state, true
        end
      else
        known[i], states[i], covers[i] = true, state, covered
        before[s] = nil
        if raw then
          packed[i] = string.sub(raw, 1, #raw - 8) -- the state's doubles, without the TTL's
        end
      end
    end
    views[s] = state
    if before[s] == nil then
      if state == nil then
        before[s] = "\0"
      else
        local bytes = packed[i]
        if bytes == nil then
          bytes = pack_state(state)
          packed[i] = bytes
        end
        before[s] = string.char(#state) .. bytes
      end
    end
  end
  local allowed = 1
  for s = 1, n do
    local new = admit(kinds[s], p1s[s], p2s[s], views[s], now, cost)
    if new == nil then
      allowed = 0
      break
    end
    news[s] = new
  end
  if allowed == 1 and commit == 1 then
    for s = 1, n do
      local i = index[s]
      states[i], packed[i], dirty[i] = news[s], nil, true
    end
  end
  reply[#reply + 1] = string.char(allowed + flags)
  reply[#reply + 1] = table.concat(before, "", 1, n)
end
for i in pairs(dirty) do
  store(KEYS[i], states[i], now, slack, covers[i])
end
return table.concat(reply)
