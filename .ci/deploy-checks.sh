#!/usr/bin/env bash
# The deployment files, checked by tools we did not write; any finding fails:
#   1. hadolint on the Dockerfile (rules disabled only inline, each with its reason);
#   2. dclint on docker-compose.yml, warnings included (--max-warnings 0), and every
#      compose service with no-new-privileges and CPU and memory limits;
#   3. kubernetes-validate --strict on deploy/kubernetes/ (unknown fields fail) for
#      Kubernetes 1.30 and 1.37, kustomization.yaml listing exactly the manifests, no
#      Secret manifest (the secretGenerator's files git-ignored), every container limited;
#   4. haproxy -c on deploy/haproxy.cfg;
#   5. promtool check rules and promtool test rules on deploy/prometheus/ (the alerting
#      rules and their unit tests; that the metrics they name exist is a test of the
#      API suite, tests/api/operations.rs);
#   6. deploy/local-topology.sh brought up, GET /conversations through HAProxy, and
#      brought down with nothing left running.
# Installs its tools first (.ci/install-tools.sh).
#
# usage: bash .ci/deploy-checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CI_DIR=$ROOT/.ci
VENV=$CI_DIR/.venv

bash "$CI_DIR/install-tools.sh"

echo "== hadolint"
"$VENV/bin/hadolint" --failure-threshold info Dockerfile

echo "== dclint"
"$CI_DIR/node_modules/.bin/dclint" --max-warnings 0 docker-compose.yml
# Rules of ours dclint has none for: every service runs with no-new-privileges and with
# CPU and memory limits.
"$VENV/bin/python" - docker-compose.yml <<'PY'
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
problems = []
for name, service in services.items():
    if "no-new-privileges:true" not in service.get("security_opt", []):
        problems.append(f"{name}: no security_opt no-new-privileges:true")
    limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
    for limit in ("cpus", "memory"):
        if limit not in limits:
            problems.append(f"{name}: no deploy.resources.limits.{limit}")
if problems:
    sys.exit("docker-compose.yml:\n  " + "\n  ".join(problems))
print(f"docker-compose.yml: the {len(services)} services have no-new-privileges and limits")
PY

echo "== kubernetes-validate --strict"
manifests=()
for file in deploy/kubernetes/*.yaml; do
  [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done
# Against the oldest Kubernetes the manifests are for (1.30: the preStop `sleep` action
# is on by default from there) and the newest the package knows. Its warnings (a kind
# without a schema, say) exit 0: count them as findings too.
for version in 1.30.0 1.37.0; do
  validation=$("$VENV/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}" 2>&1) || {
    echo "$validation"
    exit 1
  }
  echo "$validation"
  if grep -qv '^INFO ' <<<"$validation"; then
    echo "kubernetes-validate reported more than passes" >&2
    exit 1
  fi
done
# Kustomization is not a Kubernetes API kind, so it has no schema there: check that it
# lists every manifest and nothing else.
"$VENV/bin/python" - deploy/kubernetes <<'PY'
import pathlib, sys, yaml
folder = pathlib.Path(sys.argv[1])
listed = set(yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"])
present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
if listed != present:
    sys.exit(f"kustomization.yaml lists {sorted(listed)}, the folder has {sorted(present)}")
print(f"kustomization.yaml lists the {len(present)} manifests")
PY
# No Secret among the manifests (a placeholder applied by `kubectl apply -k` would
# overwrite the real one): the Secret comes from secretGenerator, whose files must be
# git-ignored. Every container has CPU and memory limits.
"$VENV/bin/python" - deploy/kubernetes <<'PY'
import pathlib, subprocess, sys, yaml
folder = pathlib.Path(sys.argv[1])
problems = []
kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
for generator in kustomization.get("secretGenerator", []):
    for entry in generator.get("envs", []) + generator.get("files", []):
        path = folder / entry.split("=")[-1]
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(path)])
        if ignored.returncode != 0:
            problems.append(f"secretGenerator reads {path}, which git does not ignore")
for name in kustomization["resources"]:
    for doc in yaml.safe_load_all((folder / name).read_text()):
        if doc["kind"] == "Secret":
            problems.append(f"{name}: a Secret manifest; use secretGenerator")
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            limits = container.get("resources", {}).get("limits", {})
            for limit in ("cpu", "memory"):
                if limit not in limits:
                    problems.append(f"{name}: container {container['name']} has no {limit} limit")
if problems:
    sys.exit("deploy/kubernetes:\n  " + "\n  ".join(problems))
print("deploy/kubernetes: no Secret manifest, generator files git-ignored, every container limited")
PY

echo "== haproxy -c"
LB_BIND=127.0.0.1:8080 QPIEN_REPLICA_1=127.0.0.1:1 QPIEN_REPLICA_2=127.0.0.1:2 \
  QPIEN_REPLICA_3=127.0.0.1:3 QPIEN_CHECK_PORT_1=4 QPIEN_CHECK_PORT_2=5 QPIEN_CHECK_PORT_3=6 \
  /usr/sbin/haproxy -c -f deploy/haproxy.cfg

echo "== promtool"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)

echo "== deploy/local-topology.sh"
topology_check() {
  local port status pids=()
  # shellcheck source=deploy/local-topology.sh
  source deploy/local-topology.sh
  port=$(topology_free_port)
  PORT=$port topology_up || return 1
  pids=("${TOPOLOGY_PIDS[@]}")
  status=$("$VENV/bin/python" - "$TOPOLOGY_URL/conversations?pageSize=1" <<'PY'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError as error:
    print(error)
PY
)
  topology_down
  if [ "$status" != 200 ]; then
    echo "GET /conversations through HAProxy answered $status, not 200" >&2
    return 1
  fi
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "process $pid outlived topology_down" >&2
      return 1
    fi
  done
  echo "GET /conversations through HAProxy: 200; ${#pids[@]} processes started and stopped"
}
( topology_check )
