#!/usr/bin/env bash
# Webhook subscriptions under load (issue 19): SUBS subscriptions to one local receiver
# (bench/subscription-receiver.py), a facade with its embedded sandbox making
# ACTIVITY changes a minute, then:
#   1. steady state for STEADY_SECS: latency from each event's occurredAt to its arrival,
#      p50 / p99 / max;
#   2. a burst of BURST PATCHes (8 at a time; each is two events: the facade's and the
#      sandbox's webhook of it): deliveries per second until every subscription has all;
#   3. the receiver down for OUTAGE_SECS while the activity goes on, then back: the time
#      to drain the backlog, the facade's RSS sampled during the outage, and whether every
#      event reached every subscription (exactly once after de-duplication by webhook-id;
#      how many duplicates without).
# Prints one table. Defaults are the issue's: SUBS=100 ACTIVITY=60 BURST=1000
# OUTAGE_SECS=300 STEADY_SECS=60; BIN defaults to the release build.
#
#   bash bench/subscriptions.sh
#   SUBS=10 BURST=100 OUTAGE_SECS=20 STEADY_SECS=20 BIN=target/debug/qpien-rest bash bench/subscriptions.sh
#
# Not part of CI. Needs curl and python3.
set -euo pipefail

SUBS=${SUBS:-100}
ACTIVITY=${ACTIVITY:-60}
BURST=${BURST:-1000}
OUTAGE_SECS=${OUTAGE_SECS:-300}
STEADY_SECS=${STEADY_SECS:-60}
CONVERSATION_ID=6650a1000000000000000001

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'subscriptions: %s\n' "$*" >&2
    exit 1
}
for setting in SUBS ACTIVITY BURST OUTAGE_SECS STEADY_SECS; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
TMP=$(mktemp -d -t qpien-subscriptions.XXXXXX)

# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"
trap stop_all_and_clean EXIT
trap 'exit 130' INT TERM

if [[ -z ${BIN:-} ]]; then
    log "building the release binary (cargo build --release --locked --bin qpien-rest)"
    (cd "$REPO_DIR" && cargo build --release --locked --bin qpien-rest --quiet)
    BIN=$REPO_DIR/target/release/qpien-rest
fi
OUT=$TMP/received.tsv
: >"$OUT"

# Retries at most 10 s apart, so the backlog drains soon after the receiver is back.
start_on_free_port facade PORT HOST=127.0.0.1 DATA_DIR="$TMP/data" \
    SANDBOX_ACTIVITY_PER_MINUTE="$ACTIVITY" SANDBOX_RATE_LIMIT_PER_MINUTE=1000000 \
    QPIEN_RATE_LIMIT_PER_MINUTE=1000000 SUBSCRIPTION_RETRY_MAX_SECS=10 SUBSCRIPTIONS_PER_KEY=100000 \
    "$BIN"
FACADE_PID=$STARTED_PID
BASE=http://127.0.0.1:$STARTED_PORT
start_on_free_port receiver RECEIVER_PORT OUT="$OUT" python3 "$BENCH_DIR/subscription-receiver.py"
RECEIVER_PID=$STARTED_PID
RECEIVER_PORT=$STARTED_PORT

log "creating $SUBS subscriptions"
for n in $(seq 1 "$SUBS"); do
    curl -sf -o /dev/null -X POST "$BASE/subscriptions" -H 'content-type: application/json' \
        -d "{\"url\": \"http://127.0.0.1:$RECEIVER_PORT/s/$n\"}" || die "subscription $n refused"
done
START=$(date +%s.%N)
# Events before the last subscription existed went to some subscriptions only: the
# counts are of the events after it.
CURSOR=$(curl -sf "$BASE/conversations/changes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')

# The events of the feed, by id, from the log itself (never from the receiver).
feed_ids() {
    local after=$CURSOR page
    while :; do
        page=$(curl -sf "$BASE/conversations/changes?after=$after&pageSize=500")
        python3 -c 'import json,sys; [print(e["id"]) for e in json.load(sys.stdin)["items"]]' <<<"$page"
        after=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])' <<<"$page")
        [[ $(python3 -c 'import json,sys; print(json.load(sys.stdin)["nextLink"] is not None)' <<<"$page") == True ]] || break
    done
}

