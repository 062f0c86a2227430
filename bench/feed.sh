#!/usr/bin/env bash
# The change feed (issue 18): how fast the event log appends and serves catch-up reads on
# each store, and how one facade fans its events out to many SSE streams. Prints two
# tables and draws the fan-out's latencies (bench/chart.sh) into bench/out/.
#
#   bash bench/feed.sh     # SECONDS_PER_LEVEL=5 EVENTS=100000 STREAMS=1000 FANOUT_SECS=90
#
# Not part of CI. The load is examples/feed (release build):
# - `feed log`, the event log as a library (EventLog, no HTTP): appends a second with 1, 8
#   and 64 concurrent appenders for SECONDS_PER_LEVEL each, then pages of 100 after random
#   cursors of a log of EVENTS events, with 1 and 8 readers; on the embedded SQLite file,
#   and on a real redis-server (appendonly yes) with appendfsync everysec, and always
#   unless FSYNC_ALWAYS=0.
# - `feed fanout`: a facade (release binary, embedded sandbox, service mode, its activity
#   at ACTIVITY changes a minute) with STREAMS clients of GET /events, all after the same
#   cursor, and a PATCH through the facade every second for FANOUT_SECS. Latency from each
#   PATCH's answer to the event on every stream, and from the sandbox's occurredAt (which
#   includes its delivery to the facade); events any stream missed, against the feed
#   itself; facade RSS and CPU. PROFILE=1 adds a flat perf profile of the facade over the
#   fan-out (bench/out/feed-STAMP-profile.txt). PARTS=fanout (or log) runs one part only.
set -euo pipefail

SECONDS_PER_LEVEL=${SECONDS_PER_LEVEL:-5}
EVENTS=${EVENTS:-100000}
STREAMS=${STREAMS:-1000}
FANOUT_SECS=${FANOUT_SECS:-90}
ACTIVITY=${ACTIVITY:-60}
FSYNC_ALWAYS=${FSYNC_ALWAYS:-1}
PROFILE=${PROFILE:-0}
PARTS=${PARTS:-log,fanout}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out

log() { printf '>> %s\n' "$*" >&2; }
die() {
    printf 'feed: %s\n' "$*" >&2
    exit 1
}
for setting in SECONDS_PER_LEVEL EVENTS STREAMS FANOUT_SECS ACTIVITY; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a whole number above 0, got '${!setting}'"
done
((EVENTS >= 1000)) || die "EVENTS must be at least 1000"
TMP=$(mktemp -d -t qpien-feed.XXXXXX)
# shellcheck source=bench/procs.sh
source "$BENCH_DIR/procs.sh"
trap stop_all_and_clean EXIT
trap 'exit 130' INT TERM

# Each stream is a socket in the facade and one in the client.
wanted_fds=$((STREAMS + 512))
if (($(ulimit -n) < wanted_fds)); then
    ulimit -n "$wanted_fds" 2>/dev/null ||
        die "STREAMS=$STREAMS needs 'ulimit -n' of $wanted_fds; the hard limit is $(ulimit -Hn)"
fi

commands=(curl:curl python3:python3 redis-server:redis-server redis-cli:redis-tools gnuplot:gnuplot-nox)
((PROFILE)) && commands+=(perf:linux-perf)
install_commands "${commands[@]}"
log "building the release binary and the load (examples/feed)"
(cd "$REPO_DIR" && cargo build --release --locked --quiet --bin qpien-rest --example feed)
BIN=$REPO_DIR/target/release

# redis-server takes its port as an argument, not from the environment.
start_redis() {
    local port pid
    mkdir -p "$TMP/redis"
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        redis-server --port "$port" --bind 127.0.0.1 --dir "$TMP/redis" --save '' \
            --appendonly yes --appendfsync everysec >>"$TMP/redis.log" 2>&1 &
        pid=$!
        STARTED+=("$pid")
        if wait_listening "$pid" "$port"; then
            REDIS_PID=$pid REDIS_PORT=$port
            return
        fi
        stop "$pid"
    done
    die "redis-server did not start; see $TMP/redis.log"
}

