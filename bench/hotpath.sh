#!/usr/bin/env bash
# Side-by-side benchmark of the read hot path: GET /conversations/{id} through one nginx
# proxy hop and through the facade (pass-through mode), both over the same canned GraphQL
# upstream, driven by the same wrk load. Prints one markdown table: throughput, latency,
# errors, CPU per request of every process involved, RSS, and the ratios we aim for.
#
#   bash bench/hotpath.sh                  # CONNECTIONS=32 DURATION=5 THREADS=2 ROUNDS=3
#   PROFILE=1 bash bench/hotpath.sh        # plus a perf profile of the facade
#
# Not part of CI. Figures from a shared machine are noisy: every scenario runs ROUNDS
# times, the rounds one after another (each round runs every scenario once), and the
# table gives each scenario's median. A ratio is the median of the rounds' own ratios,
# so a neighbour's burst of load in one round moves one of them, not the result.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-5}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
PROFILE=${PROFILE:-0}
MANY_TOKENS=500
CONVERSATION_ID=6650a1000000000000000001

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out
CLK_TCK=$(getconf CLK_TCK)
PATH=$PATH:/usr/sbin # nginx lives there, outside a non-root PATH

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'hotpath: %s\n' "$*" >&2
    exit 1
}

for setting in CONNECTIONS DURATION THREADS ROUNDS; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
((CONNECTIONS >= THREADS)) || die "CONNECTIONS ($CONNECTIONS) must be at least THREADS ($THREADS)"
TMP=$(mktemp -d -t qpien-hotpath.XXXXXX)

# ---------------------------------------------------------------- tools and build

