-- wrk script of junk-tokens.sh: every request carries a bearer never sent before
-- ("junk-<run>-<thread>-<n>"), as a flood of made-up tokens would. done() prints one
-- line junk-tokens.sh parses: requests, and answers by status.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = "Bearer junk-" .. (os.getenv("JUNK_RUN") or "0") .. "-" .. id .. "-"
  statuses = {}
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, { ["Authorization"] = prefix .. counter })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d s401=%d s429=%d other=%d socket_errors=%d\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    by_status[401] or 0, by_status[429] or 0,
    summary.requests - (by_status[401] or 0) - (by_status[429] or 0),
    e.connect + e.read + e.write + e.timeout))
end
