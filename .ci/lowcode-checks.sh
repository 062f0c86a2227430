#!/usr/bin/env bash
# Low-code and browser tools on the first try (issue 11), each against a fresh facade
# with its embedded sandbox:
#   1. Postman: the served /postman-collection.json as it is, and /openapi-3.0.json
#      converted by openapi-to-postmanv2, every request of each run by newman, each must
#      answer 2xx (.ci/postman.mjs);
#   2. a TypeScript client: types from /openapi.json by openapi-typescript, used through
#      openapi-fetch, type-checked by tsc --strict, then run on Node: list, read (again
#      with If-None-Match when there is an ETag), patch (.ci/ts-client/);
#   3. CORS in Chromium: a page of another origin reads a list and an exposed header; a
#      page of an origin not allowed is refused (.ci/cors-browser.mjs);
#   4. the Power Platform connector folder of both modes: qpien-rest connector --out,
#      its apiDefinition.swagger.json valid Swagger 2.0 (openapi-spec-validator);
#   5. webhook subscriptions: real deliveries verified by the Standard Webhooks reference
#      library, standardwebhooks from PyPI (.ci/subscriptions-check.sh).
# Installs its tools first (.ci/install-tools.sh); results go to ci-artifacts/.
#
# usage: bash .ci/lowcode-checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CI_DIR=$ROOT/.ci
ARTIFACTS=$ROOT/ci-artifacts
VENV=$CI_DIR/.venv
NODE_BIN=$CI_DIR/node_modules/.bin

WORK=$(mktemp -d)
# shellcheck source=facade.sh
source "$CI_DIR/facade.sh"
cleanup() {
  stop_facade
  rm -rf "$WORK" "$CI_DIR/ts-client/generated" "$CI_DIR/ts-client/dist"
}
trap cleanup EXIT

bash "$CI_DIR/install-tools.sh"
mkdir -p "$ARTIFACTS"

echo "-- cargo build (the binary cargo test already built)"
cargo build --locked --quiet --bin qpien-rest
BIN=$ROOT/target/debug/qpien-rest

echo "== Postman: the served collection, and the converted document (newman)"
start_facade postman
node "$CI_DIR/postman.mjs" "$BASE" "$ARTIFACTS"
stop_facade

echo "== TypeScript client (openapi-typescript + openapi-fetch, tsc --strict)"
start_facade ts-client
"$NODE_BIN/openapi-typescript" "$BASE/openapi.json" -o "$CI_DIR/ts-client/generated/qpien.ts"
"$NODE_BIN/tsc" -p "$CI_DIR/ts-client" --strict
node "$CI_DIR/ts-client/dist/check.js" "$BASE"
stop_facade

echo "== CORS in Chromium"
page_port=$(free_port)
other_port=$(free_port)
start_facade cors CORS_ALLOWED_ORIGINS="http://127.0.0.1:$page_port"
node "$CI_DIR/cors-browser.mjs" "$BASE" "$page_port" "$other_port" "$ARTIFACTS/cors-browser.png"
stop_facade

echo "== Power Platform connector folder"
for mode in pass-through service; do
  dir=$ARTIFACTS/connector-$mode
  settings=(QPIEN_API_URL=https://api.qpien.com/api/v1 PUBLIC_BASE_URL=https://qpien.example.com)
  [ "$mode" = service ] && settings+=(QPIEN_CLIENT_ID=ci QPIEN_CLIENT_SECRET=ci)
  env -u CORS_ALLOWED_ORIGINS "${settings[@]}" "$BIN" connector --out "$dir"
  "$VENV/bin/openapi-spec-validator" "$dir/apiDefinition.swagger.json"
done

echo "== Webhook subscriptions verified by standardwebhooks"
ARTIFACTS=$ARTIFACTS VENV=$VENV BIN=$BIN bash "$CI_DIR/subscriptions-check.sh"
