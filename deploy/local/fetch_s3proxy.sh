#!/usr/bin/env bash
# S3Proxy (Apache-2.0, org.gaul:s3proxy on Maven Central) as one runnable jar: the local S3-compatible server the
# object-storage tests start (jobrec.streaming.local.object_store), with its on-disk filesystem-nio2 backend. A Java
# program like the Kafka broker, so it needs nothing the project does not already have (Java 17, Maven). Idempotent:
# a second run only prints the path.
#   fetch_s3proxy.sh [OUT_DIR]      -> prints OUT_DIR/s3proxy-VERSION.jar (OUT_DIR: $JOBREC_CACHE_DIR/s3proxy)
set -euo pipefail
version=4.1.0
out=${1:-${JOBREC_CACHE_DIR:-$HOME/.cache/jobrec}/s3proxy}
jar="$out/s3proxy-$version.jar"
if [ ! -f "$jar" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching S3Proxy $version from Maven Central into $out ..." >&2
  (cd "$tmp" && mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.7.1:copy \
    -Dartifact="org.gaul:s3proxy:$version:jar:jar-with-dependencies" -DoutputDirectory="$tmp" >&2)
  mkdir -p "$out"
  # written aside and moved: an interrupted fetch never leaves a partial jar that a later run would trust
  mv "$tmp/s3proxy-$version-jar-with-dependencies.jar" "$jar.part" && mv "$jar.part" "$jar"
fi
echo "$jar"