# Waits until every subscription has every event of the feed (or LIMIT seconds).
wait_all_delivered() {
    local limit=$1 deadline=$((SECONDS + $1))
    feed_ids >"$TMP/feed"
    while ((SECONDS < deadline)); do
        if python3 - "$OUT" "$TMP/feed" "$SUBS" <<'PY'; then return 0; fi
import sys
want = set(open(sys.argv[2]).read().split())
got = {}
for line in open(sys.argv[1]):
    sub, id, *_ = line.split("\t")
    got.setdefault(sub, set()).add(id)
subs = int(sys.argv[3])
sys.exit(0 if len(got) == subs and all(want <= ids for ids in got.values()) else 1)
PY
        sleep 0.5
    done
    die "not every subscription got every event within ${limit}s"
}

log "steady state: ${STEADY_SECS}s at $ACTIVITY changes a minute"
sleep "$STEADY_SECS"
wait_all_delivered 60
STEADY_END=$(date +%s.%N)

log "burst: $BURST PATCHes, 8 at a time"
BURST_START=$(date +%s.%N)
for n in $(seq 1 "$BURST"); do ((n % 2)) && echo high || echo low; done |
    xargs -P 8 -I{} curl -sf -o /dev/null -X PATCH "$BASE/conversations/$CONVERSATION_ID" \
        -H 'content-type: application/merge-patch+json' -d '{"priority": "{}"}' || true
wait_all_delivered 1200
BURST_END=$(date +%s.%N)

log "receiver down for ${OUTAGE_SECS}s"
stop "$RECEIVER_PID"
: >"$TMP/rss"
OUTAGE_END=$((SECONDS + OUTAGE_SECS))
while ((SECONDS < OUTAGE_END)); do
    rss_kib "$FACADE_PID" >>"$TMP/rss"
    sleep 5
done
env -i PATH="$PATH" RECEIVER_PORT="$RECEIVER_PORT" OUT="$OUT" \
    python3 "$BENCH_DIR/subscription-receiver.py" >>"$TMP/receiver.log" 2>&1 &
STARTED+=("$!")
BACK=$(date +%s.%N)
wait_all_delivered 1800
DRAINED=$(date +%s.%N)
rss_kib "$FACADE_PID" >>"$TMP/rss"

python3 - "$OUT" "$TMP/feed" "$SUBS" "$START" "$STEADY_END" "$BURST_START" "$BURST_END" "$BACK" "$DRAINED" "$TMP/rss" <<'PY'
import sys
from datetime import datetime
out, feed, subs = sys.argv[1], sys.argv[2], int(sys.argv[3])
start, steady_end, burst_start, burst_end, back, drained = map(float, sys.argv[4:10])
rss = [int(x) for x in open(sys.argv[10]).read().split()]
rows = []
for line in open(out):
    sub, id, occurred, arrived = line.rstrip("\n").split("\t")
    at = datetime.fromisoformat(occurred.replace("Z", "+00:00")).timestamp()
    rows.append((sub, id, at, float(arrived)))
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")
steady = [(a - o) * 1000 for _, _, o, a in rows if start <= o and a <= steady_end]
burst = [r for r in rows if burst_start <= r[3] <= burst_end]
want = set(open(feed).read().split())
pairs = {}
for sub, id, _, _ in rows:
    if id in want:
        pairs[(sub, id)] = pairs.get((sub, id), 0) + 1
missing = sum(1 for sub in {r[0] for r in rows} for id in want if (sub, id) not in pairs)
dupes = sum(n - 1 for n in pairs.values())
print("| measure | value |")
print("|---|---|")
print(f"| subscriptions | {subs} |")
print(f"| steady state: deliveries | {len(steady)} |")
print(f"| steady state: latency p50 / p99 / max | {pct(steady, 50):.1f} / {pct(steady, 99):.1f} / {max(steady, default=float('nan')):.1f} ms |")
print(f"| burst: deliveries, seconds, per second | {len(burst)}, {burst_end - burst_start:.1f}, {len(burst) / (burst_end - burst_start):.0f} |")
print(f"| outage: backlog drained in | {drained - back:.1f} s |")
print(f"| outage: facade RSS first / max / last | {rss[0] // 1024} / {max(rss) // 1024} / {rss[-1] // 1024} MiB |")
print(f"| events in the feed, x subscriptions | {len(want)} x {subs} = {len(want) * subs} |")
print(f"| (subscription, event) pairs delivered, missing | {len(pairs)}, {missing} |")
print(f"| duplicates without de-duplication | {dupes} |")
PY
