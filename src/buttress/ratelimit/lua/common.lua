-- common.lua: what every script of buttress's Redis backend shares (loaded in front of each).
--
-- The arithmetic is transcribed from src/buttress/ratelimit/_algorithms.py, the reference:
-- the conformance tests feed the same (now, keys, cost) traces to both and require the same
-- decisions and states, to the bit. Keep the two in step, operation for operation: both use
-- IEEE doubles, so the same operations in the same order give the same bits.
--
-- Everything crosses the wire as little-endian doubles, packed with Redis's struct library
-- (exact, and cheaper than formatting and parsing text):
--   a stored value   a state's n doubles (the first is when it expires), then when the key's
--                    TTL runs out (see store)
--   decide's ARGV[1] "<BddH": 1 if the caller's time follows (tests) else 0 (the server's
--                    TIME), that time, TTL slack in ms, how many decisions; then per decision
--                    "<dBB" cost, commit (1) or peek (0), how many scopes, and per scope
--                    "<HBdd" its key's index in KEYS, its algorithm's letter and two parameters
--   decide's reply   one string: "<d" now; then per decision "<B" allowed (1 or 0, plus 2 if
--                    some state could not be read) and per scope the state read before that
--                    decision, as "<B" n (0: none; plus 128 if it stands in for an unreadable
--                    one) and n doubles
--   refund's ARGV[1] "<dBBdd" cost, (unused), 1 if the caller's time follows, that time, TTL
--                    slack; then per key "<Bdd" its algorithm's letter and two parameters
-- Algorithms, by their letter in ratelimit/_registry.py (a test holds this table to it), with
-- the two parameters Algorithm.params() gives:
--   "t"  token_bucket (GCRA): interval (seconds per unit of cost), tolerance (burst * interval);
--        its state is the TAT as two doubles (tat rounded up, low <= 0), see _algorithms.py
--   "f"  fixed_window: limit, window (seconds)
--   "s"  sliding_window (two-window counter): limit, window (seconds)

local EPSILON = 1e-9
-- 2^-52: a token bucket's low part lies within one step of its tat, at most |tat| * 2^-52.
local ULP_RATIO = 2.220446049250313e-16

-- How many doubles each algorithm's state holds (AlgorithmSpec.width in ratelimit/_registry.py).
local WIDTH = { t = 2, f = 2, s = 4 }
-- The letters as the requests send them (a byte), to their names here. (Nothing here reads
-- KEYS or ARGV: each script's body does, as the globals of a script or the arguments of a
-- Redis function; see ratelimit/_functions.py.)
local KIND = { [116] = "t", [102] = "f", [115] = "s" }

-- A stored value: the state's n doubles, then one more: until when the key's TTL runs.
-- nil for no value; false for one that cannot be a state of this algorithm (ratelimit/_format.py:
-- the wrong size, a number that is not finite, a negative count), never read as no state.
local HUGE = 1 / 0 -- (math is not reachable while a function library loads)
-- A stored value's size: the state's doubles and the TTL's.
local T_SIZE, F_SIZE, S_SIZE = 8 * (WIDTH.t + 1), 8 * (WIDTH.f + 1), 8 * (WIDTH.s + 1)

local function finite(x)
  return x == x and x ~= HUGE and x ~= -HUGE
end

local function decode(raw, kind)
  if not raw then
    return nil, nil
  end
  local size = #raw
  if kind == "t" then
    if size ~= T_SIZE then
      return false, nil
    end
    local tat, low, covered = struct.unpack("<ddd", raw)
    if not (finite(tat) and finite(low) and finite(covered))
      or low > 0.0 or low < -math.abs(tat) * ULP_RATIO then
      return false, nil
    end
    return { tat, low }, covered
  elseif kind == "f" then
    if size ~= F_SIZE then
      return false, nil
    end
    local ends, used, covered = struct.unpack("<ddd", raw)
    if not (finite(ends) and finite(used) and finite(covered)) or used < 0.0 then
      return false, nil
    end
    return { ends, used }, covered
  end
  if size ~= S_SIZE then
    return false, nil
  end
  local ends, index, current, previous, covered = struct.unpack("<ddddd", raw)
  if not (finite(ends) and finite(index) and finite(current) and finite(previous)
    and finite(covered)) or current < 0.0 or previous < 0.0 then
    return false, nil
  end
  return { ends, index, current, previous }, covered
end

-- A state's doubles, packed (what a stored value holds before its TTL's double).
local function pack_state(state)
  if #state == 2 then
    return struct.pack("<dd", state[1], state[2])
  end
  return struct.pack("<dddd", state[1], state[2], state[3], state[4])
end

