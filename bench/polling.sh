#!/usr/bin/env bash
# Polling benchmark: 50 pollers of one list page and 10 pollers of 10 different items, all
# at once, against the facade in service mode over a standalone sandbox with Qpien's rate
# limit and latency. Three runs, each on a fresh sandbox and facade:
#   A  cache off (READ_CACHE_TTL_MS=0), Qpien's budget of 100 a minute, DURATION seconds
#   B  cache on (READ_CACHE_TTL_MS, default 5000), the same budget, DURATION seconds
#   C  cache off with budgets that cannot run out, MISS_DURATION seconds: the CPU a miss costs
# Qpien calls are counted by the sandbox (GET /stats), never by the facade. Prints one
# markdown table and the target checks; saves both under bench/out/.
#
#   bash bench/polling.sh      # DURATION=60 MISS_DURATION=15 READ_CACHE_TTL_MS=5000 SANDBOX_LATENCY_MS=50
#
# Not part of CI: a benchmark prints figures, it does not pass or fail a build.
set -euo pipefail

DURATION=${DURATION:-60}
MISS_DURATION=${MISS_DURATION:-15}
CACHE_TTL_MS=${READ_CACHE_TTL_MS:-5000}
LATENCY_MS=${SANDBOX_LATENCY_MS:-50}
QPIEN_LIMIT=100        # Qpien's requests per minute per customer
UNLIMITED=1000000      # a budget run C cannot spend
LIST_PATH="/conversations?status=open"
LIST_POLLERS=50
ITEM_POLLERS=10
PER_THREAD=10          # wrk connections per thread: 5 list threads, 1 item thread
# The first ten seeded conversations (src/sandbox/data.rs numbers them in hex).
ITEM_IDS=$(for n in $(seq 1 "$ITEM_POLLERS"); do printf '6650a1%018x,' "$n"; done)
ITEM_IDS=${ITEM_IDS%,}
DISTINCT_READS=$((1 + ITEM_POLLERS))

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out
CLK_TCK=$(getconf CLK_TCK)

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'polling: %s\n' "$*" >&2
    exit 1
}

for setting in DURATION MISS_DURATION CACHE_TTL_MS; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
[[ $LATENCY_MS =~ ^[0-9]+$ ]] || die "SANDBOX_LATENCY_MS must be a whole number, got '$LATENCY_MS'"
TMP=$(mktemp -d -t qpien-polling.XXXXXX)

