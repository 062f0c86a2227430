#!/usr/bin/env bash
# Webhook subscriptions under load (issue 19): SUBS subscriptions to one local receiver
# (RECEIVER=rust, the default: `feed receive` of examples/feed, fast enough to measure
# the facade; RECEIVER=python: bench/subscription-receiver.py), a facade with its embedded sandbox making
# ACTIVITY changes a minute, then:
#   1. steady state for STEADY_SECS: latency from each event's occurredAt to its arrival,
#      p50 / p99 / max;
#   2. a burst of BURST PATCHes (8 at a time; each is one event: Qpien's webhook of an
#      update made through the facade is the same change, not a second event):
#      deliveries per second until every subscription has all;
#   3. the receiver down for OUTAGE_SECS while the activity goes on, then back: the time
#      to drain the backlog, the facade's RSS sampled during the outage, and whether every
#      event reached every subscription (exactly once after de-duplication by webhook-id;
#      how many duplicates without).
# Prints one table. Defaults are the issue's: SUBS=100 ACTIVITY=60 BURST=1000
# OUTAGE_SECS=300 STEADY_SECS=60; BIN defaults to the release build.
# The receiver is one process on the same two cores as the facade.
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

RECEIVER=${RECEIVER:-rust}
[[ $RECEIVER == rust || $RECEIVER == python ]] || die "RECEIVER must be rust or python, got '$RECEIVER'"
if [[ -z ${BIN:-} ]]; then
    log "building the release binary (cargo build --release --locked --bin qpien-rest)"
    (cd "$REPO_DIR" && cargo build --release --locked --bin qpien-rest --quiet)
    BIN=$REPO_DIR/target/release/qpien-rest
fi
if [[ $RECEIVER == rust ]]; then
    log "building the receiver (cargo build --release --locked --example feed)"
    (cd "$REPO_DIR" && cargo build --release --locked --example feed --quiet)
    RECEIVE=("$REPO_DIR/target/release/examples/feed" receive)
else
    RECEIVE=(python3 "$BENCH_DIR/subscription-receiver.py")
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
start_on_free_port receiver RECEIVER_PORT OUT="$OUT" "${RECEIVE[@]}"
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

# Waits until every subscription has every event of the feed (or LIMIT seconds). One
# checker reads the receiver's file as it grows, so checking costs little next to the
# facade's work.
wait_all_delivered() {
    feed_ids >"$TMP/feed"
    python3 - "$OUT" "$TMP/feed" "$SUBS" "$1" <<'PY' || die "not every subscription got every event within ${1}s"
import sys, time
out, feed, subs, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
want = set(open(feed).read().split())
missing = {}  # subscription -> the ids of the feed it has not had yet
seen = set()
deadline = time.monotonic() + limit
with open(out) as received:
    partial = ""
    while True:
        chunk = received.read()
        lines = (partial + chunk).split("\n")
        partial = lines.pop()
        for line in lines:
            sub, id, *_ = line.split("\t")
            if sub not in seen:
                seen.add(sub)
                missing[sub] = set(want)
            missing[sub].discard(id)
        if len(seen) == subs and not any(missing.values()):
            sys.exit(0)
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.25)
PY
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
    "${RECEIVE[@]}" >>"$TMP/receiver.log" 2>&1 &
STARTED+=("$!")
BACK=$(date +%s.%N)
wait_all_delivered 1800
DRAINED=$(date +%s.%N)
rss_kib "$FACADE_PID" >>"$TMP/rss"

commit=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT_DIR=$BENCH_DIR/out
mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
{
    printf '### Webhook subscriptions, commit %s, %s cores, %s receiver\n\n' "$commit" "$(nproc)" "$RECEIVER"
    python3 - "$OUT" "$TMP/feed" "$SUBS" "$START" "$STEADY_END" "$BURST_START" "$BURST_END" "$BACK" "$DRAINED" "$TMP/rss" "$TMP/chart.tsv" <<'PY'
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
# Subscription n's URL ends in /s/n: one that got nothing counts too.
missing = sum(1 for n in range(1, subs + 1) for id in want if (str(n), id) not in pairs)
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
with open(sys.argv[11], "w") as chart:
    chart.write("steady state\tp50\tp99\tmax\n")
    chart.write(f"latency, ms\t{pct(steady, 50):.1f}\t{pct(steady, 99):.1f}\t{max(steady, default=0):.1f}\n")
PY
} | tee "$OUT_DIR/subscriptions-$stamp.md"
if bash "$BENCH_DIR/chart.sh" "$TMP/chart.tsv" "$OUT_DIR/subscriptions-$stamp.svg" \
    "$SUBS webhook subscriptions, steady state, commit $commit" "ms"; then
    echo
    echo "table: bench/out/subscriptions-$stamp.md, chart: bench/out/subscriptions-$stamp.svg"
fi
