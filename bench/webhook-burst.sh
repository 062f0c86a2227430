#!/usr/bin/env bash
# A burst of forged Qpien webhook deliveries: COUNT deliveries with a wrong signature,
# CONCURRENCY at a time, against a fresh facade (release build, service mode over a
# standalone sandbox, QPIEN_WEBHOOK_SECRET set), with one correctly signed delivery sent
# in the middle of the burst. Qpien's calls are counted by the sandbox. Prints one table: answers by status, the facade's CPU per rejected delivery,
# its RSS before and after, and whether the valid delivery took effect.
#
#   bash bench/webhook-burst.sh            # COUNT=10000 CONCURRENCY=32
#
# Not part of CI. Needs ab (apache2-utils), curl and openssl; installs what it lacks.
set -euo pipefail

COUNT=${COUNT:-10000}
CONCURRENCY=${CONCURRENCY:-32}
SECRET=0123456789abcdef0123456789abcdef
CONVERSATION_ID=6650a1000000000000000001

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
CLK_TCK=$(getconf CLK_TCK)

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'webhook-burst: %s\n' "$*" >&2
    exit 1
}
for setting in COUNT CONCURRENCY; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
TMP=$(mktemp -d -t qpien-webhook-burst.XXXXXX)

# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"

trap stop_all_and_clean EXIT
trap 'exit 130' INT TERM

install_commands ab:apache2-utils curl:curl openssl:openssl pgrep:procps gnuplot:gnuplot-nox
log "building the release binaries (cargo build --release --locked --bin qpien-rest --bin qpien-sandbox)"
(cd "$REPO_DIR" && cargo build --release --locked --bin qpien-rest --bin qpien-sandbox --quiet)
FACADE_BIN=$REPO_DIR/target/release/qpien-rest
SANDBOX_BIN=$REPO_DIR/target/release/qpien-sandbox

# Calls of getConversation the sandbox has answered.
qpien_reads() {
    curl -sf "http://127.0.0.1:$SANDBOX_PORT/stats" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["operations"].get("getConversation", 0))'
}

start_on_free_port sandbox SANDBOX_PORT "$SANDBOX_BIN"
SANDBOX_PORT=$STARTED_PORT
start_on_free_port facade PORT HOST=127.0.0.1 SHUTDOWN_DRAIN_SECS=0 \
    QPIEN_API_URL="http://127.0.0.1:$SANDBOX_PORT/api/v1" \
    QPIEN_CLIENT_ID=demo-client QPIEN_CLIENT_SECRET=demo-secret \
    QPIEN_WEBHOOK_SECRET="$SECRET" READ_CACHE_TTL_MS=60000 "$FACADE_BIN"
FACADE_PID=$STARTED_PID
URL=http://127.0.0.1:$STARTED_PORT
# A forged delivery: a plausible body, a signature made with another key.
printf '{"_id":"6650e100000000000000%04x","event":"NEW_INCOMING_MESSAGE","data":{"message":{"conversation":"%s"}}}' \
    "$RANDOM" "$CONVERSATION_ID" >"$TMP/forged.json"
FORGED=$(openssl dgst -sha256 -hmac "not-the-secret" -hex <"$TMP/forged.json" | awk '{ print $NF }')
VALID_BODY=$(printf '{"_id":"6650e1000000000000000fff","event":"NEW_INCOMING_MESSAGE","data":{"message":{"conversation":"%s"}}}' "$CONVERSATION_ID")
VALID_SIGNATURE=$(printf '%s' "$VALID_BODY" | openssl dgst -sha256 -hmac "$SECRET" -hex | awk '{ print $NF }')

# Warm: the conversation is cached, so the valid delivery's effect shows as a miss after it.
curl -sf -o /dev/null "$URL/conversations/$CONVERSATION_ID"
curl -sf -o /dev/null "$URL/conversations/$CONVERSATION_ID"
calls_before=$(qpien_reads)
rss_before=$(rss_kib "$FACADE_PID")
cpu_before=$(cpu_ticks "$FACADE_PID")
log "$COUNT forged deliveries, $CONCURRENCY at a time; a valid one in the middle"
ab -k -q -n "$COUNT" -c "$CONCURRENCY" -p "$TMP/forged.json" -T application/json \
    -H "X-Qpien-Signature: $FORGED" "$URL/webhooks/qpien" >"$TMP/ab.txt" 2>&1 &
