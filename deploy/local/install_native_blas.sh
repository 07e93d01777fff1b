#!/usr/bin/env bash
# Spark MLlib's ALS calls native BLAS/LAPACK through JNI when libblas.so.3 and liblapack.so.3 exist, and falls
# back to slower pure-Java code otherwise. Install OpenBLAS where we are root on Debian; elsewhere say so and go on.
set -u
if ldconfig -p 2>/dev/null | grep -q 'libblas.so.3 ' && ldconfig -p 2>/dev/null | grep -q 'liblapack.so.3 '; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing native BLAS/LAPACK (libopenblas0-pthread, liblapack3) for Spark ALS ..."
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread liblapack3 >/dev/null 2>&1 \
     || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread liblapack3 >/dev/null 2>&1; }; then
    exit 0
  fi
fi
echo "note: native BLAS not installed (not root or no apt-get); Spark ALS will use its slower Java fallback" >&2
exit 0
