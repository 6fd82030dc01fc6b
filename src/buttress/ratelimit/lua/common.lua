-- common.lua: what every script of buttress's Redis backend shares (loaded in front of each).
--
-- The arithmetic is transcribed from src/buttress/ratelimit/_algorithms.py, the reference:
-- the conformance tests feed the same (now, keys, cost) traces to both and require the same
-- decisions and states. Keep the two in step, operation for operation: both use IEEE doubles,
-- so the same operations in the same order give the same bits.
--
-- A state is stored as one string of numbers separated by spaces, written with %.17g so that
-- every double survives the round trip exactly; its first number is when it expires.
-- Algorithms (one letter, then two parameters, as Algorithm.params() gives them):
--   "t"  token bucket (GCRA): interval (seconds per unit of cost), tolerance (burst * interval)
--   "f"  fixed window: limit, window (seconds)
--   "s"  sliding window (two-window counter): limit, window (seconds)

local EPSILON = 1e-9

local function decode(raw)
  if not raw then
    return nil
  end
  local state = {}
  for part in string.gmatch(raw, "%S+") do
    state[#state + 1] = tonumber(part)
  end
  return state
end

local function encode(state)
  local parts = {}
  for i = 1, #state do
    parts[i] = string.format("%.17g", state[i])
  end
  return table.concat(parts, " ")
end

-- Python's float floor division (Objects/floatobject.c), so window indexes match to the bit.
local function floordiv(x, y)
  local mod = math.fmod(x, y)
  local div = (x - mod) / y
  if mod ~= 0 and ((y < 0) ~= (mod < 0)) then
    div = div - 1.0
  end
  if div == 0 then
    return 0.0
  end
  local floored = math.floor(div)
  if div - floored > 0.5 then
    floored = floored + 1.0
  end
  return floored
end

-- The caller's clock (tests inject it) or the server's: one clock for every client.
local function clock(arg)
  if arg ~= "" then
    return tonumber(arg)
  end
  local t = redis.call("TIME")
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- SlidingWindow._roll: (index, fraction, current, previous) as seen at now.
local function roll(state, now, window)
  local index = floordiv(now, window)
  if state == nil then
    return index, (now - index * window) / window, 0.0, 0.0
  end
  local stored = state[2]
  if index <= stored then
    local fraction = (now - stored * window) / window
    if fraction < 0.0 then
      fraction = 0.0
    end
    return stored, fraction, state[3], state[4]
  end
  local fraction = (now - index * window) / window
  if index == stored + 1.0 then
    return index, fraction, 0.0, state[3]
  end
  return index, fraction, 0.0, 0.0
end

-- Algorithm.admit: the state to store if cost fits at now, else nil.
local function admit(kind, p1, p2, state, now, cost)
  if kind == "t" then
    local new
    if state ~= nil and state[1] > now then
      new = state[1] + cost * p1
    else
      new = now + cost * p1
    end
    if new - now <= p2 + EPSILON then
      return { new }
    end
    return nil
  elseif kind == "f" then
    if state ~= nil and state[1] > now then
      local used = state[2] + cost
      if used <= p1 + EPSILON then
        return { state[1], used }
      end
      return nil
    end
    if cost > p1 + EPSILON then
      return nil
    end
    return { (floordiv(now, p2) + 1.0) * p2, cost }
  end
  local index, fraction, current, previous = roll(state, now, p2)
  if previous * (1.0 - fraction) + current + cost > p1 + EPSILON then
    return nil
  end
  return { (index + 2.0) * p2, index, current + cost, previous }
end

-- Algorithm.refund: the state to store once cost is given back (nil: delete the key).
local function refund(kind, p1, p2, state, now, cost)
  if state == nil or state[1] <= now then
    return nil
  end
  if kind == "t" then
    local tat = state[1] - cost * p1
    if tat > now then
      return { tat }
    end
    return nil
  elseif kind == "f" then
    local used = state[2] - cost
    if used > EPSILON then
      return { state[1], used }
    end
    return nil
  end
  local index, _, current, previous = roll(state, now, p2)
  local taken = math.min(current, cost)
  current = current - taken
  previous = math.max(0.0, previous - (cost - taken))
  if current <= EPSILON and previous <= EPSILON then
    return nil
  end
  return { (index + 2.0) * p2, index, current, previous }
end

-- Store a state until it expires (plus slack ms), when it is worth no more than no state.
local function store(key, state, now, slack)
  redis.call("SET", key, encode(state), "PX", math.ceil((state[1] - now) * 1000) + slack)
end
