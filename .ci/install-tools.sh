#!/usr/bin/env bash
# Installs what the checks and tests need, on a fresh machine or again on a developer's
# (each step is skipped or quick when already done):
#   - Debian packages (apt): chromium, for Swagger UI and CORS in a real browser (no browser
#     downloads); redis-server (with redis-cli) and haproxy, for the deployment checks
#     and the tests and benchmarks that run several replicas; prometheus, for promtool
#     (the alerting rules' checks and unit tests);
#   - a virtualenv at .ci/.venv with .ci/requirements.txt (pip);
#   - .ci/node_modules from .ci/package-lock.json (npm ci): Redocly CLI, playwright-core,
#     openapi-to-postmanv2, newman, openapi-typescript, openapi-fetch, typescript.
set -euo pipefail
cd "$(dirname "$0")"

# Debian package -> a program it installs.
declare -A apt_programs=(
  [chromium]=/usr/bin/chromium
  [redis-server]=/usr/bin/redis-server
  [redis-tools]=/usr/bin/redis-cli
  [haproxy]=/usr/sbin/haproxy
  [prometheus]=/usr/bin/promtool
)
missing_programs() {
  local package
  for package in "${!apt_programs[@]}"; do
    [ -x "${apt_programs[$package]}" ] || echo "$package"
  done
}
mapfile -t missing < <(missing_programs | sort)
if [ ${#missing[@]} -gt 0 ]; then
  echo "-- apt: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Waits for another apt run on the machine instead of failing on its lock.
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
  mapfile -t still_missing < <(missing_programs | sort)
  if [ ${#still_missing[@]} -gt 0 ]; then
    echo "apt-get did not install: ${still_missing[*]}" >&2
    exit 1
  fi
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