# One library-level run: $1 names it, the rest is its store's VAR=value settings.
log_run() {
    local name=$1
    shift
    log "event log, $name: appends (${SECONDS_PER_LEVEL}s per level), then reads on $EVENTS events"
    env "$@" SECONDS_PER_LEVEL="$SECONDS_PER_LEVEL" EVENTS="$EVENTS" "$BIN/examples/feed" log \
        >"$TMP/log-$name.json" 2>>"$TMP/feed-log.log" || die "feed log failed; see $TMP/feed-log.log"
}

if [[ ,$PARTS, == *,log,* ]]; then
    log_run sqlite DATA_DIR="$TMP/sqlite"
    rm -rf "$TMP/sqlite"
    start_redis
    log_run redis-everysec REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    if ((FSYNC_ALWAYS)); then
        redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
        redis-cli -p "$REDIS_PORT" CONFIG SET appendfsync always >/dev/null
        log_run redis-always REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
    fi
    stop "$REDIS_PID"
    rm -rf "$TMP/redis"
fi
commit=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
if [[ ,$PARTS, == *,fanout,* ]]; then
    start_on_free_port facade PORT HOST=127.0.0.1 SHUTDOWN_DRAIN_SECS=0 DATA_DIR="$TMP/facade-data" \
        SANDBOX_ACTIVITY_PER_MINUTE="$ACTIVITY" SANDBOX_RATE_LIMIT_PER_MINUTE=1000000 \
        QPIEN_RATE_LIMIT_PER_MINUTE=1000000 EVENT_STREAMS_PER_KEY=100000 "$BIN/qpien-rest"
    facade_pid=$STARTED_PID facade_port=$STARTED_PORT
    curl -sf "http://127.0.0.1:$facade_port/conversations/changes" >/dev/null ||
        die "the facade offers no change feed; see $TMP/facade.log"
    if ((PROFILE)); then
        perf record -F 499 -o "$TMP/perf.data" -p "$facade_pid" >"$TMP/perf.log" 2>&1 &
        perf_pid=$!
    fi
    log "fan-out: $STREAMS streams, a PATCH a second for ${FANOUT_SECS}s, sandbox activity $ACTIVITY a minute"
    env FACADE="http://127.0.0.1:$facade_port" FACADE_PID="$facade_pid" STREAMS="$STREAMS" \
        SECONDS="$FANOUT_SECS" CLK_TCK="$(getconf CLK_TCK)" "$BIN/examples/feed" fanout \
        >"$TMP/fanout.json" 2>>"$TMP/feed-fanout.log" || die "feed fanout failed; see $TMP/feed-fanout.log"
    if ((PROFILE)); then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" || true
        perf report -i "$TMP/perf.data" --no-children --sort dso,sym --percent-limit 1 --stdio \
            >"$OUT_DIR/feed-$stamp-profile.txt" 2>/dev/null
        rm -f "$TMP/perf.data"
    fi
    stop "$facade_pid"
fi

python3 - "$TMP" "$commit" "$(nproc)" "$SECONDS_PER_LEVEL" "$FANOUT_SECS" "$ACTIVITY" \
    "$TMP/chart.tsv" <<'PY' | tee "$OUT_DIR/feed-$stamp.md"
import json, os, sys
tmp, commit, cores, level, secs, activity, chart = sys.argv[1:]
def load(name):
    path = os.path.join(tmp, name)
    return json.load(open(path)) if os.path.exists(path) else None
def num(v):
    return "-" if v is None else f"{v:,.0f}" if isinstance(v, (int, float)) and v >= 100 else str(v)
def ms(us):
    return "-" if us is None else f"{us / 1000:.1f}"

names = {"sqlite": "SQLite file (WAL, synchronous=FULL)",
         "redis-everysec": "Redis stream, AOF everysec",
         "redis-always": "Redis stream, AOF always"}
