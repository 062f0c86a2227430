#!/usr/bin/env bash
# A flood of junk bearers: for DURATION seconds, every request to the facade (release
# build, pass-through mode, default settings, over a standalone sandbox) carries a bearer
# never sent before, CONNECTIONS at a time, while a known good token reads once a second.
# Before it, an nginx proxy hop over a canned upstream (as in hotpath.sh) runs HOP_DURATION
# seconds of ordinary reads, for its CPU per request. Qpien's calls are counted by the
# sandbox (GET /stats). Prints one table: answers by status, the facade's RSS at the start
# and end (and the largest sampled), its CPU per request against the hop's, Qpien's calls
# against what the caps allow, and the good token's answers.
#
#   bash bench/junk-tokens.sh        # DURATION=300 CONNECTIONS=32 THREADS=2 HOP_DURATION=20
#
# Not part of CI. Needs wrk, nginx, curl and jq; installs what it lacks.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

DURATION=${DURATION:-300}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
HOP_DURATION=${HOP_DURATION:-20}
# The facade's defaults, which the run keeps: UNPROVEN_CREDENTIALS_PER_MINUTE_PER_CLIENT
# (every wrk connection is one client, 127.0.0.1) and UNPROVEN_CREDENTIALS_PER_MINUTE.
PER_CLIENT=60
CONVERSATION_ID=6650a1000000000000000001

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out
CLK_TCK=$(getconf CLK_TCK)
PATH=$PATH:/usr/sbin # nginx lives there, outside a non-root PATH

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'junk-tokens: %s\n' "$*" >&2
    exit 1
}
for setting in DURATION CONNECTIONS THREADS HOP_DURATION; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
TMP=$(mktemp -d -t qpien-junk-tokens.XXXXXX)

# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"

trap stop_all_and_clean EXIT
trap 'exit 130' INT TERM

install_commands wrk:wrk nginx:nginx curl:curl jq:jq pgrep:procps
log "building the release binaries (cargo build --release --locked --bin qpien-rest --bin qpien-sandbox)"
(cd "$REPO_DIR" && cargo build --release --locked --bin qpien-rest --bin qpien-sandbox --quiet)
FACADE_BIN=$REPO_DIR/target/release/qpien-rest
SANDBOX_BIN=$REPO_DIR/target/release/qpien-sandbox

# ---------------------------------------------------------------- the hop's CPU per request

body=$(<"$BENCH_DIR/canned-conversation.json")
start_nginx canned "$BENCH_DIR/canned-upstream.conf.in" "@BODY@=$body"
CANNED_PORT=$STARTED_PORT
start_nginx hop "$BENCH_DIR/nginx-hop.conf.in" "@UPSTREAM_PORT@=$CANNED_PORT" "@WORKERS@=$(nproc)"
HOP_PID=$STARTED_PID HOP_PORT=$STARTED_PORT
read -r -a hop_pids <<<"$(family "$HOP_PID")"
log "nginx hop: ${HOP_DURATION}s of reads, $CONNECTIONS connections"
hop_before=$(cpu_ticks "${hop_pids[@]}")
wrk -t "$THREADS" -c "$CONNECTIONS" -d "${HOP_DURATION}s" -s "$BENCH_DIR/hotpath.lua" \
    "http://127.0.0.1:$HOP_PORT/conversations/$CONVERSATION_ID" >"$TMP/wrk-hop.txt" 2>&1 ||
    die "wrk failed: $(cat "$TMP/wrk-hop.txt")"
hop_ticks=$(($(cpu_ticks "${hop_pids[@]}") - hop_before))
hop_requests=$(bench_field "$TMP/wrk-hop.txt" requests)
hop_rps=$(awk -v r="$hop_requests" -v d="$(bench_field "$TMP/wrk-hop.txt" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
stop "$HOP_PID"

# ---------------------------------------------------------------- the flood

sandbox_requests() { curl -fsS "http://127.0.0.1:$SANDBOX_PORT/stats" | jq -r .requests; }
# A counter of the facade's /metrics, summed over the lines matching $1.
facade_metric() {
    curl -fsS "$URL/metrics" | awk -v pattern="$1" '$0 ~ pattern && $1 !~ /^#/ { s += $2 } END { print s + 0 }'
}

start_on_free_port sandbox SANDBOX_PORT SANDBOX_RATE_LIMIT_PER_MINUTE=100 "$SANDBOX_BIN"
SANDBOX_PORT=$STARTED_PORT
start_on_free_port facade PORT HOST=127.0.0.1 SHUTDOWN_DRAIN_SECS=0 \
    QPIEN_API_URL="http://127.0.0.1:$SANDBOX_PORT/api/v1" "$FACADE_BIN"
FACADE_PID=$STARTED_PID
URL=http://127.0.0.1:$STARTED_PORT
GOOD=$(curl -fsS "http://127.0.0.1:$SANDBOX_PORT/api/v1" -H 'Content-Type: application/json' \
    -d '{"query":"mutation { generateOAuthToken(clientId: \"demo-client\", clientSecret: \"demo-secret\") { accessToken } }"}' |
    jq -r .data.generateOAuthToken.accessToken)
[[ -n $GOOD && $GOOD != null ]] || die "the sandbox gave no token"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $GOOD" "$URL/conversations/$CONVERSATION_ID")
[[ $status == 200 ]] || die "the good token's first read answered $status"

# The good token reads once a second and the facade's RSS is sampled, until told to stop.
good_reader() {
    local code seconds
    while [[ ! -e $TMP/stop ]]; do
        read -r code seconds < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
            -H "Authorization: Bearer $GOOD" "$URL/conversations/$CONVERSATION_ID" || echo "000 0")
        echo "$code $seconds" >>"$TMP/good.txt"
        rss_kib "$FACADE_PID" >>"$TMP/rss.txt"
        sleep 1
    done
}

