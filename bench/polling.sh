#!/usr/bin/env bash
# Polling benchmark: 50 pollers of one list page and 10 pollers of 10 different items, all
# at once, against the facade in service mode over a standalone sandbox with Qpien's rate
# limit and latency. Five runs, each on a fresh sandbox and facade:
#   A  cache off (READ_CACHE_TTL_MS=0), Qpien's budget of 100 a minute, DURATION seconds
#   B  cache on (READ_CACHE_TTL_MS, default 5000), the same budget, DURATION seconds
#   C  cache off with budgets that cannot run out, MISS_DURATION seconds: the CPU a miss costs
#   D  cache on with budgets that cannot run out, MISS_DURATION seconds: the CPU a hit costs
#      when no request falls back to a stale answer (run B's do, once its budget is spent)
#   E  as C with one poller per distinct read, so no request shares another's call
#      (coalesced; most of C's do): the CPU a call to Qpien costs the facade
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
UNLIMITED=1000000      # a budget runs C, D and E cannot spend
LIST_PATH="/conversations?status=open"
ITEMS=10
# The first ten seeded conversations (sandbox/src/data.rs numbers them in hex).
ITEM_IDS=$(for n in $(seq 1 "$ITEMS"); do printf '6650a1%018x,' "$n"; done)
ITEM_IDS=${ITEM_IDS%,}

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
# shellcheck source=bench/sandbox-log.sh
source "$BENCH_DIR/sandbox-log.sh"

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

