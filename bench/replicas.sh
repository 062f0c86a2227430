#!/usr/bin/env bash
# Replicas benchmark: the three-replica topology of deploy/local-topology.sh (standalone
# sandbox, redis-server, three facade replicas in service mode, HAProxy in front), with
# the release binaries, under a flood of mixed reads and writes through HAProxy for
# DURATION seconds. Two runs, each on fresh processes:
#   redis     the topology as deployed: REDIS_URL set, one budget, token and read cache
#             shared by the three replicas
#   no redis  TOPOLOGY_REDIS=0: REDIS_URL unset, QPIEN_REPLICAS=3, so each replica keeps
#             alone to a third of the budget, with its own token and cache
# The sandbox has Qpien's limit (100 requests a minute) and SANDBOX_LATENCY_MS per call;
# the facade's limit is 100 too (QPIEN_RATE_LIMIT_PER_MINUTE). Qpien calls are counted by
# the sandbox (GET /stats, and its request log for the busiest 60 s), never by the
# facade. Prints one markdown table and the target checks; saves both under bench/out/.
#
#   bash bench/replicas.sh     # DURATION=60 WARMUP=0 SANDBOX_LATENCY_MS=50 WRITE_INTERVAL_MS=15000
#   KEEP_LOGS=1 bash bench/replicas.sh   # keep the logs (they are kept when a target fails)
#
# Not part of CI: a benchmark prints figures, it does not pass or fail a build.
set -euo pipefail

DURATION=${DURATION:-60}
# Seconds between start-up and the load. For its first 62 s with Redis a replica also
# keeps to its own third of the budget (src/upstream/budget.rs, HOLD_DOWN: it cannot
# tell a first connection from a return after an outage), so WARMUP=65 measures the
# shared budget alone, as long-running replicas have it.
WARMUP=${WARMUP:-0}
LATENCY_MS=${SANDBOX_LATENCY_MS:-50}
WRITE_INTERVAL_MS=${WRITE_INTERVAL_MS:-15000}
# Writer connections send a GET /healthz every tick between writes: HAProxy closes a
# connection idle for 10 s (see replicas.lua).
WRITER_TICK_MS=5000
QPIEN_LIMIT=100 # Qpien's requests per minute per customer
# The load: wrk connections by role, the same number in each wrk thread.
READERS=40
POLLERS=4
WRITERS=2
PER_THREAD=2
POLL_PATH="/conversations?status=open"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'replicas: %s\n' "$*" >&2
    exit 1
}

for setting in DURATION WRITE_INTERVAL_MS; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number, got '$WARMUP'"
[[ $LATENCY_MS =~ ^[0-9]+$ ]] || die "SANDBOX_LATENCY_MS must be a whole number, got '$LATENCY_MS'"
((READERS % PER_THREAD == 0 && POLLERS % PER_THREAD == 0 && WRITERS % PER_THREAD == 0)) ||
    die "connections by role must fill threads of $PER_THREAD"

# Every seeded conversation (sandbox/src/data.rs numbers them 1..72 in hex) is written
# and read; the readers also page through lists under several filters and two page sizes,
# some pages past the end (an empty page is a valid read too): 152 distinct reads, where
# the budget leaves 90 calls a minute to reads.
SEEDED=72
WRITE_IDS=$(for n in $(seq 1 "$SEEDED"); do printf '6650a1%018x,' "$n"; done)
WRITE_IDS=${WRITE_IDS%,}
READ_PATHS=""
for n in $(seq 1 "$SEEDED"); do READ_PATHS+=$(printf '/conversations/6650a1%018x ' "$n"); done
for filter in "" "status=open&" "status=pending&" "status=resolved&" "starred=true&"; do
    for size in 5 10; do
        for page in $(seq 1 8); do READ_PATHS+="/conversations?${filter}pageSize=$size&page=$page "; done
    done
done
DISTINCT_READS=$(wc -w <<<"$READ_PATHS")

TMP=$(mktemp -d -t qpien-replicas.XXXXXX)

