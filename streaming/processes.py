"""The continuous processes' composition roots: `jobrec ingest`, `jobrec speed`, `jobrec api`, and the sending of
job events. Each turns the validated config into its parts' settings, builds the SparkSession and Kafka clients
it needs, runs, and closes them. The command line only parses; tests and the demo call these too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from jobrec.batch.connections import (
    ensure_topics,
    python_client_args,
    spark_kafka_options,
)
from jobrec.batch.core.catalog import CatalogState, CategoryNormaliser
from jobrec.batch.delta_tables import absolute_location
from jobrec.batch.processes import spark_session
from jobrec.batch.table_writers import INGEST, hold_writer_lock
from jobrec.schemas.click_event import EventLimits
from jobrec.schemas.config import Config
from jobrec.streaming.heartbeat import Heartbeat
from jobrec.streaming.ingest import IngestSettings, run_ingest, start_ingest
from jobrec.streaming.interactions_fold import PeriodicFold
from jobrec.streaming.job_events import start_job_events
from jobrec.streaming.process_metrics import IngestMetrics, SpeedMetrics, serve_metrics
from jobrec.streaming.producer import send_job_events
from jobrec.streaming.speed import SpeedSettings, SpeedStats

if TYPE_CHECKING:
    from jobrec.streaming.serving_state import ServingState

log = logging.getLogger(__name__)


def event_limits(cfg: Config) -> EventLimits:
    return EventLimits(
        max_record_bytes=cfg.ingest.max_record_bytes,
        max_future_seconds=cfg.ingest.max_future_seconds,
        max_past_days=cfg.ingest.max_past_days,
    )


def ingest_settings(cfg: Config, bootstrap: str) -> IngestSettings:
    return IngestSettings(
        tables_root=cfg.storage.tables_root,
        checkpoint=f"{absolute_location(cfg.storage.checkpoints_root).rstrip('/')}/ingest",
        clicks_topic=cfg.kafka.clicks_topic,
        kafka_options=spark_kafka_options(cfg.kafka, bootstrap),
        starting_offsets=cfg.ingest.starting_offsets,
        max_offsets_per_trigger=cfg.ingest.max_offsets_per_trigger,
        dedup_window=cfg.ingest.dedup_window,
        limits=event_limits(cfg),
        weights=dict(cfg.ingest.weights),
        jobs_topic=cfg.kafka.jobs_topic,
        categories=tuple(cfg.catalog.categories),
        aliases=tuple(cfg.catalog.aliases.items()),
        default_ttl_days=cfg.catalog.default_ttl_days,
    )


def run_ingest_process(
    cfg: Config, bootstrap: str, once: bool, stop: threading.Event, recover_checkpoint: bool = False
) -> None:
    """`jobrec ingest`: the clicks and job-events queries into Delta, restarted after a failure, until `stop` is
    set (or, with `once`, until what is on the topics now has been read). `recover_checkpoint`: first start a new
    clicks checkpoint after what the tables hold (see recover_ingest_checkpoint)."""
    ensure_topics(cfg.kafka, bootstrap)
    settings = ingest_settings(cfg, bootstrap)
    log.info(
        "ingesting %s and %s from %s into %s (%s)",
        cfg.kafka.clicks_topic,
        cfg.kafka.jobs_topic,
        bootstrap,
        cfg.storage.tables_root,
        "until caught up" if once else "until stopped",
    )
    metrics = IngestMetrics()
    with (
        hold_writer_lock(cfg.storage.checkpoints_root, INGEST, "ingest"),
        spark_session(cfg, "ingest") as spark,
        _metrics_endpoint(cfg, metrics.registry, cfg.metrics.ingest_port, "ingest"),
    ):
        if recover_checkpoint:
            settings = recover_ingest_checkpoint(spark, settings, python_client_args(cfg.kafka, bootstrap))

        def start_queries() -> list[StreamingQuery]:
            trigger = cfg.ingest.trigger_seconds
            return [
                start_ingest(spark, settings, once=once, trigger_seconds=trigger, on_batch=metrics.observe_batch),
                start_job_events(spark, settings, once=once, trigger_seconds=trigger),
            ]

        fold = PeriodicFold(
            spark,
            settings.tables_root,
            settings.weights,
            cfg.ingest.fold_seconds,
            on_fold=metrics.observe_fold,
            on_failure=metrics.fold_failures.inc,
        )
        run_ingest(
            start_queries,
            backoff_seconds=cfg.ingest.restart_backoff_seconds,
            should_stop=stop.is_set,
            heartbeat=Heartbeat.from_env().beat,
            on_progress=metrics.observe_progress,
            between=fold,
        )
        # what the last micro-batches appended (all of it, in an --once run) is counted before the process ends
        fold.fold()


def recover_ingest_checkpoint(spark: SparkSession, settings: IngestSettings, client: dict[str, Any]) -> IngestSettings:
    """`jobrec ingest --recover-checkpoint`: after the clicks checkpoint was lost, a new one that starts on each
    partition after the newest offset the events and dead_letters tables hold, under a new identity.

    Refused when a checkpoint is there (move it aside: it may be the one to restore) and when the tables hold a
    half-written micro-batch (its events without its interactions), which no offset can describe. What a lost
    checkpoint takes with it: the de-duplication state, so a repeat of an event ingested before the loss is
    counted again if it arrives within ingest.dedup_window after the recovery.
    """
    from kafka import KafkaConsumer

    from jobrec.batch.delta_tables import table_path
    from jobrec.schemas import tables as t
    from jobrec.streaming.checkpoint_guard import (
        CheckpointMismatch,
        ingest_versions,
        new_app_id,
        read_checkpoint_state,
        recovery_offsets,
        table_transactions,
        write_identity,
    )
    from jobrec.streaming.ingest import INGEST_TABLES

    state = read_checkpoint_state(spark, settings.checkpoint)
    if state.identity or state.last_planned is not None or state.last_committed is not None:
        raise CheckpointMismatch(
            f"--recover-checkpoint starts a new checkpoint at {settings.checkpoint}, but a checkpoint is there: move "
            "it aside first (if it is a backup of the lost one, run `jobrec ingest` on it instead)"
        )
    paths = {name: table_path(settings.tables_root, name) for name in INGEST_TABLES}
    transactions = table_transactions(spark, paths)
    for app_id in ingest_versions(transactions):
        events = transactions.get(t.EVENTS, {}).get(app_id)
        merged = transactions.get(t.INTERACTIONS, {}).get(app_id)
        # an ingest from before interactions were folded MERGEd each batch with its own pair; since, no batch does
        if merged is not None and events != merged:
            raise CheckpointMismatch(
                f"the tables hold a half-written micro-batch of {app_id}: events has its batch {events}, "
                f"interactions its batch {merged}. A recovery from offsets cannot tell which clicks of that batch "
                "are counted; restore the checkpoint from a backup instead, or restore the interactions table to "
                "the version before that batch (Delta RESTORE) and re-ingest from there"
            )
    frames = [
        spark.read.format("delta").load(paths[name]).where(f"{t.KAFKA_TOPIC} = '{settings.clicks_topic}'")
        for name in (t.EVENTS, t.DEAD_LETTERS)
    ]
    rows = (
        frames[0]
        .select(t.KAFKA_PARTITION, t.KAFKA_OFFSET)
        .unionByName(frames[1].select(t.KAFKA_PARTITION, t.KAFKA_OFFSET))
        .groupBy(t.KAFKA_PARTITION)
        .max(t.KAFKA_OFFSET)
        .collect()
    )
    newest = {int(r[0]): int(r[1]) for r in rows}
    consumer = KafkaConsumer(**client)
    try:
        partitions = consumer.partitions_for_topic(settings.clicks_topic) or set()
    finally:
        consumer.close()
    if not partitions:
        raise CheckpointMismatch(f"cannot read the partitions of {settings.clicks_topic} to start a recovered ingest")
    identity = new_app_id()
    starting = recovery_offsets(settings.clicks_topic, partitions, newest)
    write_identity(spark, settings.checkpoint, identity)
    log.warning(
        "recovered ingest checkpoint at %s: new identity %s, starting after the tables' newest offsets %s; repeats of "
        "events ingested before the loss are not dropped within the next %s",
        settings.checkpoint,
        identity,
        starting,
        settings.dedup_window,
    )
    return replace(settings, identity=identity, starting_offsets=starting)


# `jobrec speed --processes N` numbers its instances in this variable (0 .. N-1): instance i serves its metrics on
# metrics.speed_port + i
INSTANCE_INDEX_ENV = "JOBREC_SPEED_INSTANCE_INDEX"


@contextmanager
def _metrics_endpoint(cfg: Config, registry: Any, port: int, what: str) -> Iterator[None]:
    """The process's /metrics on metrics.host:port while inside; nothing when the port is 0."""
    if not port:
        yield
        return
    server = serve_metrics(registry, cfg.metrics.host, port, what)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def run_speed(
    cfg: Config,
    bootstrap: str,
    should_stop: Callable[[], bool],
    stats: SpeedStats | None = None,
    on_ready: Callable[[], None] | None = None,
    heartbeat: Callable[[], None] | None = None,
    metrics: SpeedMetrics | None = None,
) -> SpeedStats:
    """The speed layer: a consumer at the end of the clicks and jobs topics, the users' histories, the catalog and
    the serving model. No JVM: the tables are read with delta-rs (`serving_tables`, `speed_sources`)."""
    client = python_client_args(cfg.kafka, bootstrap)
    # every client closes however the start goes (a failed snapshot load too): nothing lingers to warn later
    with ExitStack() as closing:
        return _run_speed_started(cfg, client, closing, should_stop, stats, on_ready, heartbeat, metrics)


