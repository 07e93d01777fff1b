#!/usr/bin/env bash
# Pins the image's Python packages: the runtime dependencies of pyproject.toml (no dev extras), each at the version
# installed in the checkout's venv (the versions the test suite ran with), resolved by pip itself.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/image/lock_requirements.sh [VENV]

Writes deploy/docker/requirements.lock: every package `pip install .` needs at run time, pinned (name==version),
with the versions of VENV (default .venv, made by `make setup`) where it has the package. Run it after changing
pyproject.toml's dependencies, and commit the lock: the image installs exactly it, before the source is copied.
EOF
}
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

cd "$(dirname "$0")/../.."
venv=${1:-.venv}
[ -x "$venv/bin/pip" ] || { echo "[lock] error: no pip in $venv (run make setup)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the venv's versions as constraints; the editable checkout itself is not a constraint
"$venv/bin/pip" freeze --exclude-editable | grep -v '^-e ' >"$tmp/constraints.txt"
echo "[lock] resolving the runtime dependencies of pyproject.toml ..." >&2
"$venv/bin/pip" install -q --dry-run --ignore-installed -c "$tmp/constraints.txt" --report "$tmp/report.json" . >&2
"$venv/bin/python" - "$tmp/report.json" >deploy/docker/requirements.lock <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
pins = sorted(
    (i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"] if i["metadata"]["name"] != "jobrec"
)
print("# The image's Python packages, pinned: written by deploy/image/lock_requirements.sh from pyproject.toml's")
print("# runtime dependencies at the versions the test suite ran with. Do not edit by hand.")
for name, version in sorted(pins, key=lambda p: p[0].lower()):
    print(f"{name}=={version}")
EOF
echo "[lock] wrote deploy/docker/requirements.lock ($(grep -c '==' deploy/docker/requirements.lock) packages)" >&2
