-- wrk script of polling.sh: many pollers of one list page and of a few items at once.
-- wrk gives every thread of POLL_THREADS the same number of connections; the first
-- POLL_LIST_THREADS threads poll POLL_LIST_PATH, the others share out the items of
-- POLL_ITEM_IDS (comma-separated), each thread polling its share in turn, one item per
-- request: so exactly those items are read, each as often, and with as many item threads
-- as items every connection keeps to one item.
-- response() counts statuses and stale answers (Cache-Status with fwd=stale) per thread;
-- done() sums them (counts is global so that thread:get can read it) and prints one
-- line that polling.sh parses.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

local requests = {}
local turn = 0
counts = { ok = 0, not_modified = 0, limited = 0, other = 0, stale = 0, list = 0, item = 0 }
stale_details = {} -- stale answers by the detail of their Cache-Status
local is_list

function init(_)
  local list_threads = tonumber(os.getenv("POLL_LIST_THREADS"))
  local item_threads = tonumber(os.getenv("POLL_THREADS")) - list_threads
  is_list = thread_no <= list_threads
  if is_list then
    requests = { wrk.format("GET", os.getenv("POLL_LIST_PATH")) }
  else
    local k = 0
    for id in string.gmatch(os.getenv("POLL_ITEM_IDS"), "[^,]+") do
      if k % item_threads == thread_no - list_threads - 1 then
        table.insert(requests, wrk.format("GET", "/conversations/" .. id))
      end
      k = k + 1
    end
  end
end

function request()
  turn = turn % #requests + 1
  return requests[turn]
end

function response(status, headers, _)
  if status == 200 then
    counts.ok = counts.ok + 1
  elseif status == 304 then
    counts.not_modified = counts.not_modified + 1
  elseif status == 429 then
    counts.limited = counts.limited + 1
  else
    counts.other = counts.other + 1
  end
  local cache_status = headers["cache-status"] or headers["Cache-Status"] or ""
  if string.find(cache_status, "fwd=stale", 1, true) then
    counts.stale = counts.stale + 1
    local detail = string.match(cache_status, "detail=([%w%-]+)") or "none"
    stale_details[detail] = (stale_details[detail] or 0) + 1
  end
  if is_list then
    counts.list = counts.list + 1
  else
    counts.item = counts.item + 1
  end
end

function done(summary, latency, _)
  local total = { ok = 0, not_modified = 0, limited = 0, other = 0, stale = 0, list = 0, item = 0 }
  local details = {}
  for _, thread in ipairs(threads) do
    for name, value in pairs(thread:get("counts")) do
      total[name] = total[name] + value
    end
    for name, value in pairs(thread:get("stale_details")) do
      details[name] = (details[name] or 0) + value
    end
  end
  local stale_by_detail = {}
  for name, value in pairs(details) do
    table.insert(stale_by_detail, name .. ":" .. value)
  end
  table.sort(stale_by_detail)
  local e = summary.errors
  io.write(string.format(
    "POLL requests=%d duration_us=%d p50_us=%d p99_us=%d ok=%d not_modified=%d limited=%d other=%d stale=%d list=%d item=%d socket_errors=%d stale_by_detail=%s\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    total.ok, total.not_modified, total.limited, total.other, total.stale,
    total.list, total.item, e.connect + e.read + e.write + e.timeout,
    #stale_by_detail > 0 and table.concat(stale_by_detail, ",") or "-"))
end