def _run_speed_started(
    cfg: Config,
    client: dict[str, Any],
    closing: ExitStack,
    should_stop: Callable[[], bool],
    stats: SpeedStats | None,
    on_ready: Callable[[], None] | None,
    heartbeat: Callable[[], None] | None,
    metrics: SpeedMetrics | None,
) -> SpeedStats:
    import os
    import socket

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from jobrec.streaming import serving_tables
    from jobrec.streaming.histories import Histories
    from jobrec.streaming.speed import ModelHolder, run_speed_layer
    from jobrec.streaming.speed_partitions import ClickPartitions
    from jobrec.streaming.speed_sources import load_histories

    # every instance reads every job event (the catalog is small and each list needs all of it): assigned, no group
    jobs_consumer = KafkaConsumer(**client, enable_auto_commit=False, fetch_max_wait_ms=20)
    closing.callback(jobs_consumer.close)
    job_partitions = [
        TopicPartition(cfg.kafka.jobs_topic, p) for p in jobs_consumer.partitions_for_topic(cfg.kafka.jobs_topic) or ()
    ]
    jobs_consumer.assign(job_partitions)
    # the topic's end before the snapshot: job events after it are applied from the topic
    jobs_consumer.seek_to_end(*job_partitions)
    for tp in job_partitions:
        jobs_consumer.position(tp)
    catalog = CatalogState(
        CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases), cfg.catalog.default_ttl_days
    )
    root, options = cfg.storage.tables_root, serving_tables.delta_storage_options(cfg.spark.extra)
    catalog.load(serving_tables.read_catalog_rows(root, options))
    models = ModelHolder(
        lambda current: serving_tables.read_serving_model(root, current, options), cfg.fold_in.model_check_seconds
    ).start()
    closing.callback(models.stop)
    log.info(
        "speed layer: %d catalog jobs (%d not recommendable), model %s; joining group %s on %s",
        len(catalog.jobs),
        len(catalog.unavailable(datetime.now(timezone.utc))),
        models.model.model_version if models.model else "none yet",
        cfg.fold_in.consumer_group,
        cfg.kafka.clicks_topic,
    )
    session_ms = int(cfg.fold_in.session_timeout_seconds * 1000)
    consumer = KafkaConsumer(
        **client,
        group_id=cfg.fold_in.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=20,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(1000, session_ms // 3),
    )
    closing.callback(consumer.close)
    histories = Histories(dict(cfg.ingest.weights))
    partitions = ClickPartitions(
        consumer,
        cfg.kafka.clicks_topic,
        histories,
        lambda wanted, of: load_histories(root, histories, wanted, of, options),
        cfg.fold_in.replay_seconds,
        # a legitimate rebalance waits at most a session timeout for a member that died
        stall_seconds=cfg.fold_in.session_timeout_seconds + 5,
    )
    consumer.subscribe([cfg.kafka.clicks_topic], listener=partitions)
    producer = KafkaProducer(**client, acks="all", linger_ms=0)
    closing.callback(producer.close)
    settings = SpeedSettings(
        recommendations_topic=cfg.kafka.recommendations_topic,
        top_n=cfg.publish.top_n,
        limits=event_limits(cfg),
        max_per_category=cfg.publish.max_per_category,
        jobs_topic=cfg.kafka.jobs_topic,
        instance=f"{socket.gethostname()}:{os.getpid()}",
    )
    if metrics is not None:
        metrics.identify(settings.instance)
    return run_speed_layer(
        consumer,
        producer,
        models,
        histories,
        settings,
        should_stop,
        stats=stats,
        heartbeat=heartbeat or (lambda: None),
        catalog=catalog,
        jobs_consumer=jobs_consumer,
        partitions=partitions,
        on_ready=on_ready,
        metrics=metrics,
    )


def run_speed_process(cfg: Config, bootstrap: str, stop: threading.Event) -> SpeedStats:
    """`jobrec speed`: the speed layer until `stop` is set."""
    import os

    ensure_topics(cfg.kafka, bootstrap)
    stats = SpeedStats()
    port = cfg.metrics.speed_port + int(os.environ.get(INSTANCE_INDEX_ENV, "0")) if cfg.metrics.speed_port else 0
    # observed only when served: the hot path times every click otherwise for nobody
    metrics = SpeedMetrics(stats) if port else None
    registry = metrics.registry if metrics else None
    with _metrics_endpoint(cfg, registry, port, "speed layer"):
        return run_speed(cfg, bootstrap, stop.is_set, stats=stats, heartbeat=Heartbeat.from_env().beat, metrics=metrics)


def build_api(cfg: Config, bootstrap: str) -> tuple[Any, Callable[[], None]]:
    """(FastAPI app, stop function): the ingest/read API with its Kafka producer, its recommendations follower
    and its Kafka readiness check (each of the two in its own thread)."""
    from kafka import KafkaAdminClient, KafkaProducer

    from jobrec.streaming.clients import RecommendationsConsumer
    from jobrec.streaming.http_api import ApiSettings, create_app
    from jobrec.streaming.readiness import KafkaReadiness
    from jobrec.streaming.recommendations_reader import LatestLists

    client = python_client_args(cfg.kafka, bootstrap)
    timeout_ms = int(cfg.api.kafka_timeout_seconds * 1000)
    linger_ms = 2
    producer = KafkaProducer(
        **client,
        acks="all",
        linger_ms=linger_ms,
        # kafka-python 3.0's idempotent producer never recovers once a batch it had sent expires (a broker that
        # stopped answering): every later send times out. Without it a retried batch may be written twice, which
        # the pipeline absorbs (it drops repeated event_ids, and no consumer depends on the order within a key).
        enable_idempotence=False,
        max_block_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
        # a record the API gave up on is not retried for long after its 503 (the client retries it instead)
        delivery_timeout_ms=timeout_ms + linger_ms + 1,
    )
    lists = LatestLists(lambda: RecommendationsConsumer(topic=cfg.kafka.recommendations_topic, **client)).start()
    ready_ms = max(1, int(cfg.api.ready_timeout_seconds * 1000))
    kafka = KafkaReadiness(
        lambda: KafkaAdminClient(**client, request_timeout_ms=ready_ms, bootstrap_timeout_ms=ready_ms),
        (cfg.kafka.clicks_topic, cfg.kafka.jobs_topic),
        interval_seconds=cfg.api.ready_check_interval_seconds,
        timeout_seconds=cfg.api.ready_timeout_seconds,
    ).start()
    settings = ApiSettings(
        clicks_topic=cfg.kafka.clicks_topic,
        recommendations_topic=cfg.kafka.recommendations_topic,
        jobs_topic=cfg.kafka.jobs_topic,
        max_body_bytes=cfg.api.max_body_bytes,
        max_batch_events=cfg.api.max_batch_events,
        token=cfg.api.token,
        kafka_timeout_seconds=cfg.api.kafka_timeout_seconds,
        read_timeout_seconds=cfg.api.read_timeout_seconds,
        limits=event_limits(cfg),
    )

    serving = build_serving_state(cfg, client).start()

    def stop() -> None:
        serving.stop()
        lists.stop()
        kafka.stop()
        producer.close(timeout=5)

    return create_app(settings, producer, lists, kafka, serving), stop


def build_serving_state(cfg: Config, client: dict[str, Any]) -> ServingState:
    """The API's serving model and catalog (similar jobs, anonymous lists): read from the Delta tables without a
    JVM, with the speed layer's model choice, checked every fold_in.model_check_seconds, and the job events of the
    jobs topic applied as they come."""
    from functools import partial

    from jobrec.streaming import serving_tables
    from jobrec.streaming.serving_state import ServingState, open_jobs_consumer

    root, options = cfg.storage.tables_root, serving_tables.delta_storage_options(cfg.spark.extra)
    return ServingState(
        lambda current: serving_tables.read_serving_model(root, current, options),
        partial(serving_tables.read_catalog_rows, root, options),
        CatalogState(CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases), cfg.catalog.default_ttl_days),
        partial(open_jobs_consumer, client, cfg.kafka.jobs_topic),
        weights=cfg.ingest.weights,
        top_n=cfg.publish.top_n,
        max_per_category=cfg.publish.max_per_category,
        check_seconds=cfg.fold_in.model_check_seconds,
        limits=event_limits(cfg),
    )


