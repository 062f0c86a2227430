# Sourced by the CI checks: a facade on a free port with its embedded sandbox, as
# `cargo run` starts it. Needs ARTIFACTS, VENV and BIN set.

FACADE_PID=""

stop_facade() {
  if [ -n "$FACADE_PID" ]; then
    kill "$FACADE_PID" 2>/dev/null || true
    wait "$FACADE_PID" 2>/dev/null || true
    FACADE_PID=""
  fi
  if [ -n "${FACADE_DATA:-}" ]; then
    rm -rf "$FACADE_DATA"
    FACADE_DATA=""
  fi
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_facade NAME [VAR=value ...]: service mode on the embedded sandbox, with rate
# budgets a fuzzer cannot exhaust and any extra settings given; sets BASE. The log goes
# to ci-artifacts/facade-NAME.log.
start_facade() {
  local name=$1 port
  shift
  port=$(free_port)
  FACADE_DATA=$(mktemp -d)
  env -u QPIEN_API_URL -u QPIEN_CLIENT_ID -u QPIEN_CLIENT_SECRET -u PUBLIC_BASE_URL \
    -u CORS_ALLOWED_ORIGINS -u API_KEYS_FILE -u ALLOW_ANONYMOUS \
    HOST=127.0.0.1 PORT="$port" RUST_LOG=warn DATA_DIR="$FACADE_DATA" \
    SANDBOX_RATE_LIMIT_PER_MINUTE=1000000 QPIEN_RATE_LIMIT_PER_MINUTE=1000000 "$@" \
    "$BIN" >"$ARTIFACTS/facade-$name.log" 2>&1 &
  FACADE_PID=$!
  BASE=http://127.0.0.1:$port
  for _ in $(seq 1 100); do
    if "$BIN" healthcheck "$BASE/healthz"; then
      return 0
    fi
    sleep 0.1
  done
  echo "the facade did not start; ci-artifacts/facade-$name.log:" >&2
  cat "$ARTIFACTS/facade-$name.log" >&2
  return 1
}
