"""The process edges: a SparkSession, Kafka client settings and topics, all from config.

Only the composition roots (`jobrec.batch.processes`, `jobrec.streaming.processes`, the test fixtures) call
these; everything below them receives a SparkSession or a dict of options as an argument.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from jobrec.batch.delta_tables import absolute_location
from jobrec.schemas.config import Config, KafkaConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


class MissingJars(FileNotFoundError):
    """The JVM jars Spark needs (Delta, the Kafka connector) are not where the config says."""


class KafkaConnectError(RuntimeError):
    """The brokers could not be reached, or refused the configured credentials; the message says which."""


def any_broker_reachable(bootstrap: str) -> bool:
    """Whether any bootstrap server accepts a TCP connection (3 s each at most)."""
    import socket

    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
                return True
        except (OSError, ValueError):
            continue
    return False


def describe_connect_failure(kafka: KafkaConfig, bootstrap: str, error: Exception) -> KafkaConnectError:
    """A clear error for a failed connection: unreachable brokers, or (reachable, with SASL) refused credentials.

    kafka-python reports a refused SASL login only as a closed connection and a bootstrap time-out.
    """
    sec = kafka.security
    if not any_broker_reachable(bootstrap):
        return KafkaConnectError(f"no Kafka broker answers at {bootstrap} (kafka.bootstrap_servers): {error}")
    if sec.protocol.startswith("SASL"):
        return KafkaConnectError(
            f"Kafka at {bootstrap} refused the credentials of user {sec.username!r} ({sec.protocol}, "
            f"{sec.sasl_mechanism}): check kafka.security.username and the password in JOBREC_KAFKA_PASSWORD"
        )
    return KafkaConnectError(
        f"Kafka at {bootstrap} accepts connections but did not complete the {sec.protocol} handshake: {error}"
    )


def _sasl_jaas(kafka: KafkaConfig) -> str:
    module = (
        "org.apache.kafka.common.security.plain.PlainLoginModule"
        if kafka.security.sasl_mechanism == "PLAIN"
        else "org.apache.kafka.common.security.scram.ScramLoginModule"
    )
    user = kafka.security.username.replace('"', '\\"')
    password = kafka.security.password.replace('"', '\\"')
    return f'{module} required username="{user}" password="{password}";'


def python_client_args(kafka: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer / KafkaConsumer / KafkaAdminClient."""
    args: dict[str, Any] = {"bootstrap_servers": bootstrap.split(","), "security_protocol": kafka.security.protocol}
    if kafka.security.protocol.startswith("SASL"):
        args.update(
            sasl_mechanism=kafka.security.sasl_mechanism,
            sasl_plain_username=kafka.security.username,
            sasl_plain_password=kafka.security.password,
        )
    return args


def spark_kafka_options(kafka: KafkaConfig, bootstrap: str) -> dict[str, str]:
    """`kafka.*` options for Spark's Kafka source and sink."""
    opts = {"kafka.bootstrap.servers": bootstrap, "kafka.security.protocol": kafka.security.protocol}
    if kafka.security.protocol.startswith("SASL"):
        opts["kafka.sasl.mechanism"] = kafka.security.sasl_mechanism
        opts["kafka.sasl.jaas.config"] = _sasl_jaas(kafka)
    return opts


_BROKER_TIME = {"message.timestamp.type": "LogAppendTime"}