install_missing() {
    local -a packages=()
    local tool
    for tool in wrk curl jq redis-server haproxy; do
        command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || packages+=("$tool")
    done
    command -v python3 >/dev/null || packages+=(python3)
    ((${#packages[@]} == 0)) && return
    log "installing ${packages[*]} with apt-get (Debian packages; needs root)"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    # RUNLEVEL=1 keeps the redis-server and haproxy packages from starting their own
    # services where invoke-rc.d decides; ours are started on free ports.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >"$TMP/apt.log" 2>&1 || {
        cat "$TMP/apt.log" >&2
        die "apt-get install ${packages[*]} failed"
    }
}

# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"
# shellcheck source=bench/sandbox-log.sh
source "$BENCH_DIR/sandbox-log.sh"
# shellcheck source=deploy/local-topology.sh
source "$REPO_DIR/deploy/local-topology.sh"

# KEEP_LOGS=1 keeps the logs; they are kept anyway when a target does not hold.
KEEP_LOGS=${KEEP_LOGS:-0}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    topology_down
    if [[ $status != 0 || $KEEP_LOGS == 1 ]]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The same settings for both runs, whatever the caller's environment holds: the
# topology passes its environment on to the sandbox and the replicas. The sandbox logs
# each request it receives (for the busiest 60 s); the replicas only warnings.
export QPIEN_RATE_LIMIT_PER_MINUTE=$QPIEN_LIMIT SANDBOX_RATE_LIMIT_PER_MINUTE=$QPIEN_LIMIT
export SANDBOX_LATENCY_MS=$LATENCY_MS
export RUST_LOG=warn,qpien_sandbox::server=debug NO_COLOR=1 LOG_FORMAT=text
export SHUTDOWN_DRAIN_SECS=0
export TOPOLOGY_PROFILE=release TOPOLOGY_BUILD=0

# ---------------------------------------------------------------- readings

# "requests rateLimited list item update token" from the sandbox's counters.
sandbox_counts() {
    curl -fsS "$TOPOLOGY_SANDBOX_URL/stats" | jq -r '[.requests, .rateLimited,
        (.operations.getConversationList // 0), (.operations.getConversation // 0),
        (.operations.updateConversation // 0), (.operations.generateOAuthToken // 0)]
        | map(tostring) | join(" ")'
}

# "hit/miss/coalesced/stale" from qpien_rest_reads_total, summed over replicas and reads.
read_results() {
    cat "$@" | awk '
        BEGIN { n["hit"] = n["miss"] = n["coalesced"] = n["stale"] = 0 }
        /^qpien_rest_reads_total\{/ {
            for (r in n) if (index($0, "result=\"" r "\"")) n[r] += $NF
        }
        END { print n["hit"] "/" n["miss"] "/" n["coalesced"] "/" n["stale"] }'
}

# Where each replica keeps its budget, token and cache, from /readyz: "redis ×3".
shared_state() {
    local url
    for url in "${TOPOLOGY_REPLICA_URLS[@]}"; do
        curl -fsS "$url/readyz" | jq -r '.sharedState // "?"' || echo "not ready"
    done | sort | uniq -c | awk '{ n = $1; $1 = ""; sub(/^ /, ""); printf "%s%s ×%d", sep, $0, n; sep = ", " }'
}

# The poll page and one item must answer 200 through HAProxy: the topology serves.
preflight() {
    local path code
    for path in "$POLL_PATH" "/conversations/${WRITE_IDS%%,*}"; do
        code=$(curl -s -o "$TMP/preflight.json" -w '%{http_code}' "$TOPOLOGY_URL$path")
        [[ $code == 200 ]] || die "GET $path answered $code: $(cat "$TMP/preflight.json")"
    done
}

declare -a ROWS=()

# One run on a fresh topology. $1 label, $2 TOPOLOGY_REDIS (1 or 0).
run() {
    local label=$1 redis=$2 dir
    dir=$TMP/${label// /-}
    mkdir -p "$dir"
    log "run '$label': topology with TOPOLOGY_REDIS=$redis, ${DURATION}s of load"
    TOPOLOGY_REDIS=$redis
    PORT=$(free_port)
    topology_up || die "the topology did not come up (run '$label')"
    preflight
    if ((WARMUP > 0)); then
        log "run '$label': waiting ${WARMUP}s before the load (WARMUP)"
        sleep "$WARMUP"
    fi

    local before threads=$(((READERS + POLLERS + WRITERS) / PER_THREAD))
    before=$(sandbox_counts)
    MIX_WRITE_THREADS=$((WRITERS / PER_THREAD)) MIX_POLL_THREADS=$((POLLERS / PER_THREAD)) \
        MIX_CONNECTIONS_PER_THREAD=$PER_THREAD MIX_WRITER_TICK_MS=$WRITER_TICK_MS \
        MIX_WRITE_INTERVAL_MS=$WRITE_INTERVAL_MS \
        MIX_WRITE_IDS=$WRITE_IDS MIX_POLL_PATH=$POLL_PATH MIX_READ_PATHS=$READ_PATHS \
        wrk --latency --timeout 10s -t "$threads" -c $((READERS + POLLERS + WRITERS)) -d "${DURATION}s" \
        -s "$BENCH_DIR/replicas.lua" "$TOPOLOGY_URL" >"$dir/wrk.txt" 2>&1 ||
        die "wrk failed: $(cat "$dir/wrk.txt")"

    local counts state i dead
    counts=$(sandbox_counts)
    for i in "${!TOPOLOGY_REPLICA_URLS[@]}"; do
        curl -fsS "${TOPOLOGY_REPLICA_URLS[$i]}/metrics" >"$dir/metrics-replica-$((i + 1)).txt" || true
    done
    state=$(shared_state)
    dead=$(topology_dead) && log "run '$label': $dead exited during the run"
    cp "$TOPOLOGY_DIR"/*.log "$dir/"
    topology_down

    local line busiest reads
    busiest=$(busiest_minute "$dir/sandbox.log")
    reads=$(read_results "$dir"/metrics-replica-*.txt)
    line=$(grep '^MIX ' "$dir/wrk.txt") || die "no summary from wrk: $(cat "$dir/wrk.txt")"
    ROWS+=("$(awk -v line="$line" -v label="$label" -v state="$state" -v counts="$counts" \
        -v before="$before" -v busiest="$busiest" -v reads="$reads" '
        BEGIN {
            n = split(line, kv, / /)
            for (i = 2; i <= n; i++) { split(kv[i], pair, "="); f[pair[1]] = pair[2] }
            split(counts, q, " "); split(before, b, " ")
            served = f["requests"] - f["keepalive"]
            split("read poll write", roles, " ")
            for (r = 1; r <= 3; r++) {
                role = roles[r]
                ok[role] = f[role "_ok"] + f[role "_not_modified"]
                limited[role] = f[role "_limited"]
                sent[role] = ok[role] + f[role "_precondition"] + limited[role] + f[role "_server_error"] + f[role "_other"]
                ok_all += ok[role]; pre += f[role "_precondition"]; lim += limited[role]
                err += f[role "_server_error"]; other += f[role "_other"]
            }
            pings = q[1] - q[2] - q[3] - q[4] - q[5] - q[6]
            printf "%s|%s|%d|%.0f|%d|%d|%d (%d/%d/%d)|%d|%d|%d|%d|%d/%d|%d|%d|%d|%d|%d|%d|%d|%d|%d|%.1f|%.1f|%s|%s|%s\n",
                label, state, served, served / (f["duration_us"] / 1e6),
                ok_all, pre, lim, limited["read"], limited["poll"], limited["write"], err, other,
                f["socket_errors"], f["stale"], ok["write"], sent["write"],
                q[1], b[1], q[3], q[4], q[5], q[6], pings, busiest, q[2],
                f["p50_us"] / 1000, f["p99_us"] / 1000, reads, f["stale_by_detail"], f["other_by_status"]
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

# title, measured value, comparison (le|eq), target.
check() {
    local held
    held=$(awk -v value="$2" -v op="$3" -v target="$4" \
        'BEGIN { print (op == "le" ? value + 0 <= target + 0 : value + 0 == target + 0) ? "held" : "NOT held" }')
    local sign="="
    [[ $3 == le ]] && sign="≤"
    printf -- '- %s: %s, target %s %s: %s\n' "$1" "$2" "$sign" "$4" "$held"
}

print_report() {
    local row
    local -a f
    echo "### Three replicas behind HAProxy: ${DURATION} s of mixed reads and writes, with and without Redis"
    echo
    echo "commit $(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet HEAD -- src || echo ' (src modified)')," \
        "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); release binaries; load ${WARMUP} s after start-up; sandbox limit ${QPIEN_LIMIT}/min, latency ${LATENCY_MS} ms;" \
        "facade QPIEN_RATE_LIMIT_PER_MINUTE=${QPIEN_LIMIT}, QPIEN_REPLICAS=3, READ_CACHE_TTL_MS=${READ_CACHE_TTL_MS:-5000 (default)}." \
        "wrk through HAProxy, closed loop: $READERS connections reading $DISTINCT_READS distinct reads at random," \
        "$POLLERS polling GET $POLL_PATH, $WRITERS sending PATCH {\"starred\":…} (merge patch) on the $SEEDED seeded ids, one per connection every $((WRITE_INTERVAL_MS / 1000)) s." \
        "Qpien calls as the sandbox counted them over its whole life (start-up, /readyz checks, the preflight reads and the token included; \"before load\": those before wrk started);" \
        "busiest 60 s: the most it received within any 60 seconds."
    echo
    echo "| run | shared state (/readyz) | REST requests | req/s | 200/304 | 412 | 429 to callers (read/poll/write) | 5xx | other | socket errors | stale answers | writes accepted/sent | Qpien calls | before load | list | item | update | token | readiness pings | busiest 60 s | Qpien 429s | p50 ms | p99 ms | facade reads hit/miss/coalesced/stale |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r -a f <<<"$row"
        printf '| %s ' "${f[@]:0:24}"
        echo '|'
    done
    echo
    echo "Targets:"
    check "with Redis, Qpien's 429s" "$(field redis 20)" eq 0
    check "with Redis, token calls" "$(field redis 17)" eq 1
    check "with Redis, most Qpien calls within any 60 s" "$(field redis 19)" le "$QPIEN_LIMIT"
    check "without Redis, Qpien's 429s" "$(field "no redis" 20)" eq 0
    check "without Redis, most Qpien calls within any 60 s" "$(field "no redis" 19)" le "$QPIEN_LIMIT"
    echo "  (without Redis each replica fetches its own token: $(field "no redis" 17) token calls)"
    local label
    for label in redis "no redis"; do
        echo "  (run '$label': stale answers by Cache-Status detail: $(field "$label" 24 | tr ',:' ' ='); other answers by status: $(field "$label" 25 | tr ',:' ' ='))"
    done
    return 0
}

# One group per figure, one bar per run: the table's columns turned into rows, for a chart.
#   $1 the TSV to write, then pairs of a group's name (_ for a space) and its field in ROWS
transposed() {
    local tsv=$1
    shift
    printf '%s\n' "${ROWS[@]}" | awk -F'|' -v spec="$*" '
        BEGIN { n = split(spec, s, " ") }
        { runs++; header = header "\t" ($1 == "redis" ? "with Redis" : "without Redis")
          for (i = 2; i <= n; i += 2) value[i, runs] = $(s[i] + 1) + 0 }
        END {
            print "figure" header
            for (i = 2; i <= n; i += 2) {
                line = s[i - 1]; gsub(/_/, " ", line)
                for (r = 1; r <= runs; r++) line = line "\t" value[i, r]
                print line
            }
        }' >"$tsv"
}

# The table drawn as two bar charts beside it (bench/chart.sh), the runs side by side:
# what the replicas cost Qpien, and what callers got.
#   $1 the file name's stamp
draw_charts() {
    local stamp=$1 commit
    commit=$(git -C "$REPO_DIR" rev-parse --short HEAD)
    transposed "$TMP/chart-calls.tsv" Qpien_calls 12 list 14 item 15 update 16 token 17 \
        readiness_pings 18 busiest_60_s 19 "Qpien's_429s" 20
    bash "$BENCH_DIR/chart.sh" "$TMP/chart-calls.tsv" "$OUT_DIR/replicas-$stamp-calls.svg" \
        "Three replicas, commit $commit: Qpien calls over the sandbox's life" "calls" || return 1
    transposed "$TMP/chart-answers.tsv" 200/304 4 412 5 429_to_callers 6 5xx 7 stale_answers 10
    bash "$BENCH_DIR/chart.sh" "$TMP/chart-answers.tsv" "$OUT_DIR/replicas-$stamp-answers.svg" \
        "Three replicas, commit $commit: answers to callers in ${DURATION} s" "answers"
}

# ---------------------------------------------------------------- main

main() {
    cd "$REPO_DIR"
    install_missing
    log "building the release binaries (cargo build --release --locked --bins)"
    TOPOLOGY_BUILD=1 topology_binaries || die "the release build failed"
    log "temp dir $TMP"
    run redis 1
    run "no redis" 0

    mkdir -p "$OUT_DIR"
    local stamp report
    stamp=$(date -u +%Y%m%d-%H%M%S)
    report=$(print_report)
    # print_report runs in a subshell: find again whether a target did not hold.
    [[ $report == *"NOT held"* ]] && KEEP_LOGS=1
    echo
    echo "$report"
    echo "$report" >"$OUT_DIR/replicas-$stamp.md"
    echo
    echo "table saved to bench/out/replicas-$stamp.md"
    if draw_charts "$stamp"; then
        echo "charts: bench/out/replicas-$stamp-calls.svg, bench/out/replicas-$stamp-answers.svg"
    else
        log "the charts were not drawn (bench/chart.sh said why above); the table stands"
    fi
}

main "$@"