AB_PID=$!
STARTED+=("$AB_PID")
# In the middle: once the facade has refused a quarter of the burst.
while kill -0 "$AB_PID" 2>/dev/null; do
    refused=$(curl -s "$URL/metrics" | awk '/^qpien_rest_webhook_events_total\{type="none",outcome="bad-signature"\}/ { print $2 }')
    ((${refused:-0} >= COUNT / 4)) && break
done
valid_status=$(curl -s -o "$TMP/valid.json" -w '%{http_code}' -X POST "$URL/webhooks/qpien" \
    -H 'Content-Type: application/json' -H "X-Qpien-Signature: $VALID_SIGNATURE" -d "$VALID_BODY")
ab_running=no
kill -0 "$AB_PID" 2>/dev/null && ab_running=yes
wait "$AB_PID" || die "ab failed: $(tail -n 5 "$TMP/ab.txt")"
forget "$AB_PID"
cpu_after=$(cpu_ticks "$FACADE_PID")
rss_after=$(rss_kib "$FACADE_PID")
curl -sf -o /dev/null "$URL/conversations/$CONVERSATION_ID"
calls_after=$(qpien_reads)
metrics=$(curl -s "$URL/metrics")
rejected=$(awk '/^qpien_rest_webhook_events_total\{type="none",outcome="bad-signature"\}/ { print $2 }' <<<"$metrics")
applied=$(awk '/^qpien_rest_webhook_events_total\{type="NEW_INCOMING_MESSAGE",outcome="applied"\}/ { print $2 }' <<<"$metrics")
non2xx=$(awk '/Non-2xx responses:/ { print $3 }' "$TMP/ab.txt")
failed=$(awk '/Failed requests:/ { print $3 }' "$TMP/ab.txt")
rps=$(awk '/Requests per second:/ { print $4 }' "$TMP/ab.txt")
cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v hz="$CLK_TCK" -v n="$COUNT" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
commit=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)

OUT_DIR=$BENCH_DIR/out
mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
rss_before_mib=$(awk -v a="$rss_before" 'BEGIN { printf "%.1f", a / 1024 }')
rss_after_mib=$(awk -v a="$rss_after" 'BEGIN { printf "%.1f", a / 1024 }')
cat <<TABLE | tee "$OUT_DIR/webhook-burst-$stamp.md"
### Forged webhook deliveries, commit $commit, $(nproc) cores

| measure | value |
|---|---:|
| forged deliveries sent | $COUNT |
| answered 401 (ab's non-2xx; failed connections: ${failed:-0}) | ${non2xx:-0} |
| counted \`bad-signature\` by the facade | ${rejected:-0} |
| deliveries per second | ${rps:-?} |
| facade CPU per forged delivery, µs (user + system) | $cpu_us |
| facade RSS before / after, MiB | $rss_before_mib / $rss_after_mib |
| valid delivery in the middle (burst still running: $ab_running) | HTTP $valid_status, $(tr -d '\n' <"$TMP/valid.json") |
| \`applied\` counted | ${applied:-0} |
| Qpien calls for the conversation, before / after the burst and one read | ${calls_before:-0} / ${calls_after:-0} |
TABLE

printf 'measure\tvalue\nCPU µs per forged delivery\t%s\nRSS MiB before\t%s\nRSS MiB after\t%s\n' \
    "$cpu_us" "$rss_before_mib" "$rss_after_mib" >"$TMP/chart.tsv"
if bash "$BENCH_DIR/chart.sh" "$TMP/chart.tsv" "$OUT_DIR/webhook-burst-$stamp.svg" \
    "$COUNT forged webhook deliveries, commit $commit" "µs or MiB"; then
    echo
    echo "table: bench/out/webhook-burst-$stamp.md, chart: bench/out/webhook-burst-$stamp.svg"
fi