if any(load(f"log-{key}.json") for key in names):
    print(f"### Event log appends and catch-up reads, commit {commit}, {cores} cores, {level}s a level")
    print()
    print("| store | appends/s, 1 appender | 8 appenders | 64 appenders | append p50 / p99 ms at 64 | "
          "catch-up pages/s (100 events), 1 reader | 8 readers | page p99 ms at 8 | failures |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in names.items():
        run = load(f"log-{key}.json")
        if run is None:
            continue
        a, r = run["appends"], run["reads"]
        failures = sum(a[k]["failed"] for k in a) + sum(r[k]["failed"] for k in r)
        print(f"| {label} | {num(a['1']['perSecond'])} | {num(a['8']['perSecond'])} | "
              f"{num(a['64']['perSecond'])} | {ms(a['64']['p50Micros'])} / {ms(a['64']['p99Micros'])} | "
              f"{num(r['1']['pagesPerSecond'])} | {num(r['8']['pagesPerSecond'])} | "
              f"{ms(r['8']['p99Micros'])} | {failures} |")
    print()
f = load("fanout.json")
if f is None:
    sys.exit(0)
def spread(s):
    return f"{s['p50']} / {s['p99']} / {s['max']}"
mib = lambda kib: f"{kib / 1024:.1f}"
rss = f["rssKiB"]
print(f"### Fan-out to {f['streams']} SSE streams on one facade, commit {commit}, {cores} cores, "
      f"{secs}s, a PATCH a second, sandbox activity {activity} a minute")
print()
print("| measure | value | target |")
print("|---|---:|---|")
rows = [
    ("streams open (refused; ended by the facade)",
     f"{f['opened']} in {f['openSeconds']} s ({f['refused']}; {f['endedEarly']})", f"{f['streams']}"),
    ("events in the feed over the run (PATCHes answered, failed)",
     f"{f['eventsInFeed']} ({f['patchesAnswered']}, {f['patchFailures']})", ""),
    ("events missed by any stream (stream × event pairs)",
     f"{f['eventsMissedByAnyStream']} ({f['missedPairs']})", "0"),
    ("streams whose ids differ from the feed's sequence", f"{f['streamsNotExactlyInOrder']}", "0"),
    (f"PATCH answered → event on a stream, p50 / p99 / max ms ({f['fromPatchMs']['samples']} deliveries)",
     spread(f["fromPatchMs"]), "p99 < 50"),
    (f"PATCH sent → event on a stream, p50 / p99 / max ms (its whole path)",
     spread(f["fromPatchSentMs"]), ""),
    (f"PATCH answered → event on the last of the streams, p50 / p99 / max ms ({f['fromPatchLastStreamMs']['samples']} events)",
     spread(f["fromPatchLastStreamMs"]), ""),
    (f"sandbox occurredAt → event on a stream, p50 / p99 / max ms ({f['fromOccurredAtMs']['samples']} deliveries; upper bound)",
     spread(f["fromOccurredAtMs"]), ""),
    ("facade RSS before the streams / streams open / at the end, MiB",
     f"{mib(rss['before'])} / {mib(rss['idle'])} / {mib(rss['end'])}", ""),
    ("memory per idle stream, KiB", f"{f['idleKiBPerStream']}", "< 64"),
    ("facade CPU over the run, cores (µs per delivery)",
     f"{f['facadeCores']} ({f['facadeMicrosPerDelivery']})", ""),
    ("the load's own CPU, cores (same machine)", f"{f['clientCores']}", ""),
]
for row in rows:
    print("| " + " | ".join(row) + " |")
with open(chart, "w") as out:
    out.write("latency\tp50\tp99\tmax\n")
    for label, key in (("PATCH answered to a stream", "fromPatchMs"),
                       ("PATCH sent to a stream", "fromPatchSentMs"),
                       ("PATCH answered to the last stream", "fromPatchLastStreamMs"),
                       ("sandbox occurredAt to a stream", "fromOccurredAtMs")):
        s = f[key]
        out.write(f"{label}\t{s['p50']}\t{s['p99']}\t{s['max']}\n")
PY
if [[ -s $TMP/chart.tsv ]] && bash "$BENCH_DIR/chart.sh" "$TMP/chart.tsv" "$OUT_DIR/feed-$stamp.svg" \
    "Event latency on $STREAMS SSE streams, commit $commit" "milliseconds"; then
    echo
    echo "chart: bench/out/feed-$stamp.svg"
fi
