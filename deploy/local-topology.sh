#!/usr/bin/env bash
# The `scale` topology of docker-compose.yml as plain processes on 127.0.0.1, for trying
# it out and for benchmarks: the standalone sandbox, a throwaway redis-server (own
# directory, no persistence), three facade replicas sharing it (REDIS_URL,
# QPIEN_REPLICAS=3, service mode with the sandbox's demo key) and HAProxy in front,
# checking /readyz, with deploy/haproxy.cfg, the file compose uses. Every port but the
# load balancer's is a free one.
#
# Run it:   deploy/local-topology.sh [--ready-file FILE]
#   PORT=8080           the load balancer's port
#   TOPOLOGY_PROFILE    debug (default) or release: which target/ binaries to run
#   TOPOLOGY_BUILD=0    do not run `cargo build` first (it is a no-op when up to date)
#   TOPOLOGY_ADMIN=1    each replica gets an ADMIN_PORT, as in docker-compose.yml:
#                       HAProxy checks it, /healthz, /readyz and /metrics are there
#                       only (TOPOLOGY_ADMIN_URLS); default 0, replicas serve them on
#                       their own port, as the benchmarks expect
#   TOPOLOGY_REDIS=0    no redis-server: the replicas run with REDIS_URL unset (even if
#                       set here), each alone, keeping to its share of the rate limit
#                       (QPIEN_RATE_LIMIT_PER_MINUTE / QPIEN_REPLICAS, still 3); the
#                       comparison run of bench/replicas.sh
# It prints the addresses, serves until Ctrl-C, SIGTERM or end of input on a pipe or
# terminal (with </dev/null it waits for a signal), then stops everything it started.
# Started in the background by another script, stop it with SIGTERM: a non-interactive
# shell starts background jobs with SIGINT ignored, and that cannot be undone.
# --ready-file FILE: once HAProxy serves, FILE gets KEY=VALUE lines (TOPOLOGY_URL,
# TOPOLOGY_REDIS_URL, TOPOLOGY_SANDBOX_URL, TOPOLOGY_REPLICA_URLS and TOPOLOGY_ADMIN_URLS
# separated by spaces),
# ready to `source`; removed on exit.
# Any other setting of the facade in the environment (READ_CACHE_TTL_MS, RUST_LOG,
# API_KEYS_FILE, ...) or of the sandbox (SANDBOX_RATE_LIMIT_PER_MINUTE) reaches them.
#
# Or from another script:
#   source deploy/local-topology.sh
#   trap topology_down EXIT
#   topology_up                       # returns once HAProxy serves; sets the names below
#   curl "$TOPOLOGY_URL/conversations"
#   topology_down
# topology_up sets TOPOLOGY_URL, TOPOLOGY_SANDBOX_URL, TOPOLOGY_REDIS_URL,
# TOPOLOGY_REPLICA_URLS (array), TOPOLOGY_ADMIN_URLS (array: where each replica's
# /healthz, /readyz and /metrics are, its own URL without TOPOLOGY_ADMIN),
# TOPOLOGY_DIR (logs: sandbox.log, redis.log,
# replica-N.log, haproxy.log; TOPOLOGY_REDIS_URL is empty with TOPOLOGY_REDIS=0); it
# returns non-zero, having stopped what it started, if something does not come up.

TOPOLOGY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOPOLOGY_REPLICA_COUNT=3 # deploy/haproxy.cfg names three servers
TOPOLOGY_PIDS=()
TOPOLOGY_NAMES=()

# The sandbox's public demo key (see README, "The sandbox"); not a secret.
TOPOLOGY_CLIENT_ID=demo-client
TOPOLOGY_CLIENT_SECRET=demo-secret

topology_log() { echo "topology: $*" >&2; }

topology_with_redis() { [ "${TOPOLOGY_REDIS:-1}" != 0 ]; }

# Refuses clearly when a program is missing, naming the package that brings it.
topology_check_tools() {
  local missing=() tool tools=(python3)
  topology_with_redis && tools+=(redis-server redis-cli)
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  # /usr/sbin is not on every user's PATH.
  TOPOLOGY_HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
  [ -x "$TOPOLOGY_HAPROXY" ] || missing+=(haproxy)
  if [ ${#missing[@]} -gt 0 ]; then
    topology_log "missing: ${missing[*]}"
    topology_log "install them with: apt-get install -y redis-server haproxy python3 (as root or with sudo)"
    return 1
  fi
}

topology_binaries() {
  local profile=${TOPOLOGY_PROFILE:-debug} flag=()
  case $profile in
    debug) ;;
    release) flag=(--release) ;;
    *)
      topology_log "TOPOLOGY_PROFILE must be debug or release, not '$profile'"
      return 1
      ;;
  esac
  if [ "${TOPOLOGY_BUILD:-1}" != 0 ]; then
    if ! command -v cargo >/dev/null 2>&1; then
      topology_log "cargo is missing: install Rust, or set TOPOLOGY_BUILD=0 with binaries in target/$profile"
      return 1
    fi
    topology_log "cargo build${flag[*]:+ ${flag[*]}} --bins (a no-op when up to date)"
    (cd "$TOPOLOGY_ROOT" && cargo build --locked --quiet "${flag[@]}" --bins) || return 1
  fi
  TOPOLOGY_FACADE_BIN=$TOPOLOGY_ROOT/target/$profile/qpien-rest
  TOPOLOGY_SANDBOX_BIN=$TOPOLOGY_ROOT/target/$profile/qpien-sandbox
  local bin
  for bin in "$TOPOLOGY_FACADE_BIN" "$TOPOLOGY_SANDBOX_BIN"; do
    if [ ! -x "$bin" ]; then
      topology_log "$bin is missing: cargo build ${flag[*]} --bins"
      return 1
    fi
  done
}

