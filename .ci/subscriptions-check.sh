#!/usr/bin/env bash
# Webhook subscriptions checked with a library we did not write (issue 19): a facade
# with its embedded sandbox delivers conversation changes to a local receiver
# (.ci/webhook-receiver.py) that verifies every delivery with the Standard Webhooks
# reference package `standardwebhooks` (PyPI, pinned in requirements.txt). Checks: every
# delivery verifies, each event arrives once, in order; after a secret rotation the
# deliveries carry two signatures and verify under the new secret alone.
#
# Sourced-style helpers from facade.sh; needs ARTIFACTS, VENV and BIN set (lowcode-checks.sh
# sets them), or run alone: bash .ci/subscriptions-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CI_DIR=$ROOT/.ci
ARTIFACTS=${ARTIFACTS:-$ROOT/ci-artifacts}
VENV=${VENV:-$CI_DIR/.venv}
BIN=${BIN:-$ROOT/target/debug/qpien-rest}
mkdir -p "$ARTIFACTS"

WORK=$(mktemp -d)
RECEIVER_PID=""
# shellcheck source=facade.sh
source "$CI_DIR/facade.sh"
cleanup_subscriptions() {
  [ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null || true
  stop_facade
  rm -rf "$WORK"
}
trap cleanup_subscriptions EXIT

# Only the check's own changes: the sandbox's background activity is off.
start_facade subscriptions SANDBOX_ACTIVITY_PER_MINUTE=0
port=$(free_port)
received=$WORK/received.jsonl
: >"$received"

created=$(curl -sf -X POST "$BASE/subscriptions" -H 'content-type: application/json' \
  -d "{\"url\": \"http://127.0.0.1:$port/hook\", \"types\": [\"conversation.updated\"], \"description\": \"CI receiver\"}")
subscription=$("$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$created")
"$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["secret"])' <<<"$created" >"$WORK/secret"
"$VENV/bin/python" "$CI_DIR/webhook-receiver.py" "$port" "$WORK/secret" "$received" &
RECEIVER_PID=$!

conversation=$(curl -sf "$BASE/conversations?pageSize=1" |
  "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
patch() {
  curl -sf -o /dev/null -X PATCH "$BASE/conversations/$conversation" \
    -H 'content-type: application/merge-patch+json' -d "{\"priority\": \"$1\"}"
}

# wait_for N: until the receiver has N deliveries (10 s at most).
wait_for() {
  for _ in $(seq 1 100); do
    [ "$(wc -l <"$received")" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "the receiver got $(wc -l <"$received") deliveries, not $1:" >&2
  cat "$received" >&2
  return 1
}

for priority in urgent high low; do patch "$priority"; done
# Each PATCH is one event: the facade's own, or the sandbox's signed webhook of it,
# whichever is recorded first (the other shows the same state and is not recorded).
wait_for 3

rotated=$(curl -sf -X POST "$BASE/subscriptions/$subscription/rotate-secret")
"$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["secret"])' <<<"$rotated" >"$WORK/secret"
patch medium
wait_for 4

feed=$(curl -sf "$BASE/conversations/changes?after=0&types=conversation.updated")
"$VENV/bin/python" - "$received" "$feed" <<'PY'
import json, sys
deliveries = [json.loads(line) for line in open(sys.argv[1])]
feed = [event["id"] for event in json.loads(sys.argv[2])["items"]]
problems = []
if not all(d["verified"] for d in deliveries):
    problems.append("a delivery did not verify with standardwebhooks")
ids = [d["id"] for d in deliveries]
if ids != feed:
    problems.append(f"deliveries {ids} are not the feed's events {feed}, once each in order")
if [d["signatures"] for d in deliveries[-1:]] != [2]:
    problems.append("after the rotation the deliveries do not carry both signatures")
if problems:
    sys.exit("; ".join(problems) + f"\n{deliveries}")
print(f"{len(deliveries)} deliveries, each verified by standardwebhooks, in the feed's order;"
      " after the rotation both signatures, the new secret verifies")
PY
