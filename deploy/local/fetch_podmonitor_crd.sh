#!/usr/bin/env bash
# The prometheus-operator's published PodMonitor CRD (its openAPIV3Schema), for validating the chart's PodMonitors
# offline: the Kubernetes schemas the chart's other objects are checked against do not know the CRD. The operator's
# Go module ships its CRDs (example/prometheus-operator-crd/); Go's own client fetches that module from the module
# proxy into a throwaway module cache and only the one YAML file is kept.
#   fetch_podmonitor_crd.sh OUT_DIR      -> OUT_DIR/monitoring.coreos.com_podmonitors.yaml
set -euo pipefail
out=$1
version=v0.85.0
file=monitoring.coreos.com_podmonitors.yaml
if [ -f "$out/$file" ] && [ -f "$out/.podmonitor-crd-$version" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching the PodMonitor CRD (Go module github.com/prometheus-operator/prometheus-operator@$version) into $out ..."
dir=$(cd "$tmp" && GOMODCACHE="$tmp/mod" GOFLAGS=-modcacherw GO111MODULE=on \
  go mod download -json "github.com/prometheus-operator/prometheus-operator@$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
mkdir -p "$out"
install -m 644 "$dir/example/prometheus-operator-crd/$file" "$out/$file"
touch "$out/.podmonitor-crd-$version"
