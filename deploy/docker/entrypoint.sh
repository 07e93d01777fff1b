#!/usr/bin/env bash
# The image's entrypoint, run under tini (the image's ENTRYPOINT is tini -- this script). It serves the roles Spark
# gives the pods it starts, as the entrypoint of Spark's own images does
# (resource-managers/kubernetes/docker/src/main/dockerfiles/spark/entrypoint.sh in apache/spark):
#   executor      Spark on Kubernetes starts executor pods with this argument and the SPARK_* variables below:
#                 the JVM runs org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend, which connects to
#                 the driver at SPARK_DRIVER_URL
#   driver ARGS   a cluster-mode driver pod (spark-submit in cluster mode, the Spark Operator): spark-submit
#                 --deploy-mode client ARGS
#   anything else a jobrec command: `ingest`, `retrain --config ...`, `--help` (the image's default)
set -euo pipefail

spark_home=${SPARK_HOME:-$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
jars_dir=${JOBREC_JARS_DIR:-/opt/jobrec/jars}

# Hadoop's user lookup needs a name: a pod run under a uid without an /etc/passwd entry (OpenShift's random uids)
# gets one from the environment instead
if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
  export HADOOP_USER_NAME=${HADOOP_USER_NAME:-${SPARK_USER_NAME:-jobrec}}
fi

# pyspark's jars (Spark, Hadoop, spark-kubernetes) and the image's (Delta, the Kafka connector, S3), as Spark's
# image puts $SPARK_HOME/jars on its executors' classpath; config folders first, as there
classpath="$spark_home/jars/*:$jars_dir/*"
[ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
[ -n "${HADOOP_CONF_DIR:-}" ] && classpath="$HADOOP_CONF_DIR:$classpath"
[ -n "${SPARK_CONF_DIR:-}" ] && classpath="$SPARK_CONF_DIR:$classpath"

role=${1:-}
case "$role" in
  executor)
    shift
    for name in SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_EXECUTOR_MEMORY SPARK_APPLICATION_ID; do
      if [ -z "${!name:-}" ]; then
        echo "entrypoint: executor: $name is not set (Spark sets it on the executor pods it starts)" >&2
        exit 2
      fi
    done
    # the executor's address is its pod's IP: Spark then need not resolve the container's host name, which a
    # container outside Kubernetes (buildah run, a plain docker run) may not have in /etc/hosts
    if [ -n "${SPARK_EXECUTOR_POD_IP:-}" ] && [ -z "${SPARK_LOCAL_IP:-}" ]; then
      export SPARK_LOCAL_IP=$SPARK_EXECUTOR_POD_IP
    fi
    # the executor's JVM options, in the order of their numbers: SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ...
    java_opts=()
    while IFS= read -r opt; do
      java_opts+=("$opt")
    done < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    # Spark 4.2's JavaModuleOptions: the driver adds them to the options it sends, repeated here so that an
    # executor started by other means works on Java 17 too (a repeated option is harmless)
    module_opts=(
      -XX:+IgnoreUnrecognizedVMOptions --add-modules=jdk.incubator.vector
      --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.invoke=ALL-UNNAMED
      --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED
      --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
      --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
      --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
      --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/sun.nio.cs=ALL-UNNAMED
      --add-opens=java.base/sun.security.action=ALL-UNNAMED --add-opens=java.base/sun.util.calendar=ALL-UNNAMED
      --add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED -Dio.netty.tryReflectionSetAccessible=true
    )
    cmd=(
      "$JAVA_HOME/bin/java" "${module_opts[@]}" "${java_opts[@]}"
      "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY"
      -cp "$classpath${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}"
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
      --driver-url "$SPARK_DRIVER_URL"
      --executor-id "$SPARK_EXECUTOR_ID"
      --cores "$SPARK_EXECUTOR_CORES"
      --app-id "$SPARK_APPLICATION_ID"
      --hostname "${SPARK_EXECUTOR_POD_IP:-$(hostname -i 2>/dev/null | cut -d' ' -f1)}"
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}"
    )
    [ -n "${SPARK_EXECUTOR_POD_NAME:-}" ] && cmd+=(--podName "$SPARK_EXECUTOR_POD_NAME")
    ;;
  driver)
    shift
    cmd=("$spark_home/bin/spark-submit" --deploy-mode client)
    if [ -n "${SPARK_DRIVER_BIND_ADDRESS:-}" ]; then
      # Spark sets it to the driver pod's IP; the driver's own address then needs no host name lookup either
      cmd+=(--conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS")
      export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-$SPARK_DRIVER_BIND_ADDRESS}
    fi
    cmd+=("$@")
    ;;
  *)
    cmd=(jobrec "$@")
    ;;
esac

exec "${cmd[@]}"
