-- One credential's rate budget, shared by every replica: the arithmetic of
-- src/state/window.rs in one atomic step, on Redis's clock.
--
-- KEYS[1]  a hash: field "blocked" (ms until which Qpien said no), and per one-second
--          bucket "b<k>" the grants made in ((k-1) s, k s]; each counts until k s + 60 s.
-- ARGV[1]  "admit": take a slot under ARGV[2] (the limit), waiting at most ARGV[3] ms;
--          "block": Qpien's window is used up for ARGV[2] ms more.
-- Returns  {status, wait_ms, used, reset_ms, junk}: status 0 now, 1 after wait_ms (the
--          slot is reserved), 2 refused (retry after wait_ms); used, the grants that count
--          after this one; reset_ms, until the oldest of them stops counting; junk, the
--          values dropped as no replica writes them (another type, a field that is no
--          number, a bucket or a block further ahead than any replica sets one).
local WINDOW, GRANULE, LONGEST_BLOCK = 60000, 1000, 3600000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local junk = 0
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'hash' then
  redis.call('DEL', KEYS[1])
  junk = 1
end

if ARGV[1] == 'block' then
  local until_ms = now + tonumber(ARGV[2])
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked') or '0') or 0
  if until_ms > blocked or blocked > now + LONGEST_BLOCK then
    redis.call('HSET', KEYS[1], 'blocked', until_ms)
  end
  redis.call('PEXPIRE', KEYS[1], math.max(WINDOW, until_ms - now) + GRANULE)
  return {0, 0, 0, 0, junk}
end

local limit, max_wait = tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
local buckets, total, blocked = {}, 0, 0
for i = 1, #fields, 2 do
  local name, value = fields[i], tonumber(fields[i + 1])
  local k = tonumber(string.match(name, '^b(%d+)$') or '')
  if name == 'blocked' and value and value <= now + LONGEST_BLOCK then
    blocked = value
  elseif k and value and value >= 0 and k * GRANULE <= now + WINDOW then
    if k * GRANULE + WINDOW <= now then
      redis.call('HDEL', KEYS[1], name)
    else
      buckets[#buckets + 1] = {k, value}
      total = total + value
    end
  else
    redis.call('HDEL', KEYS[1], name)
    junk = junk + 1
  end
end
table.sort(buckets, function(a, b) return a[1] < b[1] end)

-- When `count` of the grants held have stopped counting.
local function frees_at(count)
  local freed = 0
  for _, bucket in ipairs(buckets) do
    freed = freed + bucket[2]
    if freed >= count then
      return bucket[1] * GRANULE + WINDOW
    end
  end
  return now + WINDOW
end

local start = math.max(now, blocked)
if limit < 1 then
  start = now + WINDOW
elseif total >= limit then
  start = math.max(start, frees_at(total - limit + 1))
end
local wait, status = start - now, 2
if limit >= 1 and wait <= max_wait then
  local k = math.ceil(start / GRANULE)
  redis.call('HINCRBY', KEYS[1], 'b' .. k, 1)
  buckets[#buckets + 1] = {k, 1}
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  total = total + 1
  status = (wait == 0) and 0 or 1
end
-- Kept as long as its newest grant or the block counts, no longer.
local last = blocked
if #buckets > 0 then
  last = math.max(last, buckets[#buckets][1] * GRANULE + WINDOW)
end
redis.call('PEXPIRE', KEYS[1], math.max(last - now, 0) + GRANULE)
local reset = 0
if total > 0 then
  reset = frees_at(1) - now
end
return {status, wait, total, reset, junk}