def ensure_topics(kafka: KafkaConfig, bootstrap: str) -> None:
    """Create the clicks, recommendations and job-events topics if they are missing."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(
            **python_client_args(kafka, bootstrap), request_timeout_ms=20000, bootstrap_timeout_ms=10000
        )
    except KafkaError as e:
        raise describe_connect_failure(kafka, bootstrap, e) from e
    try:
        existing = set(admin.list_topics())
        wanted = [
            # the broker stamps each record when it appends it (LogAppendTime): occurred_at is judged against that
            # time, which a producer cannot set, so a replay judges the same way and no producer moves the window
            NewTopic(kafka.clicks_topic, kafka.clicks_partitions, kafka.replication_factor, topic_configs=_BROKER_TIME),
            # compacted: a consumer reading from the start ends with the newest list of every user
            NewTopic(
                kafka.recommendations_topic,
                kafka.clicks_partitions,
                kafka.replication_factor,
                topic_configs={"cleanup.policy": "compact", "segment.ms": "600000"},
            ),
            # a few events per job over its life: one partition keeps them in order and is plenty
            NewTopic(kafka.jobs_topic, 1, kafka.replication_factor, topic_configs=_BROKER_TIME),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        admin.close()


# The JVM's logging config, shipped beside this module: stderr, the Python lines' layout, Spark's known noise dropped
LOG4J2_PROPERTIES = Path(__file__).resolve().with_name("log4j2.properties")
# `jobrec --log-level DEBUG` (this logger enabled for DEBUG) lets the JVM's known noise through as well
JVM_LOGGER = "jobrec.jvm"
_JAVA_OPTIONS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


def jvm_log_options(base_level: str, show_noise: bool) -> str:
    """Java options that make a Spark JVM log through LOG4J2_PROPERTIES at `base_level` (spark.log_level), with
    or without the warnings Spark prints in normal operation."""
    return (
        # as a file: URI, which needs no quoting for the launcher when the path has spaces
        f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} -Djobrec.log4j2.level={base_level} "
        f"-Djobrec.log4j2.noise={'NEUTRAL' if show_noise else 'DENY'}"
    )


LOCAL_URI = "local:"


def jars_folder(jars_dir: str) -> Path:
    """The folder on this machine that spark.jars_dir names: a path, or the path of a `local:` URI."""
    if not jars_dir.startswith(LOCAL_URI):
        return Path(jars_dir)
    parsed = urlparse(jars_dir)
    if parsed.netloc or not parsed.path.startswith("/"):
        raise ValueError(
            f"spark.jars_dir: {jars_dir!r} is not a local: URI of an absolute folder, such as local:///opt/jobrec/jars "
            "(three slashes: no host)"
        )
    return Path(parsed.path)


def spark_jar_uris(jars_dir: str, names: Iterable[str]) -> list[str]:
    """spark.jars for the jar files `names` of spark.jars_dir. A folder path gives absolute paths: the driver then
    serves every jar to every executor. A `local:///opt/...` folder (present on every node, as in the image) gives
    `local://` URIs: each executor reads them from its own disk and the driver serves none."""
    folder = jars_folder(jars_dir)
    if jars_dir.startswith(LOCAL_URI):
        return [f"local://{PurePosixPath(folder, name)}" for name in names]
    return [os.path.abspath(folder / name) for name in names]


def cluster_on_loopback(master: str) -> bool:
    """Whether the driver's cluster is all on this machine's loopback: local mode, or a standalone master at
    127.x, localhost or ::1 (`jobrec spark-cluster start`). The driver then listens on 127.0.0.1 only."""
    if master.startswith("local"):
        return True
    if not master.startswith("spark://"):
        return False
    # a standalone master URL may list several masters (ZooKeeper high availability): host:port,host:port
    for address in master.removeprefix("spark://").split(","):
        host = address.rpartition(":")[0].strip("[]")
        if host != "localhost":
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    return False
            except ValueError:
                return False
    return True


# Spark's default checkpoint manager writes each checkpoint file (offsets, commits, state) to a temporary name and
# renames it into place. On S3 a rename is a copy and a delete: the object is sent twice, and a process killed
# between the two leaves the temporary object behind. The abortable-stream manager writes the file under its final
# name: S3A uploads it on close() (one PUT, or a multipart upload completed then), so it appears whole or not at all,
# and cancel() aborts the upload; the all-or-nothing a rename gives on a real file system. The class comes from
# spark-hadoop-cloud (deploy/jars/object-store.pom.xml).
CHECKPOINT_MANAGER_KEY = "spark.sql.streaming.checkpointFileManagerClass"
ABORTABLE_CHECKPOINT_MANAGER = "org.apache.spark.internal.io.cloud.AbortableStreamBasedCheckpointFileManager"


def checkpoint_manager_settings(checkpoints_root: str) -> dict[str, str]:
    """Spark settings for the streaming checkpoints under `checkpoints_root`: the rename-free manager on S3 (s3a://),
    nothing (Spark's rename-based default, atomic there) on a local or other file system."""
    if urlparse(checkpoints_root).scheme.lower() == "s3a":
        return {CHECKPOINT_MANAGER_KEY: ABORTABLE_CHECKPOINT_MANAGER}
    return {}


def build_spark_session(cfg: Config, app_name: str) -> SparkSession:
    """A SparkSession with Delta and the Kafka connector from the local jar cache.

    Its JVM logs at spark.log_level on stderr, without Spark's known noise unless the `jobrec.jvm` logger is
    enabled for DEBUG (the JVM's logging is set when it starts: the first session of a process decides it).
    """
    from pyspark.sql import SparkSession

    # Python workers must run this interpreter (the venv with pyarrow and this project), not the first python3
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if cluster_on_loopback(cfg.spark.master):
        # bind the driver to loopback only (executors of a cluster on this machine reach it there); the machine's
        # hostname may resolve elsewhere
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    jars = ""
    if cfg.spark.jars_dir:
        names = sorted(p.name for p in jars_folder(cfg.spark.jars_dir).glob("*.jar"))
        if not any(name.startswith("delta-spark") for name in names):
            raise MissingJars(
                f"no Delta jars in {jars_folder(cfg.spark.jars_dir)} (spark.jars_dir {cfg.spark.jars_dir}): in a "
                "checkout `make setup` resolves them there from Maven Central; elsewhere point spark.jars_dir (or "
                "JOBREC_CACHE_DIR) at a folder that has them, as the image's local:///opt/jobrec/jars"
            )
        jars = ",".join(spark_jar_uris(cfg.spark.jars_dir, names))
    builder = (
        SparkSession.builder.appName(app_name)
        .master(cfg.spark.master)
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.default.parallelism", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    log_options = jvm_log_options(cfg.spark.log_level, logging.getLogger(JVM_LOGGER).isEnabledFor(logging.DEBUG))
    # the config's own spark.extra comes last: a checkpoint manager it names wins
    extra = {**checkpoint_manager_settings(cfg.storage.checkpoints_root), **cfg.spark.extra}
    for key in _JAVA_OPTIONS:
        # the config's own Java options come after ours: a -D of its own (another log4j2 file) wins
        builder = builder.config(key, f"{log_options} {extra.pop(key, '')}".strip())
    if jars:
        builder = builder.config("spark.jars", jars)
    for key, value in extra.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    if cfg.spark.checkpoint_dir:
        spark.sparkContext.setCheckpointDir(absolute_location(cfg.spark.checkpoint_dir))
    return spark
