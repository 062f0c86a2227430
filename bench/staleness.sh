#!/usr/bin/env bash
# How fresh polling callers are kept, and at what cost to Qpien: the same pollers against
# a facade told of changes by Qpien's webhooks (TTL 60 s) and against one that is not
# (TTL 5 s). The sandbox plays a busy account: 100 requests a minute, 50 ms a call, and
# its activity generator making customers write at ACTIVITY events a minute. Pollers
# (examples/staleness.rs): 50 of one page and 10 of each of 10 conversations, once every
# INTERVAL_MS each. Prints one table and draws it (bench/chart.sh) into bench/out/.
#
#   bash bench/staleness.sh          # SECONDS_PER_RUN=120 INTERVAL_MS=1000 ACTIVITY=60
#
# Not part of CI. Staleness: from a change in the sandbox (its message's time) to the end
# of the first poll that shows it. "Older than told": polls that returned a conversation
# older than a change whose delivery the facade had already acknowledged when the poll
# began (the pollers relay the sandbox's deliveries to see when).
set -euo pipefail

SECONDS_PER_RUN=${SECONDS_PER_RUN:-120}
INTERVAL_MS=${INTERVAL_MS:-1000}
ACTIVITY=${ACTIVITY:-60}
SECRET=0123456789abcdef0123456789abcdef

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'staleness: %s\n' "$*" >&2
    exit 1
}
for setting in SECONDS_PER_RUN INTERVAL_MS ACTIVITY; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
TMP=$(mktemp -d -t qpien-staleness.XXXXXX)
# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"
trap stop_all_and_clean EXIT
trap 'exit 130' INT TERM

install_commands curl:curl gnuplot:gnuplot-nox
log "building the release binaries and the pollers"
(cd "$REPO_DIR" && cargo build --release --locked --quiet --bin qpien-rest --bin qpien-sandbox --example staleness)
BIN=$REPO_DIR/target/release

declare -a ROWS=()

# One run: $1 its name, $2 READ_CACHE_TTL_MS, $3 "push" to have the sandbox deliver
# webhooks (through the pollers' relay) or "poll" for none.
run() {
    local name=$1 ttl=$2 mode=$3 relay_port="" sandbox_port facade_port
    local -a webhook_env=() facade_env=() relay_env=()
    if [[ $mode == push ]]; then
        relay_port=$(free_port)
        webhook_env=(SANDBOX_WEBHOOK_URL="http://127.0.0.1:$relay_port/" SANDBOX_WEBHOOK_SECRET="$SECRET")
        facade_env=(QPIEN_WEBHOOK_SECRET="$SECRET")
        relay_env=(RELAY_PORT="$relay_port")
    fi
    start_on_free_port "sandbox-$name" SANDBOX_PORT \
        SANDBOX_RATE_LIMIT_PER_MINUTE=100 SANDBOX_LATENCY_MS=50 \
        SANDBOX_ACTIVITY_PER_MINUTE="$ACTIVITY" "${webhook_env[@]}" "$BIN/qpien-sandbox"
    sandbox_port=$STARTED_PORT
    start_on_free_port "facade-$name" PORT HOST=127.0.0.1 SHUTDOWN_DRAIN_SECS=0 \
        QPIEN_API_URL="http://127.0.0.1:$sandbox_port/api/v1" \
        QPIEN_CLIENT_ID=demo-client QPIEN_CLIENT_SECRET=demo-secret \
        READ_CACHE_TTL_MS="$ttl" "${facade_env[@]}" "$BIN/qpien-rest"
    facade_port=$STARTED_PORT
    log "$name: ${SECONDS_PER_RUN}s of polling"
    env FACADE="http://127.0.0.1:$facade_port" SECONDS="$SECONDS_PER_RUN" INTERVAL_MS="$INTERVAL_MS" \
        "${relay_env[@]}" "$BIN/examples/staleness" >"$TMP/$name.json" 2>>"$TMP/pollers-$name.log" ||
        die "the pollers failed; see $TMP/pollers-$name.log"
    curl -sf "http://127.0.0.1:$sandbox_port/stats" >"$TMP/stats-$name.json" ||
        die "the sandbox's /stats did not answer"
    ROWS+=("$(python3 - "$name" "$TMP/$name.json" "$TMP/stats-$name.json" <<'PY'
import json, sys
name, path, stats_path = sys.argv[1], sys.argv[2], sys.argv[3]
stats = json.load(open(stats_path))
report = json.load(open(path))
s = report["stalenessMs"]
print("\t".join(str(v) for v in [
    name, report["requests"], stats["requests"], stats["rateLimited"],
    report["byStatus"].get("429", 0), report["changesSeen"],
    s["p50"], s["p99"], s["max"],
    report["deliveriesAcknowledged"] if report["deliveriesAcknowledged"] else "-",
    report["pollsOlderThanAcknowledged"] if report["deliveriesAcknowledged"] else "-",
]))
PY
)")
    local pid
    for pid in "${STARTED[@]}"; do stop "$pid"; done
    STARTED=()
}

run "webhooks, TTL 60 s" 60000 push
run "no webhooks, TTL 5 s" 5000 poll

commit=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
{
echo "### Staleness and cost of polling, commit $commit, $(nproc) cores, ${SECONDS_PER_RUN}s a run, a poll every ${INTERVAL_MS} ms, activity $ACTIVITY a minute"
echo
echo "| run | REST requests | Qpien calls | Qpien 429s | 429s to callers | changes seen | staleness p50 ms | p99 ms | max ms | deliveries acknowledged | polls older than told |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "${ROWS[@]}"; do
    IFS=$'\t' read -r -a f <<<"$row"
    printf '|'
    printf ' %s |' "${f[@]}"
    echo
done
} | tee "$OUT_DIR/staleness-$stamp.md"

{
    printf 'run\tp50\tp99\tmax\n'
    for row in "${ROWS[@]}"; do
        IFS=$'\t' read -r -a f <<<"$row"
        printf '%s\t%s\t%s\t%s\n' "${f[0]}" "${f[6]}" "${f[7]}" "${f[8]}"
    done
} >"$TMP/chart.tsv"
if bash "$BENCH_DIR/chart.sh" "$TMP/chart.tsv" "$OUT_DIR/staleness-$stamp.svg" \
    "Staleness seen by pollers, commit $commit" "milliseconds"; then
    echo
    echo "chart: bench/out/staleness-$stamp.svg"
fi