def serve_api(cfg: Config, bootstrap: str, host: str, port: int) -> None:
    """`jobrec api`: the HTTP API on host:port until interrupted."""
    import uvicorn

    ensure_topics(cfg.kafka, bootstrap)
    app, stop = build_api(cfg, bootstrap)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        stop()


def send_job_event_batch(cfg: Config, bootstrap: str, events: list[dict[str, Any]]) -> int:
    """`jobrec jobs post|close`: the events on the jobs topic, acknowledged by all in-sync replicas."""
    from kafka import KafkaProducer

    ensure_topics(cfg.kafka, bootstrap)
    producer = KafkaProducer(**python_client_args(cfg.kafka, bootstrap), acks="all")
    try:
        return send_job_events(producer, cfg.kafka.jobs_topic, events)
    finally:
        producer.close()


def read_lists(cfg: Config, bootstrap: str) -> dict[str, dict[str, Any]]:
    """`jobrec show`: the newest list of every user on the recommendations topic."""
    from jobrec.streaming.recommendations_reader import read_latest_lists

    return read_latest_lists(python_client_args(cfg.kafka, bootstrap), cfg.kafka.recommendations_topic)


def _terminate_with_parent() -> None:
    """In a child before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux), so no instance is left
    holding partitions of the group without a supervisor to restart or stop it."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:  # not Linux: the instances outlive a killed supervisor
        pass


def supervise_speed_processes(command: list[str], processes: int, stop: threading.Event) -> int:
    """`jobrec speed --processes N`: N speed instances (`command`, each `jobrec ... speed`) in one consumer group
    on this machine, each its own interpreter (the hot path is single-threaded Python). One that exits while
    the others run is started again after a short pause; SIGTERM stops them all. Returns how many restarts."""
    import os
    import subprocess

    def start(i: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, INSTANCE_INDEX_ENV: str(i)}
        child = subprocess.Popen(command, preexec_fn=_terminate_with_parent, env=env)
        log.info("speed instance %d of %d started (pid %d)", i + 1, processes, child.pid)
        return child

    children = [start(i) for i in range(processes)]
    restarts = 0
    try:
        while not stop.wait(1.0):
            for i, child in enumerate(children):
                code = child.poll()
                if code is not None:
                    log.warning("speed instance %d (pid %d) exited with %d; starting it again", i + 1, child.pid, code)
                    if stop.wait(2.0):
                        break
                    children[i] = start(i)
                    restarts += 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
    return restarts
