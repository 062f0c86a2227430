-- wrk script of replicas.sh: a flood of mixed reads and writes through the load balancer.
-- wrk gives every thread the same number of connections, so each thread has one role:
--   writers (the first MIX_WRITE_THREADS threads): PATCH /conversations/{id} with
--     application/merge-patch+json, flipping `starred` of the ids in MIX_WRITE_IDS
--     (comma-separated; the threads share them out) at a modest, steady rate: one
--     every MIX_WRITE_INTERVAL_MS per writer connection on average, by the clock. A
--     writer connection sends a request every MIX_WRITER_TICK_MS: a write when one is
--     due, else GET /healthz (no Qpien call), which keeps the connection in use:
--     HAProxy closes a connection idle for 10 s with a 408 (timeout http-request,
--     http-keep-alive), and wrk would take that for an answer. Those keep-alive answers
--     are counted apart (`keepalive`); wrk's latency figures include them, a few dozen
--     in hundreds of thousands;
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
counts.keepalive = 0
stale_details = {}
other_statuses = {} -- answers of the class "other" by status

local role
local requests = {}
local write_ids = {}
local starred = {}
local turn = 0
local writer_tick_ms = 0
local write_period_s = 0 -- between two writes of this thread
local next_write_at = 0
local keepalive_request

function init(_)
  local write_threads = tonumber(os.getenv("MIX_WRITE_THREADS"))
  local poll_threads = tonumber(os.getenv("MIX_POLL_THREADS"))
  if thread_no <= write_threads then
    role = "write"
    writer_tick_ms = tonumber(os.getenv("MIX_WRITER_TICK_MS"))
    write_period_s = tonumber(os.getenv("MIX_WRITE_INTERVAL_MS")) / 1000
      / tonumber(os.getenv("MIX_CONNECTIONS_PER_THREAD"))
    next_write_at = os.time()
    keepalive_request = wrk.format("GET", "/healthz")
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
    -- os.time() counts whole seconds: a write may come up to a second late, the next
    -- one is still due on time.
    if os.time() < next_write_at then
      return keepalive_request
    end
    next_write_at = next_write_at + write_period_s
    turn = turn % #write_ids + 1
    local id = write_ids[turn]
    starred[id] = not starred[id]
    return wrk.format("PATCH", "/conversations/" .. id,
      { ["Content-Type"] = "application/merge-patch+json" },
      starred[id] and '{"starred":true}' or '{"starred":false}')
  elseif role == "poll" then
    return requests[1]
  end
  return requests[math.random(#requests)]
end

-- wrk asks before every request of every thread, the first of each connection included.
-- Readers and pollers never wait.
function delay()
  return role == "write" and writer_tick_ms or 0
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

local KEEPALIVE_BODY = '{"status":"ok"}'

function response(status, headers, body)
  if role == "write" and status == 200 and body == KEEPALIVE_BODY then
    counts.keepalive = counts.keepalive + 1
    return
  end
  local class = class_of(status)
  counts[role .. "_" .. class] = counts[role .. "_" .. class] + 1
  if class == "other" then
    other_statuses[status] = (other_statuses[status] or 0) + 1
  end
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
  local others = {}
  for _, thread in ipairs(threads) do
    for name, value in pairs(thread:get("counts")) do
      total[name] = (total[name] or 0) + value
    end
    for name, value in pairs(thread:get("stale_details")) do
      details[name] = (details[name] or 0) + value
    end
    for status, value in pairs(thread:get("other_statuses")) do
      others[status] = (others[status] or 0) + value
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
  local other_by_status = {}
  for status, value in pairs(others) do
    table.insert(other_by_status, status .. ":" .. value)
  end
  table.sort(other_by_status)
  local e = summary.errors
  io.write(string.format(
    "MIX requests=%d duration_us=%d p50_us=%d p99_us=%d socket_errors=%d %s stale_by_detail=%s other_by_status=%s\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.connect + e.read + e.write + e.timeout, table.concat(fields, " "),
    #stale_by_detail > 0 and table.concat(stale_by_detail, ",") or "-",
    #other_by_status > 0 and table.concat(other_by_status, ",") or "-"))
end