local function encode(state, covered)
  if #state == 2 then
    return struct.pack("<ddd", state[1], state[2], covered)
  end
  return struct.pack("<ddddd", state[1], state[2], state[3], state[4], covered)
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

-- Python's math.ulp: the gap from |x| to the next double away from zero (2^-1074 below the
-- normal range, where frexp's exponent no longer tells the spacing).
local function ulp(x)
  x = math.abs(x)
  if x < 2.2250738585072014e-308 then
    return 4.9406564584124654e-324
  end
  local _, exponent = math.frexp(x)
  return math.ldexp(1.0, exponent - 53)
end

-- _algorithms._multiple: index * window rounded up, the first double at or after the product.
local function multiple(index, window)
  local finish = index * window
  if floordiv(finish, window) < index then
    finish = finish + ulp(finish)
  end
  return finish
end

-- FixedWindow's _window_end: the end of the window holding now, rounded up, so after now.
local function window_end(now, window)
  return multiple(floordiv(now, window) + 1.0, window)
end

-- The caller's clock (tests inject it) or the server's: one clock for every client.
local function clock(given, at)
  if given then
    return at
  end
  local t = redis.call("TIME")
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- TokenBucket's _tat: the time ahead seconds after now as (tat, low), tat rounded up.
local function tat_of(now, ahead)
  local tat = now + ahead
  if tat - now < ahead then
    tat = tat + ulp(tat)
  end
  return { tat, ahead - (tat - now) }
end

-- SlidingWindow._roll: (index, fraction, current, previous) as seen at now; the time into the
-- window is fmod's, exact (C's fmod, as Python's math.fmod).
local function roll(state, now, window)
  local index = floordiv(now, window)
  local into = math.fmod(now, window)
  if into < 0.0 then
    into = into + window
  end
  if state == nil then
    return index, into / window, 0.0, 0.0
  end
  local stored = state[2]
  if index < stored then
    return stored, 0.0, state[3], state[4]
  end
  local fraction = into / window
  if index == stored then
    return stored, fraction, state[3], state[4]
  end
  if index == stored + 1.0 then
    return index, fraction, 0.0, state[3]
  end
  return index, fraction, 0.0, 0.0
end

-- _format.spent: the state of a scope whose whole allowance was used at now (what stands in for
-- an unreadable one).
local function spent(kind, p1, p2, now)
  if kind == "t" then
    return tat_of(now, p2)
  elseif kind == "f" then
    return { window_end(now, p2), p1 }
  end
  local index = floordiv(now, p2)
  return { (index + 2.0) * p2, index, p1, 0.0 }
end

-- Algorithm.admit: the state to store if cost fits at now, else nil.
local function admit(kind, p1, p2, state, now, cost)
  if kind == "t" then
    local ahead
    if state == nil then
      ahead = cost * p1
    else
      ahead = state[1] - now + state[2]
      if not (ahead > 0.0) then
        ahead = 0.0
      end
      ahead = ahead + cost * p1
    end
    if ahead > p2 + EPSILON then
      return nil
    end
    return tat_of(now, ahead)
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
    return { window_end(now, p2), cost }
  end
  local index, fraction, current, previous = roll(state, now, p2)
  if previous * (1.0 - fraction) + current + cost > p1 + EPSILON then
    return nil
  end
  return { multiple(index + 2.0, p2), index, current + cost, previous }
end

-- Algorithm.refund: the state to store once cost is given back (nil: delete the key).
local function refund(kind, p1, p2, state, now, cost)
  if state == nil or state[1] <= now then
    return nil
  end
  if kind == "t" then
    local ahead = state[1] - now + state[2] - cost * p1
    if ahead > 0.0 then
      return tat_of(now, ahead)
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
  return { multiple(index + 2.0, p2), index, current, previous }
end

-- Store a state with a TTL that outlives it: a key vanishes once its state is worth no more than
-- no state. Setting a TTL costs Redis more than the rest of a write, so it is set with
-- HEADROOM seconds to spare and kept (KEEPTTL) while it still covers the new state: a busy key
-- has its TTL rewritten about once per HEADROOM seconds, and an idle one lingers at most that
-- much longer. At least 1 ms: at wall-clock magnitudes a tiny interval may not move time at all.
local HEADROOM = 1.0

local function store(key, state, now, slack, covered)
  if covered ~= nil and covered >= state[1] then
    redis.call("SET", key, encode(state, covered), "KEEPTTL")
    return
  end
  covered = state[1] + HEADROOM
  local ttl = math.ceil((covered - now) * 1000)
  if ttl < 1 then
    ttl = 1
  end
  redis.call("SET", key, encode(state, covered), "PX", ttl + slack)
end