install_missing() {
    local -a packages=()
    local tool
    for tool in wrk curl jq; do command -v "$tool" >/dev/null || packages+=("$tool"); done
    command -v pgrep >/dev/null || packages+=(procps)
    ((${#packages[@]} == 0)) && return
    log "installing ${packages[*]} with apt-get (Debian packages; needs root)"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >"$TMP/apt.log" 2>&1 || {
        cat "$TMP/apt.log" >&2
        die "apt-get install ${packages[*]} failed"
    }
}

build() {
    log "building the release binaries (cargo build --release --locked --bin qpien-rest --bin qpien-sandbox)"
    (cd "$REPO_DIR" && cargo build --release --locked --bin qpien-rest --bin qpien-sandbox --quiet)
    FACADE_BIN=$REPO_DIR/target/release/qpien-rest
    SANDBOX_BIN=$REPO_DIR/target/release/qpien-sandbox
}

# ---------------------------------------------------------------- processes

# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${STARTED[@]}"; do stop "$pid"; done
    STARTED=()
    if [[ $status != 0 ]]; then log "exit status $status; logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" (a command reading PORT_UNDER_TEST from its environment) on a free port,
# retrying on another port when it cannot listen. Sets STARTED_PID and STARTED_PORT.
start_on_free_port() {
    local name=$1 logfile=$2 port pid attempt
    shift 2
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        PORT_UNDER_TEST=$port "$@" >>"$logfile" 2>&1 &
        pid=$!
        STARTED+=("$pid")
        if wait_listening "$pid" "$port"; then
            STARTED_PID=$pid STARTED_PORT=$port
            return
        fi
        stop "$pid"
        log "$name did not start on port $port (attempt $attempt)"
    done
    die "$name did not start; see $logfile"
}

run_sandbox() { # $1 rate limit; a clean environment, so nothing of the caller's leaks in
    exec env -i PATH="$PATH" SANDBOX_HOST=127.0.0.1 SANDBOX_PORT="$PORT_UNDER_TEST" \
        SANDBOX_RATE_LIMIT_PER_MINUTE="$1" SANDBOX_LATENCY_MS="$LATENCY_MS" RUST_LOG=warn \
        "$SANDBOX_BIN"
}

run_facade() { # $1 READ_CACHE_TTL_MS, $2 QPIEN_RATE_LIMIT_PER_MINUTE
    exec env -i PATH="$PATH" HOST=127.0.0.1 PORT="$PORT_UNDER_TEST" \
        QPIEN_API_URL="http://127.0.0.1:$SANDBOX_PORT/api/v1" \
        QPIEN_CLIENT_ID=demo-client QPIEN_CLIENT_SECRET=demo-secret \
        READ_CACHE_TTL_MS="$1" QPIEN_RATE_LIMIT_PER_MINUTE="$2" \
        SHUTDOWN_DRAIN_SECS=0 RUST_LOG=warn \
        "$FACADE_BIN"
}

# ---------------------------------------------------------------- readings

# "requests rateLimited list item token" from the sandbox's counters.
sandbox_counts() {
    curl -fsS "http://127.0.0.1:$SANDBOX_PORT/stats" | jq -r '[.requests, .rateLimited,
        (.operations.getConversationList // 0), (.operations.getConversation // 0),
        (.operations.generateOAuthToken // 0)] | map(tostring) | join(" ")'
}

# "hit miss coalesced stale" from the facade's qpien_rest_reads_total, both reads summed.
read_results() {
    curl -fsS "http://127.0.0.1:$FACADE_PORT/metrics" | awk '
        /^qpien_rest_reads_total\{/ {
            for (r in n) if (index($0, "result=\"" r "\"")) n[r] += $NF
        }
        BEGIN { n["hit"] = n["miss"] = n["coalesced"] = n["stale"] = 0 }
        END { print n["hit"], n["miss"], n["coalesced"], n["stale"] }'
}

# Every distinct read once, which must answer 200: the ids exist and the list is valid.
preflight() {
    local path code
    for path in "$LIST_PATH" ${ITEM_IDS//,/ }; do
        [[ $path == /* ]] || path=/conversations/$path
        code=$(curl -s -o "$TMP/preflight.json" -w '%{http_code}' "http://127.0.0.1:$FACADE_PORT$path")
        [[ $code == 200 ]] || die "GET $path answered $code: $(cat "$TMP/preflight.json")"
    done
}

declare -a ROWS=()

# One run on a fresh sandbox and facade.
#   $1 label, $2 READ_CACHE_TTL_MS, $3 rate limit of both, $4 seconds
run() {
    local label=$1 ttl=$2 limit=$3 seconds=$4
    log "run $label: READ_CACHE_TTL_MS=$ttl, limit $limit/min, ${seconds}s"
    start_on_free_port sandbox "$TMP/sandbox-$label.log" run_sandbox "$limit"
    SANDBOX_PID=$STARTED_PID SANDBOX_PORT=$STARTED_PORT
    start_on_free_port facade "$TMP/facade-$label.log" run_facade "$ttl" "$limit"
    FACADE_PID=$STARTED_PID FACADE_PORT=$STARTED_PORT
    preflight

    local reads_before cpu_before cpu_after reads_after rss counts
    reads_before=$(read_results)
    cpu_before=$(cpu_ticks "$FACADE_PID")
    POLL_LIST_THREADS=$((LIST_POLLERS / PER_THREAD)) POLL_LIST_PATH=$LIST_PATH POLL_ITEM_IDS=$ITEM_IDS \
        wrk --latency -t $(((LIST_POLLERS + ITEM_POLLERS) / PER_THREAD)) -c $((LIST_POLLERS + ITEM_POLLERS)) \
        -d "${seconds}s" -s "$BENCH_DIR/polling.lua" "http://127.0.0.1:$FACADE_PORT" \
        >"$TMP/wrk-$label.txt" 2>&1 || die "wrk failed: $(cat "$TMP/wrk-$label.txt")"
    cpu_after=$(cpu_ticks "$FACADE_PID")
    rss=$(rss_kib "$FACADE_PID")
    reads_after=$(read_results)
    counts=$(sandbox_counts)
    stop "$FACADE_PID"
    stop "$SANDBOX_PID"

    local line
    line=$(grep '^POLL ' "$TMP/wrk-$label.txt") || die "no summary from wrk: $(cat "$TMP/wrk-$label.txt")"
    ROWS+=("$(awk -v line="$line" -v label="$label" -v ttl="$ttl" -v limit="$limit" -v seconds="$seconds" \
        -v cpu_us=$(((cpu_after - cpu_before) * 1000000 / CLK_TCK)) -v rss="$rss" -v counts="$counts" \
        -v before="$reads_before" -v after="$reads_after" '
        BEGIN {
            n = split(line, kv, /[ =]/)
            for (i = 2; i < n; i += 2) f[kv[i]] = kv[i + 1]
            split(counts, q, " "); split(before, b, " "); split(after, a, " ")
            req = f["requests"] > 0 ? f["requests"] : 1
            printf "%s|%s|%s|%s|%d|%.0f|%d|%d|%d|%d|%d|%d|%d|%d|%d|%d|%.2f|%.2f|%.1f|%.1f|%d/%d/%d/%d|%d\n",
                label, ttl, limit, seconds, f["requests"], f["requests"] / (f["duration_us"] / 1e6),
                f["ok"] + f["not_modified"], f["limited"], f["other"], f["stale"],
                q[1], q[3], q[4], q[5], q[2], f["socket_errors"],
                f["p50_us"] / 1000, f["p99_us"] / 1000, cpu_us / req, rss / 1024,
                a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4], cpu_us
        }')")
}

# ---------------------------------------------------------------- report

field() { # field LABEL N: the Nth field of that run's row
    local row
    local -a parts
    for row in "${ROWS[@]}"; do
        [[ ${row%%|*} == "$1" ]] || continue
        IFS='|' read -r -a parts <<<"$row"
        echo "${parts[$2]}"
        return
    done
}

check() { # title, measured, comparison (le|eq), target
    awk -v title="$1" -v value="$2" -v op="$3" -v target="$4" 'BEGIN {
        held = op == "le" ? value + 0 <= target + 0 : value + 0 == target + 0
        printf "- %s: %s, target %s %s: %s\n", title, value, (op == "le" ? "≤" : "="), target,
            held ? "held" : "NOT held"
    }'
}

print_report() {
    local row
    local -a f
    echo "### Polling: $LIST_POLLERS pollers of GET $LIST_PATH and $ITEM_POLLERS of 10 items, closed loop"
    echo
    echo "commit $(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet HEAD -- src || echo ' (src modified)')," \
        "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); sandbox latency ${LATENCY_MS} ms; facade in service mode;" \
        "Qpien calls counted by the sandbox over its whole life (warm-up of one GET per distinct read and the token included)."
    echo
    echo "| run | READ_CACHE_TTL_MS | limit/min | s | REST requests | req/s | 200/304 | 429 to callers | other | stale answers | Qpien calls | list | item | token | Qpien 429s | socket errors | p50 ms | p99 ms | facade CPU µs/req | facade RSS MiB | facade reads hit/miss/coalesced/stale |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r -a f <<<"$row"
        printf '| %s ' "${f[@]:0:21}"
        echo '|'
    done
    echo
    local minutes=$(((DURATION + 59) / 60)) per_read
    per_read=$(awk -v d="$DURATION" -v t="$CACHE_TTL_MS" 'BEGIN { printf "%g", 2 * d * 1000 / t }')
    echo "Targets (run B unless named):"
    check "Qpien calls for the list page" "$(field B 11)" le "$per_read"
    check "Qpien calls per item (mean of $ITEM_POLLERS; the sandbox counts by operation, not by id)" \
        "$(awk -v c="$(field B 12)" -v n="$ITEM_POLLERS" 'BEGIN { printf "%.1f", c / n }')" le "$per_read"
    check "Qpien calls per distinct read, mean of $DISTINCT_READS (token excluded)" \
        "$(awk -v l="$(field B 11)" -v i="$(field B 12)" -v n="$DISTINCT_READS" 'BEGIN { printf "%.1f", (l + i) / n }')" le "$per_read"
    local run
    for run in A B; do
        check "run $run: Qpien calls in all, over ${minutes} min of budget" "$(field "$run" 10)" le $((QPIEN_LIMIT * minutes))
        check "run $run: Qpien's 429s" "$(field "$run" 14)" eq 0
    done
    check "429s to callers" "$(field B 7)" eq 0
    check "other non-2xx answers and socket errors" "$(($(field B 8) + $(field B 15)))" eq 0
    local hit miss
    hit=$(field B 18) miss=$(field C 18)
    check "CPU per hit (B, $hit µs) ÷ CPU per miss (C, $miss µs)" \
        "$(awk -v h="$hit" -v m="$miss" 'BEGIN { printf "%.2f", (m > 0 ? h / m : 0) }')" le 0.5
    echo
    echo "CPU per miss is run C's facade CPU over all its requests; its split above shows how many" \
        "shared another request's call (coalesced), which costs less than a call of its own."
}

# ---------------------------------------------------------------- main

main() {
    cd "$REPO_DIR"
    install_missing
    build
    log "temp dir $TMP"
    run A 0 "$QPIEN_LIMIT" "$DURATION"
    run B "$CACHE_TTL_MS" "$QPIEN_LIMIT" "$DURATION"
    run C 0 "$UNLIMITED" "$MISS_DURATION"

    mkdir -p "$OUT_DIR"
    local stamp report
    stamp=$(date -u +%Y%m%d-%H%M%S)
    report=$(print_report)
    echo
    echo "$report"
    echo "$report" >"$OUT_DIR/polling-$stamp.md"
    echo
    echo "table saved to bench/out/polling-$stamp.md"
}

main "$@"
