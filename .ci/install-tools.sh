#!/usr/bin/env bash
# Installs what the contract checks (.ci/openapi-checks.sh) and the low-code checks
# (.ci/lowcode-checks.sh) need, on a fresh machine or again on a developer's (each step
# is skipped or quick when already done):
#   - Debian's chromium (apt), for Swagger UI and CORS in a real browser; no browser downloads;
#   - a virtualenv at .ci/.venv with .ci/requirements.txt (pip);
#   - .ci/node_modules from .ci/package-lock.json (npm ci): Redocly CLI, playwright-core,
#     openapi-to-postmanv2, newman, openapi-typescript, openapi-fetch, typescript.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  echo "-- apt: chromium"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "-- python: .ci/.venv"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  echo "-- npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
