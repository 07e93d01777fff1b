#!/usr/bin/env bash
# The base image the Dockerfile builds FROM, made here from Debian's own packages: no registry image can be pulled
# on these machines, so the base is a debootstrap'ed Debian bookworm (minbase) imported into buildah's storage.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/image/build_base.sh [--force]

Makes the local base image localhost/debian:bookworm (the Dockerfile's BASE build argument):
  1. installs buildah and debootstrap with apt-get when missing (root, Debian);
  2. debootstrap --variant=minbase bookworm from deb.debian.org into a temporary root file system, packed as
     $JOBREC_CACHE_DIR/image/debian-bookworm-minbase.tar (JOBREC_CACHE_DIR defaults to ~/.cache/jobrec);
  3. imports that tar into buildah's storage (buildah from scratch + add + commit).
Each step is skipped when its result is already there: the image in buildah's storage, else the tar in the cache.

  --force   debootstrap and import again even if the image or the tar exist
  -h        this help

Environment: BASE_IMAGE (default localhost/debian:bookworm), DEBIAN_MIRROR (default http://deb.debian.org/debian).
EOF
}

force=0
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --force) force=1 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

base=${BASE_IMAGE:-localhost/debian:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${JOBREC_CACHE_DIR:-$HOME/.cache/jobrec}/image
tarball=$cache/debian-bookworm-minbase.tar

say() { echo "[build_base] $*" >&2; }
die() { echo "[build_base] error: $*" >&2; exit 1; }

install_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || die "${missing[*]} missing, and this is not root on Debian: install them (apt-get install ${missing[*]})"
  say "installing ${missing[*]} with apt-get ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } \
    || die "apt-get install ${missing[*]} failed"
}

make_tarball() {
  local rootfs started
  mkdir -p "$cache"
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  # the root file system holds device nodes and root-owned files: only root removes it
  trap 'rm -rf "$rootfs"' EXIT
  started=$SECONDS
  say "debootstrap --variant=minbase bookworm from $mirror (about 30 s here) ..."
  /usr/sbin/debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || die "debootstrap failed; its log: $cache/debootstrap.log (last lines: $(tail -3 "$cache/debootstrap.log" | tr '\n' ' '))"
  # the point-release updates and security fixes too, from the same Debian hosts
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
  say "root file system packed in $((SECONDS - started)) s: $tarball ($(du -h "$tarball" | cut -f1))"
}

import_tarball() {
  local ctr
  say "importing $tarball as $base ..."
  ctr=$(buildah from scratch)
  trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  buildah add --quiet "$ctr" "$tarball" / >/dev/null
  buildah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label org.opencontainers.image.title="debian bookworm minbase (debootstrap)" \
    --label org.opencontainers.image.version="$(cat "$cache/debian_version" 2>/dev/null || echo bookworm)" "$ctr"
  buildah commit --quiet --rm "$ctr" "$base" >/dev/null
  trap - EXIT
}

install_tools
if [ "$force" = 0 ] && buildah inspect --type image "$base" >/dev/null 2>&1; then
  say "$base is already in buildah's storage"
  exit 0
fi
if [ "$force" = 1 ] || [ ! -s "$tarball" ]; then
  make_tarball
fi
tar -xOf "$tarball" ./etc/debian_version >"$cache/debian_version" 2>/dev/null || true
import_tarball
say "$base ready (Debian $(cat "$cache/debian_version" 2>/dev/null || echo '?'))"
