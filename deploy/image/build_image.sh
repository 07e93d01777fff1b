#!/usr/bin/env bash
# Builds the production image from deploy/docker/Dockerfile with buildah (no Docker engine needed), on the base that
# build_base.sh makes, and only when one of its inputs changed since the last build.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/image/build_image.sh [--force] [--print-inputs-hash]

Builds the image jobrec:dev (IMAGE) with
  buildah bud --layers --isolation chroot --build-arg BASE=localhost/debian:bookworm -f deploy/docker/Dockerfile .
after making the base with deploy/image/build_base.sh (and installing buildah and debootstrap) when missing.

Cached between runs:
  - the base image and every build step's layer live in buildah's storage (--layers): a change to the source
    rebuilds only the project's wheel and the last layers, not the ~1.2 GB of Python packages and jars;
  - the image carries a label jobrec.inputs, a hash of what goes into it (the Dockerfile, the entrypoint, the
    lock file, the poms, pyproject.toml and the source, the base's id); when the image there has the hash of the
    current inputs, nothing is built at all.

  --force              build even if the image's inputs did not change (the layer cache is still used)
  --print-inputs-hash  print the hash of the current inputs and exit
  -h                   this help

Environment: IMAGE (default jobrec:dev), BASE_IMAGE (default localhost/debian:bookworm), JOBREC_CACHE_DIR
(default ~/.cache/jobrec: the base's root file system and the build log, under image/), CA_BUNDLE and
JAVA_CACERTS (default: the host's /etc/ssl/certs/ca-certificates.crt and /etc/ssl/certs/java/cacerts; given to the
download steps as build secrets, for a TLS-intercepting proxy; they are not stored in the image).
EOF
}

force=0; print_hash=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --force) force=1 ;;
    --print-inputs-hash) print_hash=1 ;;
    *) usage >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
image=${IMAGE:-jobrec:dev}
base=${BASE_IMAGE:-localhost/debian:bookworm}
cache=${JOBREC_CACHE_DIR:-$HOME/.cache/jobrec}/image
log=$cache/build.log

say() { echo "[build_image] $*" >&2; }
die() { echo "[build_image] error: $*" >&2; exit 1; }

# one build at a time on a machine: two at once (two pytest workers, two checkouts) would race in buildah's storage
# and on the base's debootstrap; the second waits for the first, then finds the image up to date
mkdir -p "$cache"
exec 9>"$cache/build.lock"
if ! flock -n 9; then
  say "another build of the image is running; waiting for it ..."
  flock 9
fi

# every file the Dockerfile copies, by content (the context's own rules are in .dockerignore)
inputs_hash() {
  local base_id=$1
  {
    echo "base $base_id"
    cd "$repo"
    find .dockerignore deploy/docker deploy/jars/spark-extras.pom.xml deploy/jars/object-store.pom.xml \
      deploy/local/resolve_jars.sh pyproject.toml README.md schemas batch streaming \
      -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

BASE_IMAGE=$base "$repo/deploy/image/build_base.sh"
base_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$base")
hash=$(inputs_hash "$base_id")
if [ "$print_hash" = 1 ]; then echo "$hash"; exit 0; fi

current=$(buildah inspect --type image --format '{{index .ImageAnnotations "jobrec.inputs"}}{{index .Docker.Config.Labels "jobrec.inputs"}}' "$image" 2>/dev/null || true)
if [ "$force" = 0 ] && [ "$current" = "$hash" ]; then
  say "$image is up to date (inputs $hash)"
  exit 0
fi

mkdir -p "$cache"
say "building $image from deploy/docker/Dockerfile on $base (inputs $hash; log: $log) ..."
say "  a first build downloads Debian packages, ~1.2 GB of Python packages and the jars: about 2-5 minutes"
started=$SECONDS
cd "$repo"
# the build machine's CAs (a TLS-intercepting proxy's among them) for the steps that download, as build secrets
secrets=()
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
java_cacerts=${JAVA_CACERTS:-/etc/ssl/certs/java/cacerts}
[ -s "$ca_bundle" ] && secrets+=(--secret "id=ca-bundle,src=$ca_bundle")
[ -s "$java_cacerts" ] && secrets+=(--secret "id=java-cacerts,src=$java_cacerts")
set +e
buildah bud "${secrets[@]}" --layers --isolation chroot --format docker \
  --build-arg "BASE=$base" --label "jobrec.inputs=$hash" \
  -f deploy/docker/Dockerfile -t "$image" . 2>&1 \
  | tee "$log" | grep --line-buffered -E 'STEP [0-9]+/[0-9]+: (FROM|RUN|COPY)' | sed -u -e 's/^\(.\{100\}\).*/\1 .../' -e 's/^/[build_image]   /' >&2
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
  echo "[build_image] error: buildah bud failed (exit $status); the last lines of $log:" >&2
  tail -25 "$log" >&2
  exit 1
fi
say "$image built in $((SECONDS - started)) s ($(buildah images --format '{{.Size}}' "$image" | head -1))"
# no `buildah rmi --prune` here: the deps stage's layers are untagged, and pruning them would make the next build
# download the Python packages and the jars again