install_missing() {
    local -a packages=()
    command -v nginx >/dev/null || packages+=(nginx)
    command -v wrk >/dev/null || packages+=(wrk)
    command -v curl >/dev/null || packages+=(curl)
    command -v pgrep >/dev/null || packages+=(procps)
    if [[ $PROFILE == 1 ]] && ! command -v perf >/dev/null; then packages+=(linux-perf); fi
    ((${#packages[@]} == 0)) && return
    log "installing ${packages[*]} with apt-get (Debian packages; needs root)"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    # RUNLEVEL=1 keeps the nginx package from starting its own service (on port 80) where
    # invoke-rc.d decides; ours are started below on free ports.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >"$TMP/apt.log" 2>&1 || {
        cat "$TMP/apt.log" >&2
        die "apt-get install ${packages[*]} failed"
    }
}

build_facade() {
    log "building the release binary (cargo build --release --locked --bin qpien-rest)"
    (cd "$REPO_DIR" && cargo build --release --locked --bin qpien-rest --quiet)
    FACADE_BIN=$REPO_DIR/target/release/qpien-rest
}

# ---------------------------------------------------------------- processes

# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"
# shellcheck source=bench/profile.sh
source "$BENCH_DIR/profile.sh"

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${STARTED[@]}"; do stop "$pid"; done
    STARTED=()
    if [[ $status != 0 ]]; then
        log "exit status $status; logs kept in $TMP"
    elif [[ $PROFILE == 1 ]]; then
        log "temp dir kept for the perf data: $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a fresh facade in pass-through mode over the canned upstream, with a clean
# environment so that nothing from the caller's shell (credentials, REDIS_URL) leaks in.
# $1 is READ_CACHE_TTL_MS, or "" to leave the default. Sets FACADE_PID and FACADE_PORT.
# The 500 tokens come from one address at once: the caps on tokens Qpien has not yet
# accepted would refuse most of the warm-up (that flood is bench/junk-tokens.sh's).
start_facade() {
    local cache_ttl=$1 port pid attempt
    local -a cache_env=()
    [[ -n $cache_ttl ]] && cache_env=("READ_CACHE_TTL_MS=$cache_ttl")
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        env -i PATH="$PATH" \
            HOST=127.0.0.1 PORT="$port" \
            QPIEN_API_URL="http://127.0.0.1:$CANNED_PORT/api/v1" \
            QPIEN_RATE_LIMIT_PER_MINUTE=1000000 \
            UNPROVEN_CREDENTIALS_PER_MINUTE_PER_CLIENT=1000000 \
            UNPROVEN_CREDENTIALS_PER_MINUTE=1000000 \
            SHUTDOWN_DRAIN_SECS=0 \
            RUST_LOG=warn \
            "${cache_env[@]}" \
            "$FACADE_BIN" >>"$TMP/facade.log" 2>&1 &
        pid=$!
        STARTED+=("$pid")
        if wait_listening "$pid" "$port"; then
            FACADE_PID=$pid FACADE_PORT=$port
            return
        fi
        stop "$pid"
        log "facade did not start on port $port (attempt $attempt)"
    done
    die "the facade did not start; see $TMP/facade.log"
}

# ---------------------------------------------------------------- measuring

# One request per token before measuring: every target starts the run with warm
# connections, and a read cache (when on) holds each token's answer. Any answer but 200
# stops the benchmark, since its figures would describe an error path.
warm_up() {
    local port=$1 tokens=$2 name=$3 k
    local config=$TMP/warm-up-$name.curl
    : >"$config"
    for ((k = 1; k <= tokens; k++)); do
        ((k == 1)) || echo next >>"$config"
        printf 'url = "http://127.0.0.1:%s/conversations/%s"\nheader = "Authorization: Bearer bench-token-%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
            "$port" "$CONVERSATION_ID" "$k" >>"$config"
    done
    local codes
    codes=$(curl -s -K "$config" | sort | uniq -c | tr -s ' ' || true)
    if [[ $codes != " $tokens 200" ]]; then
        curl -s -i -H "Authorization: Bearer bench-token-1" \
            "http://127.0.0.1:$port/conversations/$CONVERSATION_ID" >&2 || true
        die "warm-up of $name answered (count, status):$codes"
    fi
}

declare -a SCENARIOS=() # labels, in the order of the table
declare -a ROWS=() # "label|target|tokens|cache|req/s|p50|p99|non2xx|sockerr|cpu|canned|rss|round"
ROUND=1

# Runs one scenario against a freshly started target and appends its row.
#   $1 label, $2 target (hop|facade), $3 tokens, $4 READ_CACHE_TTL_MS ("" = default)
#   $5 profile name ("" = no profile)
scenario() {
    local label=$1 target=$2 tokens=$3 cache=$4 profile_name=$5 pid port
    log "$label: $tokens token(s), $CONNECTIONS connections, ${DURATION}s"
    if [[ $target == hop ]]; then
        start_nginx "hop-$RANDOM" "$BENCH_DIR/nginx-hop.conf.in" \
            "@UPSTREAM_PORT@=$CANNED_PORT" "@WORKERS@=$(nproc)"
        pid=$STARTED_PID port=$STARTED_PORT
    else
        start_facade "$cache"
        pid=$FACADE_PID port=$FACADE_PORT
    fi
    warm_up "$port" "$tokens" "$target-$tokens"

    local -a target_pids canned_pids
    read -r -a target_pids <<<"$(family "$pid")"
    read -r -a canned_pids <<<"$(family "$CANNED_PID")"
    [[ -n $profile_name ]] && start_profile "$profile_name"
    local target_before canned_before target_after canned_after
    target_before=$(cpu_ticks "${target_pids[@]}")
    canned_before=$(cpu_ticks "${canned_pids[@]}")

    BENCH_TOKENS=$tokens wrk --latency -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" \
        -s "$BENCH_DIR/hotpath.lua" "http://127.0.0.1:$port/conversations/$CONVERSATION_ID" \
        >"$TMP/wrk-$label-$ROUND.txt" 2>&1 || die "wrk failed: $(cat "$TMP/wrk-$label-$ROUND.txt")"

    target_after=$(cpu_ticks "${target_pids[@]}")
    canned_after=$(cpu_ticks "${canned_pids[@]}")
    local rss
    rss=$(rss_kib "${target_pids[@]}")
    [[ -n $profile_name ]] && stop_profile "$profile_name"
    stop "$pid"

    local line
    line=$(grep '^BENCH ' "$TMP/wrk-$label-$ROUND.txt") || die "no summary from wrk: $(cat "$TMP/wrk-$label-$ROUND.txt")"
    ROWS+=("$(awk -v line="$line" -v tick_us=$((1000000 / CLK_TCK)) \
        -v t=$((target_after - target_before)) -v c=$((canned_after - canned_before)) \
        -v rss="$rss" -v round="$ROUND" -v label="$label" -v target="$target" -v tokens="$tokens" -v cache="$cache" '
        BEGIN {
            n = split(line, kv, /[ =]/)
            for (i = 2; i < n; i += 2) f[kv[i]] = kv[i + 1]
            req = f["requests"]; if (req == 0) req = 1
            printf "%s|%s|%s|%s|%.0f|%.2f|%.2f|%d|%d|%.1f|%.1f|%.1f|%d\n",
                label, target, tokens, cache, f["requests"] / (f["duration_us"] / 1e6),
                f["p50_us"] / 1000, f["p99_us"] / 1000, f["non2xx"], f["socket_errors"],
                t * tick_us / req, c * tick_us / req, rss / 1024, round
        }')")
}

# ---------------------------------------------------------------- report

# The median of list[1..n], for the awk programs below.
AWK_MEDIAN='
function median(list, n,    sorted, i, j, t) {
    for (i = 1; i <= n; i++) sorted[i] = list[i]
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && sorted[j - 1] > sorted[j]; j--) {
            t = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = t
        }
    return n % 2 ? sorted[(n + 1) / 2] : (sorted[n / 2] + sorted[n / 2 + 1]) / 2
}'

# The rows of every round, as awk reads them: one per line, fields split on "|".
rows() { printf '%s\n' "${ROWS[@]}"; }

# One scenario across the rounds: the medians of its figures (errors summed, RSS the
# largest), then its CPU per request in each round. Fields as in ROWS, round dropped.
summary_of() {
    rows | awk -F'|' -v label="$1" "$AWK_MEDIAN"'
        $1 == label {
            n++
            target = $2; tokens = $3; cache = $4
            rps[n] = $5; p50[n] = $6; p99[n] = $7; non2xx += $8; sockerr += $9
            cpu[n] = $10; canned[n] = $11; if ($12 > rss) rss = $12
            per_round = per_round (n > 1 ? " / " : "") $10
        }
        END {
            if (n == 0) exit 1
            printf "%s|%s|%s|%s|%.0f|%.2f|%.2f|%d|%d|%.1f|%.1f|%.1f|%s\n", label, target,
                tokens, cache, median(rps, n), median(p50, n), median(p99, n), non2xx, sockerr,
                median(cpu, n), median(canned, n), rss, per_round
        }'
}

# One line of the ratio table: the target's CPU per request over the hop's, in each
# round (the two ran minutes apart at most), and the median of those ratios.
#   $1 title, $2 target's label, $3 hop's label, $4 aim
ratio_line() {
    rows | awk -F'|' -v title="$1" -v num="$2" -v den="$3" -v aim="$4" "$AWK_MEDIAN"'
        $1 == num { a[$13] = $10; bad += $8 + $9 }
        $1 == den { b[$13] = $10; bad += $8 + $9 }
        END {
            for (r in a) if ((r in b) && b[r] > 0) { n++; ratio[n] = a[r] / b[r] }
            rounds = ""
            for (r = 1; r <= 1000; r++)
                if ((r in a) && (r in b) && b[r] > 0)
                    rounds = rounds (rounds == "" ? "" : " / ") sprintf("%.2f", a[r] / b[r])
            note = bad > 0 ? " (rows with errors: not valid)" : ""
            if (n == 0) { printf "| %s | n/a | | %s |\n", title, aim; exit }
            printf "| %s | %.2f%s | %s | %s |\n", title, median(ratio, n), note, rounds, aim
        }'
}

print_report() {
    local label summary
    echo "### Hot path: GET /conversations/{id}, $CONNECTIONS connections, ${DURATION}s, $THREADS wrk threads, $ROUNDS rounds"
    echo
    echo "commit $(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet HEAD -- src || echo ' (src modified)')," \
        "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); CPU in µs of utime+stime per request."
    echo "Each figure is the median of the rounds (errors: their sum; RSS: the largest); the"
    echo "last column gives the target's CPU per request in each round."
    echo
    echo "| scenario | tokens | READ_CACHE_TTL_MS | req/s | p50 ms | p99 ms | non-2xx | socket errors | target CPU µs/req | canned upstream CPU µs/req | target RSS MiB | target CPU µs/req by round |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    local max_rss=0
    for label in "${SCENARIOS[@]}"; do
        summary=$(summary_of "$label") || continue
        IFS='|' read -r label target tokens cache rps p50 p99 non2xx sockerr cpu canned rss per_round <<<"$summary"
        if [[ $target == facade ]]; then
            max_rss=$(awk -v a="$max_rss" -v b="$rss" 'BEGIN { print (b > a ? b : a) }')
        fi
        [[ $target == hop ]] && cache=n/a
        [[ -z $cache ]] && cache="unset (default)"
        echo "| $label | $tokens | $cache | $rps | $p50 | $p99 | $non2xx | $sockerr | $cpu | $canned | $rss | $per_round |"
    done
    echo
    echo "| ratio (CPU per request of the target) | median | by round | target |"
    echo "|---|---:|---|---|"
    ratio_line "facade ÷ nginx hop, 1 token" "facade, 1 token" "nginx hop, 1 token" "≤ 3"
    ratio_line "facade ÷ nginx hop, $MANY_TOKENS tokens" "facade, $MANY_TOKENS tokens" "nginx hop, $MANY_TOKENS tokens" "≤ 3"
    ratio_line "facade cache off ÷ nginx hop, 1 token" "facade cache off, 1 token" "nginx hop, 1 token" "≤ 3"
    ratio_line "facade cache off ÷ nginx hop, $MANY_TOKENS tokens" "facade cache off, $MANY_TOKENS tokens" "nginx hop, $MANY_TOKENS tokens" "≤ 3"
    ratio_line "cached facade ÷ nginx hop, 1 token" "facade cache on, 1 token" "nginx hop, 1 token" "≤ 1"
    ratio_line "cached facade ÷ nginx hop, $MANY_TOKENS tokens" "facade cache on, $MANY_TOKENS tokens" "nginx hop, $MANY_TOKENS tokens" "≤ 1"
    echo "| facade RSS after a run, MiB (largest) | $max_rss | | ≤ 32 |"
    echo
    echo "The default rows run with the read cache at its default TTL, so they answer from it too."
    echo "With one token and the cache off, most requests share another's call (coalescing stays"
    echo "on); with $MANY_TOKENS tokens each request is a call of its own: that row is the cost of a miss."
    [[ $PROFILE == 1 ]] && echo "PROFILE=1: perf was attached to the facade in round 1 of the profiled rows; its sampling cost is in their figures."
    return 0
}

# The report drawn as two bar charts beside it (bench/chart.sh): CPU per request by
# scenario, and the ratio table's medians against their targets, read back from the
# report so that the chart and the table cannot disagree.
#   $1 the file name's stamp, $2 the report
draw_charts() {
    local stamp=$1 report=$2 commit label summary cpu canned
    commit=$(git -C "$REPO_DIR" rev-parse --short HEAD)
    printf 'scenario\ttarget CPU µs/req\tcanned upstream CPU µs/req\n' >"$TMP/chart-cpu.tsv"
    for label in "${SCENARIOS[@]}"; do
        summary=$(summary_of "$label") || continue
        IFS='|' read -r _ _ _ _ _ _ _ _ _ cpu canned _ <<<"$summary"
        printf '%s\t%s\t%s\n' "$label" "$cpu" "$canned" >>"$TMP/chart-cpu.tsv"
    done
    bash "$BENCH_DIR/chart.sh" "$TMP/chart-cpu.tsv" "$OUT_DIR/hotpath-$stamp-cpu.svg" \
        "Hot path, commit $commit: CPU per request (median of $ROUNDS rounds)" "CPU µs per request" || return 1
    { printf 'ratio\tmeasured (median)\ttarget (at most)\n'
      awk -F' *[|] *' '$2 ~ / ÷ nginx hop/ {
          median = $3; sub(/ .*/, "", median); if (median == "n/a") median = "-"
          aim = $5; sub(/^≤ /, "", aim)
          printf "%s\t%s\t%s\n", $2, median, aim
      }' <<<"$report"; } >"$TMP/chart-ratios.tsv"
    bash "$BENCH_DIR/chart.sh" "$TMP/chart-ratios.tsv" "$OUT_DIR/hotpath-$stamp-ratios.svg" \
        "Hot path, commit $commit: facade CPU per request ÷ the nginx hop's" "ratio"
}

# ---------------------------------------------------------------- main

main() {
    cd "$REPO_DIR"
    install_missing
    build_facade
    PROFILE_REPORT=$TMP/profile.txt

    local body
    body=$(<"$BENCH_DIR/canned-conversation.json")
    [[ $body == *[\$\'\\]* ]] && die "canned-conversation.json must not hold \$, ' or \\ (nginx string)"
    start_nginx canned "$BENCH_DIR/canned-upstream.conf.in" "@BODY@=$body"
    CANNED_PID=$STARTED_PID CANNED_PORT=$STARTED_PORT
    log "canned upstream on 127.0.0.1:$CANNED_PORT; temp dir $TMP"

    # Which rows perf samples with PROFILE=1 (round 1 only): a hit and a miss.
    local profile_hit="" profile_miss=""
    [[ $PROFILE == 1 ]] && profile_hit=hit profile_miss=miss
    SCENARIOS=(
        "nginx hop, 1 token" "nginx hop, $MANY_TOKENS tokens"
        "facade, 1 token" "facade, $MANY_TOKENS tokens"
        "facade cache on, 1 token" "facade cache on, $MANY_TOKENS tokens"
        "facade cache off, 1 token" "facade cache off, $MANY_TOKENS tokens"
    )
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        log "round $ROUND of $ROUNDS"
        scenario "nginx hop, 1 token" hop 1 "" ""
        scenario "nginx hop, $MANY_TOKENS tokens" hop "$MANY_TOKENS" "" ""
        scenario "facade, 1 token" facade 1 "" ""
        scenario "facade, $MANY_TOKENS tokens" facade "$MANY_TOKENS" "" ""
        scenario "facade cache on, 1 token" facade 1 60000 "$profile_hit"
        scenario "facade cache on, $MANY_TOKENS tokens" facade "$MANY_TOKENS" 60000 ""
        scenario "facade cache off, 1 token" facade 1 0 ""
        scenario "facade cache off, $MANY_TOKENS tokens" facade "$MANY_TOKENS" 0 "$profile_miss"
        profile_hit="" profile_miss=""
    done

    mkdir -p "$OUT_DIR"
    local stamp report
    stamp=$(date -u +%Y%m%d-%H%M%S)
    report=$(print_report)
    echo
    echo "$report"
    echo "$report" >"$OUT_DIR/hotpath-$stamp.md"
    echo
    echo "table saved to bench/out/hotpath-$stamp.md"
    if draw_charts "$stamp" "$report"; then
        echo "charts: bench/out/hotpath-$stamp-cpu.svg, bench/out/hotpath-$stamp-ratios.svg"
    else
        log "the charts were not drawn (bench/chart.sh said why above); the table stands"
    fi
    if [[ $PROFILE == 1 ]]; then
        log "writing the profile report"
        write_profile_report
        cp "$PROFILE_REPORT" "$OUT_DIR/profile-$stamp.txt"
        echo "profile: $PROFILE_REPORT (copied to bench/out/profile-$stamp.txt);" \
            "perf data: $TMP/perf-*.data"
    fi
}

main "$@"
