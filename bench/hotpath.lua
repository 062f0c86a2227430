-- wrk script used by every scenario of hotpath.sh, so each target sees the same client
-- work. BENCH_TOKENS (default 1) bearer tokens "bench-token-1".."bench-token-N" take
-- turns, one per request, to show what per-credential state costs. done() prints one
-- line that hotpath.sh parses, independent of how wrk words its human summary.

local count = tonumber(os.getenv("BENCH_TOKENS") or "1")
local formatted = {}
local sent = 0

function request()
  sent = sent + 1
  local k = sent % count + 1
  -- Formatting once per token keeps wrk's own CPU low and the same for every target.
  local raw = formatted[k]
  if raw == nil then
    raw = wrk.format(nil, nil, { ["Authorization"] = "Bearer bench-token-" .. k })
    formatted[k] = raw
  end
  return raw
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.status, e.connect + e.read + e.write + e.timeout))
end