rss_start=$(rss_kib "$FACADE_PID")
calls_before=$(sandbox_requests)
misses_before=$(facade_metric '^qpien_rest_reads_total.*result="miss"')
cpu_before=$(cpu_ticks "$FACADE_PID")
good_reader &
READER_PID=$!
STARTED+=("$READER_PID")
log "facade: ${DURATION}s of junk bearers, $CONNECTIONS connections; the good token reads once a second"
JUNK_RUN=$RANDOM wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" -s "$BENCH_DIR/junk-tokens.lua" \
    "$URL/conversations/$CONVERSATION_ID" >"$TMP/wrk-junk.txt" 2>&1 ||
    die "wrk failed: $(cat "$TMP/wrk-junk.txt")"
facade_ticks=$(($(cpu_ticks "$FACADE_PID") - cpu_before))
rss_end=$(rss_kib "$FACADE_PID")
touch "$TMP/stop"
wait "$READER_PID" 2>/dev/null || true
forget "$READER_PID"
calls=$(($(sandbox_requests) - calls_before))
good_calls=$(($(facade_metric '^qpien_rest_reads_total.*result="miss"') - misses_before))
remembered=$(facade_metric '^qpien_rest_bearer_refusals_total.*reason="rejected"')
capped=$(facade_metric '^qpien_rest_bearer_refusals_total.*-cap"')

# ---------------------------------------------------------------- report

W=$TMP/wrk-junk.txt
requests=$(bench_field "$W" requests)
rps=$(awk -v r="$requests" -v d="$(bench_field "$W" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
# A strict sliding minute admits at most PER_CLIENT in any 60 s: over the run, that many
# per started minute, and the good token's own calls besides.
allowed=$((PER_CLIENT * ((DURATION + 59) / 60)))
good_total=$(wc -l <"$TMP/good.txt")
good_ok=$(awk '$1 == 200' "$TMP/good.txt" | wc -l)
good_slowest=$(awk '{ if ($2 > m) m = $2 } END { printf "%.0f", m * 1000 }' "$TMP/good.txt")
rss_max=$(sort -n "$TMP/rss.txt" | tail -n 1)
tick_us=$((1000000 / CLK_TCK))
facade_cpu=$(awk -v t="$facade_ticks" -v u="$tick_us" -v r="$requests" 'BEGIN { printf "%.1f", t * u / r }')
hop_cpu=$(awk -v t="$hop_ticks" -v u="$tick_us" -v r="$hop_requests" 'BEGIN { printf "%.1f", t * u / r }')
ratio=$(awk -v a="$facade_cpu" -v b="$hop_cpu" 'BEGIN { printf "%.2f", a / b }')
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%d-%H%M%S)
report=$(
    echo "### Junk bearers: a fresh bearer per request, ${DURATION}s, $CONNECTIONS connections, $THREADS wrk threads"
    echo
    echo "commit $(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet HEAD -- src || echo ' (src modified)')," \
        "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); pass-through mode, default settings."
    echo
    echo "| figure | measured | target |"
    echo "|---|---:|---|"
    echo "| junk requests (req/s) | $requests ($rps) | |"
    echo "| answered 401 / 429 / other / socket errors | $(bench_field "$W" s401) / $(bench_field "$W" s429) / $(bench_field "$W" other) / $(bench_field "$W" socket_errors) | |"
    echo "| p50 / p99 latency, ms | $(awk -v a="$(bench_field "$W" p50_us)" -v b="$(bench_field "$W" p99_us)" 'BEGIN { printf "%.2f / %.2f", a / 1000, b / 1000 }') | |"
    echo "| refused by the facade (metrics): remembered 401 / capped | $remembered / $capped | |"
    echo "| facade RSS at start / end / largest sampled, MiB | $(mib "$rss_start") / $(mib "$rss_end") / $(mib "$rss_max") | end ≤ 64 |"
    echo "| facade CPU µs per junk request | $facade_cpu | |"
    echo "| nginx hop CPU µs per read (${HOP_DURATION}s, $hop_rps req/s) | $hop_cpu | |"
    echo "| facade ÷ hop, CPU per request | $ratio | ≤ 3 |"
    echo "| Qpien calls (sandbox) / of them the good token's | $calls / $good_calls | junk ≤ $allowed ($PER_CLIENT per started minute) |"
    echo "| good token: reads answered 200 / sent, slowest ms | $good_ok / $good_total, $good_slowest | all 200 |"
)
echo
echo "$report"
echo "$report" >"$OUT_DIR/junk-tokens-$stamp.md"
echo
echo "table saved to bench/out/junk-tokens-$stamp.md"
