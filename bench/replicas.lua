-- wrk script of replicas.sh: a flood of mixed reads and writes through the load balancer.
-- wrk gives every thread the same number of connections, so each thread has one role:
--   writers (the first MIX_WRITE_THREADS threads): PATCH /conversations/{id} with
--     application/merge-patch+json, flipping `starred` of the ids in MIX_WRITE_IDS
--     (comma-separated; the threads share them out), each connection writing at once,
--     then every MIX_WRITE_INTERVAL_MS (plus the answer's time): a modest, steady rate;
--     on a new connection each time, as an idle one would be closed by HAProxy's
--     keep-alive timeout between writes (and wrk would count a socket error);
--   pollers (the next MIX_POLL_THREADS threads): GET MIX_POLL_PATH, one list page, as
--     fast as answers come;
--   readers (the rest): as fast as answers come, each request a read picked at random
--     from MIX_READ_PATHS (separated by spaces), many more distinct reads than Qpien's
--     budget can refresh, so the budget is what limits.
-- response() counts answers by status class and role, and stale answers (Cache-Status
-- with fwd=stale) by their detail; done() sums the threads (counts is global so that
-- thread:get can read it) and prints one line that replicas.sh parses.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

local ROLES = { "read", "poll", "write" }
local CLASSES = { "ok", "not_modified", "precondition", "limited", "server_error", "other" }

counts = {}
for _, role in ipairs(ROLES) do
  for _, class in ipairs(CLASSES) do
    counts[role .. "_" .. class] = 0
  end
end
counts.stale = 0
stale_details = {}

local role
local requests = {}
local write_ids = {}
local starred = {}
local turn = 0
local write_interval_ms = 0
local connections_per_thread = 0

function init(_)
  local write_threads = tonumber(os.getenv("MIX_WRITE_THREADS"))
  local poll_threads = tonumber(os.getenv("MIX_POLL_THREADS"))
  if thread_no <= write_threads then
    role = "write"
    write_interval_ms = tonumber(os.getenv("MIX_WRITE_INTERVAL_MS"))
    connections_per_thread = tonumber(os.getenv("MIX_CONNECTIONS_PER_THREAD"))
    local k = 0
    for id in string.gmatch(os.getenv("MIX_WRITE_IDS"), "[^,]+") do
      if k % write_threads == thread_no - 1 then
        table.insert(write_ids, id)
      end
      k = k + 1
    end
  elseif thread_no <= write_threads + poll_threads then
    role = "poll"
    requests = { wrk.format("GET", os.getenv("MIX_POLL_PATH")) }
  else
    role = "read"
    for path in string.gmatch(os.getenv("MIX_READ_PATHS"), "%S+") do
      table.insert(requests, wrk.format("GET", path))
    end
    -- A different sequence per thread, the same from run to run.
    math.randomseed(thread_no)
  end
end

function request()
  if role == "write" then
    turn = turn % #write_ids + 1
    local id = write_ids[turn]
    starred[id] = not starred[id]
    return wrk.format("PATCH", "/conversations/" .. id,
      { ["Content-Type"] = "application/merge-patch+json", ["Connection"] = "close" },
      starred[id] and '{"starred":true}' or '{"starred":false}')
  elseif role == "poll" then
    return requests[1]
  end
  return requests[math.random(#requests)]
end

-- wrk asks before every request of every thread, the first of each connection included.
-- Readers and pollers never wait; a writer's connections send their first write at once
-- (the first calls of the thread, one per connection), then one every interval.
local delays = 0
function delay()
  if role ~= "write" then
    return 0
  end
  delays = delays + 1
  if delays <= connections_per_thread then
    return 0
  end
  return write_interval_ms
end

local function class_of(status)
  if status == 200 then
    return "ok"
  elseif status == 304 then
    return "not_modified"
  elseif status == 412 then
    return "precondition"
  elseif status == 429 then
    return "limited"
  elseif status >= 500 then
    return "server_error"
  end
  return "other"
end

function response(status, headers, _)
  local name = role .. "_" .. class_of(status)
  counts[name] = counts[name] + 1
  local cache_status = headers["cache-status"] or headers["Cache-Status"] or ""
  if string.find(cache_status, "fwd=stale", 1, true) then
    counts.stale = counts.stale + 1
    local detail = string.match(cache_status, "detail=([%w%-]+)") or "none"
    stale_details[detail] = (stale_details[detail] or 0) + 1
  end
end

function done(summary, latency, _)
  local total = {}
  local details = {}
  for _, thread in ipairs(threads) do
    for name, value in pairs(thread:get("counts")) do
      total[name] = (total[name] or 0) + value
    end
    for name, value in pairs(thread:get("stale_details")) do
      details[name] = (details[name] or 0) + value
    end
  end
  local fields = {}
  for name, value in pairs(total) do
    table.insert(fields, name .. "=" .. value)
  end
  table.sort(fields)
  local stale_by_detail = {}
  for name, value in pairs(details) do
    table.insert(stale_by_detail, name .. ":" .. value)
  end
  table.sort(stale_by_detail)
  local e = summary.errors
  io.write(string.format(
    "MIX requests=%d duration_us=%d p50_us=%d p99_us=%d socket_errors=%d %s stale_by_detail=%s\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.connect + e.read + e.write + e.timeout, table.concat(fields, " "),
    #stale_by_detail > 0 and table.concat(stale_by_detail, ",") or "-"))
end
