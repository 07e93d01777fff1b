#!/usr/bin/env bash
# Resolve the JVM jars the project needs from Maven Central, once, into a cache folder.
#   resolve_jars.sh POM OUT_DIR [PYSPARK_JARS_DIR]
# With PYSPARK_JARS_DIR, jars whose artifact pyspark already ships are left out: two copies of Spark, Hadoop,
# Jackson or Scala on one classpath clash at run time.
set -euo pipefail
pom=$1; out=$2; provided=${3:-}
stamp="$out/.resolved-$(sha256sum "$pom" | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "resolving $(basename "$pom") from Maven Central into $out ..."
mvn -q -B -f "$pom" org.apache.maven.plugins:maven-dependency-plugin:3.7.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp/all"
rm -rf "$out"; mkdir -p "$out"
kept=0; skipped=0
for jar in "$tmp"/all/*.jar; do
  name=$(basename "$jar" .jar)
  artifact=$(echo "$name" | sed -E 's/-[0-9][^-]*(-[0-9]+)?$//')
  # a glob, not `ls | grep -q`: under pipefail grep's early exit fails ls with SIGPIPE, which kept provided jars
  if [ -n "$provided" ] && compgen -G "$provided/${artifact}-[0-9]*.jar" >/dev/null; then
    skipped=$((skipped + 1)); continue
  fi
  cp "$jar" "$out/"; kept=$((kept + 1))
done
touch "$stamp"
echo "  $kept jars kept, $skipped already provided by pyspark"