topology_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# topology_start NAME COMMAND...: in the background, output to $TOPOLOGY_DIR/NAME.log.
topology_start() {
  local name=$1
  shift
  "$@" >"$TOPOLOGY_DIR/$name.log" 2>&1 </dev/null &
  TOPOLOGY_PIDS+=($!)
  TOPOLOGY_NAMES+=("$name")
}

# topology_wait NAME COMMAND...: until COMMAND succeeds (15 s at most) or NAME dies.
topology_wait() {
  local name=$1 pid i
  shift
  pid=${TOPOLOGY_PIDS[${#TOPOLOGY_PIDS[@]} - 1]}
  for i in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  topology_log "$name did not come up; the end of its log:"
  tail -n 20 "$TOPOLOGY_DIR/$name.log" >&2
  return 1
}

topology_up() {
  if [ ${#TOPOLOGY_PIDS[@]} -gt 0 ]; then
    topology_log "already up at $TOPOLOGY_URL"
    return 1
  fi
  topology_check_tools || return 1
  topology_binaries || return 1
  TOPOLOGY_DIR=$(mktemp -d "${TMPDIR:-/tmp}/qpien-topology.XXXXXX")
  if ! topology__up "${PORT:-8080}"; then
    topology_down
    return 1
  fi
}

topology__up() {
  local lb_port=$1 port i
  if ! python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$lb_port" 2>/dev/null; then
    topology_log "port $lb_port is taken: set PORT to a free one"
    return 1
  fi
  port=$(topology_free_port)
  TOPOLOGY_SANDBOX_URL=http://127.0.0.1:$port
  topology_start sandbox env SANDBOX_HOST=127.0.0.1 SANDBOX_PORT="$port" "$TOPOLOGY_SANDBOX_BIN"
  topology_wait sandbox "$TOPOLOGY_FACADE_BIN" healthcheck "$TOPOLOGY_SANDBOX_URL/healthz" || return 1

  # Without Redis, REDIS_URL is taken out of the replicas' environment (env -u), so one
  # set by the caller cannot slip through.
  local redis_env=(-u REDIS_URL)
  TOPOLOGY_REDIS_URL=""
  if topology_with_redis; then
    port=$(topology_free_port)
    TOPOLOGY_REDIS_URL=redis://127.0.0.1:$port/
    redis_env=(REDIS_URL="$TOPOLOGY_REDIS_URL")
    mkdir "$TOPOLOGY_DIR/redis"
    # No RDB snapshots, no AOF: everything in it is rebuilt by the replicas.
    topology_start redis redis-server --bind 127.0.0.1 --port "$port" --dir "$TOPOLOGY_DIR/redis" \
      --save "" --appendonly no --daemonize no --logfile ""
    topology_wait redis redis-cli -h 127.0.0.1 -p "$port" ping || return 1
  fi

  TOPOLOGY_URL=http://127.0.0.1:$lb_port
  TOPOLOGY_REPLICA_URLS=()
  TOPOLOGY_ADMIN_URLS=()
  local replica_env=() admin_port admin_env
  for i in $(seq 1 "$TOPOLOGY_REPLICA_COUNT"); do
    port=$(topology_free_port)
    admin_port=$port
    admin_env=()
    if [ "${TOPOLOGY_ADMIN:-0}" = 1 ]; then
      admin_port=$(topology_free_port)
      admin_env=(ADMIN_PORT="$admin_port")
    fi
    TOPOLOGY_REPLICA_URLS+=("http://127.0.0.1:$port")
    TOPOLOGY_ADMIN_URLS+=("http://127.0.0.1:$admin_port")
    replica_env+=("QPIEN_REPLICA_$i=127.0.0.1:$port" "QPIEN_CHECK_PORT_$i=$admin_port")
    topology_start "replica-$i" env -u ADMIN_PORT -u ADMIN_HOST "${redis_env[@]}" "${admin_env[@]}" HOST=127.0.0.1 PORT="$port" \
      PUBLIC_BASE_URL="$TOPOLOGY_URL" \
      QPIEN_API_URL="$TOPOLOGY_SANDBOX_URL/api/v1" \
      QPIEN_CLIENT_ID="$TOPOLOGY_CLIENT_ID" QPIEN_CLIENT_SECRET="$TOPOLOGY_CLIENT_SECRET" \
      QPIEN_REPLICAS="$TOPOLOGY_REPLICA_COUNT" \
      "$TOPOLOGY_FACADE_BIN"
    topology_wait "replica-$i" "$TOPOLOGY_FACADE_BIN" healthcheck "http://127.0.0.1:$admin_port/readyz" || return 1
  done

  local haproxy_env=(env LB_BIND="127.0.0.1:$lb_port" "${replica_env[@]}")
  if ! "${haproxy_env[@]}" "$TOPOLOGY_HAPROXY" -q -c -f "$TOPOLOGY_ROOT/deploy/haproxy.cfg"; then
    topology_log "deploy/haproxy.cfg does not check"
    return 1
  fi
  # -db: stay in the foreground, so the PID recorded is HAProxy's.
  topology_start haproxy "${haproxy_env[@]}" "$TOPOLOGY_HAPROXY" -db -f "$TOPOLOGY_ROOT/deploy/haproxy.cfg"
  # Not /readyz: with TOPOLOGY_ADMIN=1 it is not on the port HAProxy routes to.
  topology_wait haproxy "$TOPOLOGY_FACADE_BIN" healthcheck "$TOPOLOGY_URL/openapi.json" || return 1
}

# Stops, newest first, what topology_up started: SIGTERM, then SIGKILL after 10 s.
# Safe to call twice, and from a trap.
topology_down() {
  local i pid
  for ((i = ${#TOPOLOGY_PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${TOPOLOGY_PIDS[$i]}" 2>/dev/null || true
  done
  for ((i = ${#TOPOLOGY_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${TOPOLOGY_PIDS[$i]}
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      topology_log "${TOPOLOGY_NAMES[$i]} ignored SIGTERM for 10 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  TOPOLOGY_PIDS=()
  TOPOLOGY_NAMES=()
  if [ -n "${TOPOLOGY_DIR:-}" ]; then
    rm -rf "$TOPOLOGY_DIR"
    TOPOLOGY_DIR=""
  fi
}

# The name of a started process that is no longer running, if any.
topology_dead() {
  local i
  for i in "${!TOPOLOGY_PIDS[@]}"; do
    if ! kill -0 "${TOPOLOGY_PIDS[$i]}" 2>/dev/null; then
      echo "${TOPOLOGY_NAMES[$i]}"
      return 0
    fi
  done
  return 1
}

topology_main() {
  local dead
  TOPOLOGY_READY_FILE=""
  while [ $# -gt 0 ]; do
    case $1 in
      --ready-file)
        TOPOLOGY_READY_FILE=${2:?--ready-file needs a path}
        shift 2
        ;;
      -h | --help)
        sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        return 0
        ;;
      *)
        topology_log "unknown argument '$1' (try --help)"
        return 2
        ;;
    esac
  done
  trap 'topology_down; [ -z "$TOPOLOGY_READY_FILE" ] || rm -f "$TOPOLOGY_READY_FILE"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  topology_up || return 1

  echo "load balancer  $TOPOLOGY_URL   (HAProxy, checks /readyz)"
  for i in "${!TOPOLOGY_REPLICA_URLS[@]}"; do
    echo "replica-$((i + 1))      ${TOPOLOGY_REPLICA_URLS[$i]}   (probes, metrics: ${TOPOLOGY_ADMIN_URLS[$i]})"
  done
  echo "sandbox        $TOPOLOGY_SANDBOX_URL/api/v1"
  echo "redis          ${TOPOLOGY_REDIS_URL:-none (TOPOLOGY_REDIS=0: each replica keeps to its share)}"
  echo "logs           $TOPOLOGY_DIR"
  if [ -n "$TOPOLOGY_READY_FILE" ]; then
    {
      echo "TOPOLOGY_URL=$TOPOLOGY_URL"
      echo "TOPOLOGY_SANDBOX_URL=$TOPOLOGY_SANDBOX_URL"
      echo "TOPOLOGY_REDIS_URL=$TOPOLOGY_REDIS_URL"
      echo "TOPOLOGY_REPLICA_URLS=\"${TOPOLOGY_REPLICA_URLS[*]}\""
      echo "TOPOLOGY_ADMIN_URLS=\"${TOPOLOGY_ADMIN_URLS[*]}\""
    } >"$TOPOLOGY_READY_FILE.tmp"
    mv "$TOPOLOGY_READY_FILE.tmp" "$TOPOLOGY_READY_FILE"
  fi

  local watch_input=0 status
  if [ -t 0 ] || [ -p /dev/stdin ]; then
    watch_input=1
    echo "serving; Ctrl-C, SIGTERM or end of input stops it"
  else
    echo "serving; Ctrl-C or SIGTERM stops it"
  fi
  while :; do
    if dead=$(topology_dead); then
      topology_log "$dead exited; the end of its log:"
      tail -n 20 "$TOPOLOGY_DIR/$dead.log" >&2
      return 1
    fi
    if [ "$watch_input" = 1 ]; then
      status=0
      read -r -t 1 _ || status=$?
      # Above 128 is the time-out; anything else non-zero is end of input.
      if [ "$status" -ne 0 ] && [ "$status" -le 128 ]; then
        echo "end of input; stopping"
        return 0
      fi
    else
      sleep 1
    fi
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  topology_main "$@"
fi