# A clean environment, so nothing of the caller's leaks in. The sandbox logs each request
# it receives with its time, from which the busiest minute is found.
run_sandbox() { # $1 rate limit
    exec env -i PATH="$PATH" SANDBOX_HOST=127.0.0.1 SANDBOX_PORT="$PORT_UNDER_TEST" \
        SANDBOX_RATE_LIMIT_PER_MINUTE="$1" SANDBOX_LATENCY_MS="$LATENCY_MS" \
        RUST_LOG=warn,qpien_sandbox::server=debug NO_COLOR=1 \
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

# One run on a fresh sandbox and facade. wrk's threads each hold per_thread connections;
# polling.lua gives the list to the first threads and shares the items among the rest.
#   $1 label, $2 READ_CACHE_TTL_MS, $3 rate limit of both, $4 seconds,
#   $5 list pollers, $6 item pollers, $7 connections per wrk thread
run() {
    local label=$1 ttl=$2 limit=$3 seconds=$4 list=$5 items=$6 per_thread=$7
    ((list % per_thread == 0 && items % per_thread == 0 && items / per_thread <= ITEMS)) ||
        die "run $label: pollers ($list, $items) do not fit threads of $per_thread"
    log "run $label: READ_CACHE_TTL_MS=$ttl, limit $limit/min, ${seconds}s, $list list and $items item pollers"
    start_on_free_port sandbox "$TMP/sandbox-$label.log" run_sandbox "$limit"
    SANDBOX_PID=$STARTED_PID SANDBOX_PORT=$STARTED_PORT
    start_on_free_port facade "$TMP/facade-$label.log" run_facade "$ttl" "$limit"
    FACADE_PID=$STARTED_PID FACADE_PORT=$STARTED_PORT
    preflight

    local reads_before cpu_before cpu_after reads_after rss counts
    reads_before=$(read_results)
    cpu_before=$(cpu_ticks "$FACADE_PID")
    local threads=$(((list + items) / per_thread))
    POLL_THREADS=$threads POLL_LIST_THREADS=$((list / per_thread)) POLL_LIST_PATH=$LIST_PATH \
        POLL_ITEM_IDS=$ITEM_IDS wrk --latency -t "$threads" -c $((list + items)) -d "${seconds}s" \
        -s "$BENCH_DIR/polling.lua" "http://127.0.0.1:$FACADE_PORT" \
        >"$TMP/wrk-$label.txt" 2>&1 || die "wrk failed: $(cat "$TMP/wrk-$label.txt")"
    cpu_after=$(cpu_ticks "$FACADE_PID")
    rss=$(rss_kib "$FACADE_PID")
    reads_after=$(read_results)
    counts=$(sandbox_counts)
    stop "$FACADE_PID"
    stop "$SANDBOX_PID"
    local busiest
    busiest=$(busiest_minute "$TMP/sandbox-$label.log")

    local line
    line=$(grep '^POLL ' "$TMP/wrk-$label.txt") || die "no summary from wrk: $(cat "$TMP/wrk-$label.txt")"
    ROWS+=("$(awk -v line="$line" -v label="$label" -v ttl="$ttl" -v limit="$limit" -v seconds="$seconds" \
        -v cpu_us=$(((cpu_after - cpu_before) * 1000000 / CLK_TCK)) -v rss="$rss" -v counts="$counts" \
        -v before="$reads_before" -v after="$reads_after" -v pollers="$list+$items" -v busiest="$busiest" '
        BEGIN {
            n = split(line, kv, /[ =]/)
            for (i = 2; i < n; i += 2) f[kv[i]] = kv[i + 1]
            split(counts, q, " "); split(before, b, " "); split(after, a, " ")
            req = f["requests"] > 0 ? f["requests"] : 1
            printf "%s|%s|%s|%s|%s|%d|%.0f|%d|%d|%d|%d|%d|%d|%d|%d|%d|%d|%d|%.2f|%.2f|%.1f|%.1f|%d/%d/%d/%d|%d|%s\n",
                label, ttl, limit, seconds, pollers, f["requests"], f["requests"] / (f["duration_us"] / 1e6),
                f["ok"] + f["not_modified"], f["limited"], f["other"], f["stale"],
                q[1], q[3], q[4], q[5], busiest, q[2], f["socket_errors"],
                f["p50_us"] / 1000, f["p99_us"] / 1000, cpu_us / req, rss / 1024,
                a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4], cpu_us, f["stale_by_detail"]
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

# title, measured value, comparison (le|eq), target[, unrounded value to compare]
check() {
    awk -v title="$1" -v value="$2" -v op="$3" -v target="$4" -v raw="${5:-$2}" 'BEGIN {
        held = op == "le" ? raw + 0 <= target + 0 : raw + 0 == target + 0
        printf "- %s: %s, target %s %s: %s\n", title, value, (op == "le" ? "≤" : "="), target,
            held ? "held" : "NOT held"
    }'
}

ratio_check() { # title, numerator run, denominator run: CPU per request, target ≤ 0.5
    local a b
    a=$(field "$2" 20) b=$(field "$3" 20)
    local raw
    raw=$(awk -v a="$a" -v b="$b" 'BEGIN { print (b > 0 ? a / b : 0) }')
    check "$1: $a µs ÷ $b µs" "$(awk -v r="$raw" 'BEGIN { printf "%.2f", r }')" le 0.5 "$raw"
}

print_report() {
    local row
    local -a f
    echo "### Polling: 50 pollers of GET $LIST_PATH and 10 of $ITEMS different items, closed loop"
    echo
    echo "commit $(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet HEAD -- src || echo ' (src modified)')," \
        "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); sandbox latency ${LATENCY_MS} ms; facade in service mode." \
        "Qpien calls as the sandbox counted them over its whole life (one warm-up GET per distinct read and the token call included);" \
        "busiest 60 s: the most it received within any 60 seconds. CPU: the facade's user + system time over the load."
    echo
    echo "| run | READ_CACHE_TTL_MS | limit/min | s | pollers list+item | REST requests | req/s | 200/304 | 429 to callers | other | stale answers | Qpien calls | list | item | token | busiest 60 s | Qpien 429s | socket errors | p50 ms | p99 ms | facade CPU µs/req | facade RSS MiB | facade reads hit/miss/coalesced/stale |"
    echo "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r -a f <<<"$row"
        printf '| %s ' "${f[@]:0:23}"
        echo '|'
    done
    echo
    local per_read run
    per_read=$(awk -v d="$DURATION" -v t="$CACHE_TTL_MS" 'BEGIN { printf "%g", 2 * d * 1000 / t }')
    echo "Targets (run B unless named):"
    check "Qpien calls for the list page" "$(field B 12)" le "$per_read"
    check "Qpien calls per item, mean of $ITEMS (the sandbox counts by operation, not by id)" \
        "$(awk -v c="$(field B 13)" -v n="$ITEMS" 'BEGIN { printf "%.1f", c / n }')" le "$per_read"
    for run in A B; do
        check "run $run: most Qpien calls within any 60 s" "$(field "$run" 15)" le "$QPIEN_LIMIT"
        check "run $run: Qpien's 429s" "$(field "$run" 16)" eq 0
    done
    check "429s to callers" "$(field B 8)" eq 0
    echo "  (run B's stale answers by Cache-Status detail: $(field B 24 | tr ',:' ' ='))"
    check "other answers and socket errors" "$(($(field B 9) + $(field B 17)))" eq 0
    ratio_check "CPU per request in B (hits, and stale answers once the budget is spent) ÷ in C (cache off)" B C
    ratio_check "CPU per request in D (hits only) ÷ in E (each a call of its own)" D E
    echo
    local hits stale
    IFS=/ read -r hits _ _ stale <<<"$(field B 22)"
    echo "Run C's requests mostly shared another's call (coalesced, in its split), which costs less" \
        "than a call of its own: run E, where none can, shows the cost of a miss."
    ((stale > 0)) && echo "Taking run B's hits at run D's cost, each of its stale answers cost about" \
        "$(awk -v total="$(field B 23)" -v hits="$hits" -v h="$(field D 20)" -v stale="$stale" \
            'BEGIN { printf "%.0f", (total - hits * h) / stale }') µs."
    return 0
}

# The table drawn as two bar charts beside it (bench/chart.sh): what runs A and B cost
# Qpien, and the facade's CPU per request in every run.
#   $1 the file name's stamp
draw_charts() {
    local stamp=$1 commit row
    local -a f
    commit=$(git -C "$REPO_DIR" rev-parse --short HEAD)
    printf 'run\tQpien calls\tlist\titem\tbusiest 60 s\n' >"$TMP/chart-calls.tsv"
    printf 'run\tfacade CPU µs/req\n' >"$TMP/chart-cpu.tsv"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r -a f <<<"$row"
        local name="${f[0]}: TTL ${f[1]} ms, ${f[2]}/min"
        [[ ${f[2]} == "$QPIEN_LIMIT" ]] &&
            printf '%s\t%s\t%s\t%s\t%s\n' "$name" "${f[11]}" "${f[12]}" "${f[13]}" "${f[15]}" >>"$TMP/chart-calls.tsv"
        printf '%s\t%s\n' "$name" "${f[20]}" >>"$TMP/chart-cpu.tsv"
    done
    bash "$BENCH_DIR/chart.sh" "$TMP/chart-calls.tsv" "$OUT_DIR/polling-$stamp-calls.svg" \
        "Polling, commit $commit: Qpien calls in ${DURATION} s under Qpien's budget (cache off, on)" "calls" || return 1
    bash "$BENCH_DIR/chart.sh" "$TMP/chart-cpu.tsv" "$OUT_DIR/polling-$stamp-cpu.svg" \
        "Polling, commit $commit: the facade's CPU per request" "CPU µs per request"
}

# ---------------------------------------------------------------- main

main() {
    cd "$REPO_DIR"
    install_missing
    build
    log "temp dir $TMP"
    run A 0 "$QPIEN_LIMIT" "$DURATION" 50 10 10
    run B "$CACHE_TTL_MS" "$QPIEN_LIMIT" "$DURATION" 50 10 10
    run C 0 "$UNLIMITED" "$MISS_DURATION" 50 10 10
    run D "$CACHE_TTL_MS" "$UNLIMITED" "$MISS_DURATION" 50 10 10
    run E 0 "$UNLIMITED" "$MISS_DURATION" 1 10 1

    mkdir -p "$OUT_DIR"
    local stamp report
    stamp=$(date -u +%Y%m%d-%H%M%S)
    report=$(print_report)
    echo
    echo "$report"
    echo "$report" >"$OUT_DIR/polling-$stamp.md"
    echo
    echo "table saved to bench/out/polling-$stamp.md"
    if draw_charts "$stamp"; then
        echo "charts: bench/out/polling-$stamp-calls.svg, bench/out/polling-$stamp-cpu.svg"
    else
        log "the charts were not drawn (bench/chart.sh said why above); the table stands"
    fi
}

main "$@"
