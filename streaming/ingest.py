"""The streaming ingest: clicks topic -> dead_letters and events Delta tables, exactly once; the events folded into
interactions every ingest.fold_seconds (streaming.interactions_fold).

Plan of one query:
  Kafka records -> parse against click event v1 (mapInArrow) -> drop repeated event_ids seen within
  ingest.dedup_window -> foreachBatch(`write_ingest_batch`): rejected records to dead_letters, valid events to
  events.

Exactly once: the Kafka offsets of each micro-batch and the de-duplication state are in the checkpoint; after a
crash Spark replays the unfinished batch with the same id and the same rows, and every Delta write of the batch
carries (app id, batch id), so Delta skips the writes that had committed before the crash. The fold into
interactions keeps its own position (an events version) in the interactions table, committed with its counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from jobrec.batch.delta_tables import (
    ensure_delta_table,
    ensure_table_properties,
    run_concurrently,
    table_path,
)
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EventLimits
from jobrec.streaming import parse
from jobrec.streaming.checkpoint_guard import (
    judge_checkpoint,
    legacy_app_id,
    new_app_id,
    read_checkpoint_state,
    table_transactions,
    write_identity,
)
from jobrec.streaming.interactions_fold import FoldReport, fold_events, set_fold_position

log = logging.getLogger(__name__)

QUERY_NAME = "ingest_clicks"
# the logger whose per-batch records carry the phase timings (`extra` "phases"), for `jobrec bench ingest`
BATCH_TIMINGS_LOG = __name__
DEDUP_KEY = "dedup_key"
INGEST_TABLES = (t.DEAD_LETTERS, t.EVENTS, t.INTERACTIONS)
STATE_CHANGELOG = "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled"
INGESTED_AT = "ingested_at"
# rows per file of the appends; a batch's rows are in the cache, so fewer partitions cost no recomputation
ROWS_PER_FILE = 50_000
# How long the broker may hold a fetch of the source's consumers that finds no new data (Kafka's default: 500 ms).
# A micro-batch only asks for offsets that exist, yet a task whose range ended at the log end the batch before
# spent the whole default in the broker: measured, a 1,000-event batch's 4 read tasks took 540 ms each for ~90
# records and 10 ms of CPU (Spark's own KafkaDataConsumer log shows the same in SPARK-44012: "read 1 records,
# taking 504554479 nanos"). With 50 ms, 60-140 ms a task and the 1,000-event batch 2.2 -> 1.5 s. A lower value
# costs only more empty fetches while a task waits for records not there yet; a task asks only for offsets the
# driver has already seen on the broker, so that is rare.
SOURCE_FETCH_MAX_WAIT_MS = 50


@dataclass(frozen=True)
class IngestSettings:
    """What the ingest query needs, taken from config by the composition root."""

    tables_root: str
    checkpoint: str
    clicks_topic: str
    kafka_options: dict[str, str]
    starting_offsets: str
    max_offsets_per_trigger: int
    dedup_window: str
    limits: EventLimits
    weights: dict[str, float]
    # the job-events query beside it (streaming.job_events)
    jobs_topic: str = ""
    categories: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    default_ttl_days: float = 0.0
    # the ingest's identity (streaming.checkpoint_guard), written in its checkpoint; set by start_ingest
    identity: str = ""

    @property
    def app_id(self) -> str:
        # the Delta transaction app id of every write: a new checkpoint restarts batch ids at 0 and has a new one
        return self.identity or legacy_app_id(self.checkpoint)

    @property
    def jobs_checkpoint(self) -> str:
        return f"{self.checkpoint.rstrip('/')}-jobs"


def kafka_source(spark: SparkSession, settings: IngestSettings, topic: str) -> DataFrame:
    """The streaming Kafka source of one topic, with the ingest's offsets settings."""
    return (
        spark.readStream.format("kafka")
        .options(**settings.kafka_options)
        .option("subscribe", topic)
        .option("startingOffsets", settings.starting_offsets)
        .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        .option("failOnDataLoss", "true")
        .option("kafka.fetch.max.wait.ms", SOURCE_FETCH_MAX_WAIT_MS)
        .load()
    )


def kafka_columns(records: DataFrame) -> DataFrame:
    """Kafka source rows -> the input columns of the parsers (streaming.parse, streaming.job_events)."""
    return records.select(
        F.col("value").alias(parse.IN_VALUE),
        F.col("topic").alias(parse.IN_TOPIC),
        F.col("partition").alias(parse.IN_PARTITION),
        F.col("offset").alias(parse.IN_OFFSET),
        F.unix_millis(F.col("timestamp")).alias(parse.IN_RECEIVED_MS),
    )


def dead_letter_rows(parsed: DataFrame, batch_id: int) -> DataFrame:
    """The rejected rows of a parsed micro-batch, in the dead_letters schema."""
    return parsed.where(F.col(t.REASON_CODE).isNotNull()).select(
        t.RAW,
        t.KAFKA_TOPIC,
        t.KAFKA_PARTITION,
        t.KAFKA_OFFSET,
        t.RECEIVED_AT,
        t.REASON_CODE,
        t.REASON,
        F.lit(batch_id).cast("long").alias(t.BATCH_ID),
    )


def parse_kafka_records(records: DataFrame, limits: EventLimits) -> DataFrame:
    """Kafka source rows -> one row per record: event fields or a rejection reason (see streaming.parse)."""
    parsed = kafka_columns(records).mapInArrow(
        lambda batches: parse.parse_record_batches(batches, limits), parse.PARSED_DDL
    )
    return parsed.select(
        "*",
        F.timestamp_micros(F.col(parse.OCCURRED_AT_US)).alias(t.OCCURRED_AT),
        F.timestamp_millis(F.col(parse.IN_RECEIVED_MS)).alias(t.RECEIVED_AT),
        # a rejected record has no trustworthy id: key it by its offset so that it is never dropped as a repeat
        F.coalesce(
            F.col(t.EVENT_ID),
            F.concat_ws(":", F.lit("rejected"), t.KAFKA_TOPIC, t.KAFKA_PARTITION, t.KAFKA_OFFSET),
        ).alias(DEDUP_KEY),
    ).drop(parse.OCCURRED_AT_US, parse.IN_RECEIVED_MS)


def drop_repeated_events(parsed: DataFrame, window: str) -> DataFrame:
    """Drop rows whose event_id was already seen within `window` of processing time.

    The watermark is on the micro-batch's processing time, not on occurred_at or the Kafka timestamp: a
    watermark on event time would also drop every event older than the watermark (late or backfilled clicks)
    without a trace. Spark stores each batch's timestamp in the checkpoint, so a replayed batch sees the same.
    """
    return (
        parsed.withColumn(INGESTED_AT, F.current_timestamp())
        .withWatermark(INGESTED_AT, window)
        .dropDuplicatesWithinWatermark([DEDUP_KEY])
    )


def _discard(counts: dict[str, int]) -> None:
    """foreachBatch wants a callback that returns nothing; the writers return their counts for tests."""


def write_ingest_batch(batch: DataFrame, batch_id: int, settings: IngestSettings) -> dict[str, Any]:
    """The foreachBatch body: write one micro-batch to its two tables, each write idempotent by batch id.

    The batch is computed once (Kafka read, parse, de-duplication) into the cache by the count of its two sides;
    the two appends then read the cache and run at once, so their fixed costs (Delta's snapshot of each table,
    planning, the commit) overlap instead of queueing. Each is skipped on a replay by its own table's (app id,
    batch id), whichever of them had committed. Interactions are not written here (see
    streaming.interactions_fold: a MERGE per micro-batch cost more than the rest of a small batch).
    """
    phases = _Phases()
    preload = threading.Thread(
        target=_preload_transactions, args=(batch.sparkSession, settings.tables_root), name="ingest-txn-preload"
    )
    preload.start()
    batch = batch.persist()
    try:
        # rows per reason code (None: valid) in the pass that fills the cache
        by_reason = {row[0]: int(row[1]) for row in batch.groupBy(t.REASON_CODE).count().collect()}
        n_events = by_reason.pop(None, 0)
        n_rejected = sum(by_reason.values())
        phases.done("read_parse_dedup")
        events = valid_event_rows(batch, batch_id)
        writes: list[Callable[[], None]] = []
        # an empty side is not written: an empty commit would cost a Delta transaction for nothing (an empty batch
        # is e.g. the one Spark runs only to move the watermark on)
        if n_rejected:
            rejected = dead_letter_rows(batch, batch_id)
            rejected = _in_files(rejected, n_rejected)
            writes.append(partial(phases.timed, t.DEAD_LETTERS, _append, rejected, t.DEAD_LETTERS, batch_id, settings))
        if n_events:
            writes.append(
                partial(phases.timed, t.EVENTS, _append, _in_files(events, n_events), t.EVENTS, batch_id, settings)
            )
        if writes:
            run_concurrently(*writes)
            phases.done("writes")
        log.info(
            "batch %d: %d events, %d dead letters in %.2f s (%s)",
            batch_id,
            n_events,
            n_rejected,
            phases.total_s(),
            phases.describe(),
            extra={"phases": {"batch_id": batch_id, **phases.ms}},
        )
        return {
            "events": n_events,
            "dead_letters": n_rejected,
            "dead_letters_by_reason": by_reason,
            "seconds": phases.total_s(),
        }
    finally:
        batch.unpersist()
        preload.join()


# Each append's idempotency check (its transaction pair) looks up the table's pairs, and Delta 4.4 computes them
# with a state-reconstruction job on each new snapshot of the table (a 3-stage job: 0.25-0.5 s; the version's
# .crc holds them, but 4.4 does not read them from there). The table's snapshot only changes with a commit, so the
# lookup can run while the micro-batch is read, parsed and de-duplicated: the append starts from the same snapshot
# with its pairs known (it waits for them if the lookup is still running). Measured on 1,000-event batches: median
# 1.34 -> 0.85 s. The lookup is the one the ingest's start already makes (checkpoint_guard.table_transactions).
_APPENDED_TABLES = (t.EVENTS, t.DEAD_LETTERS)


def _preload_transactions(spark: SparkSession, tables_root: str) -> None:
    try:
        table_transactions(spark, {name: table_path(tables_root, name) for name in _APPENDED_TABLES})
    except Exception as e:  # only a head start: the append looks them up itself
        log.debug("preloading the appended tables' transactions failed: %s", e)


def _in_files(rows: DataFrame, n_rows: int) -> DataFrame:
    """`rows` in as many partitions (files once written) as ROWS_PER_FILE asks, at most as many as they have: a
    micro-batch of 1,000 events is one file, not one per shuffle partition (fewer tasks now, compactions later)."""
    return rows.coalesce(max(1, -(-n_rows // ROWS_PER_FILE)))


def valid_event_rows(parsed: DataFrame, batch_id: int) -> DataFrame:
    """The valid rows of a parsed micro-batch, in the events schema."""
    return parsed.where(F.col(t.REASON_CODE).isNull()).select(
        t.EVENT_ID,
        t.USER_ID,
        t.JOB_ID,
        t.EVENT_TYPE,
        t.OCCURRED_AT,
        t.RECEIVED_AT,
        t.KAFKA_TOPIC,
        t.KAFKA_PARTITION,
        t.KAFKA_OFFSET,
        F.lit(batch_id).cast("long").alias(t.BATCH_ID),
    )


def _append(frame: DataFrame, name: str, batch_id: int, settings: IngestSettings) -> None:
    path = ensure_delta_table(frame.sparkSession, settings.tables_root, name)
    (
        frame.write.format("delta")
        .mode("append")
        .option("txnAppId", settings.app_id)
        .option("txnVersion", batch_id)
        .save(path)
    )


class _Phases:
    """Wall time of the steps of one micro-batch (or of the query's start), in milliseconds, for the log (and
    `jobrec bench ingest`)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.ms: dict[str, int] = {}

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = round((now - self.last) * 1000)
        self.last = now

    def timed(self, name: str, step: Callable[..., None], *args: object) -> None:
        """Run one of the concurrent writes and keep its own time."""
        started = time.perf_counter()
        try:
            step(*args)
        finally:
            self.ms[name] = round((time.perf_counter() - started) * 1000)

    def total_s(self) -> float:
        return time.perf_counter() - self.started

    def describe(self) -> str:
        return ", ".join(f"{k} {v / 1000:.2f} s" for k, v in self.ms.items())


def start_ingest(
    spark: SparkSession,
    settings: IngestSettings,
    *,
    once: bool = False,
    trigger_seconds: float = 0.0,
    on_batch: Callable[[dict[str, Any]], None] = lambda written: None,
) -> StreamingQuery:
    """Start the ingest query: `once` reads what is on the topic now and stops (availableNow). `on_batch` gets
    what each micro-batch wrote (write_ingest_batch's answer), for the metrics."""
    # The de-duplication state (RocksDB) commits a changelog of the batch's keys instead of a snapshot of the
    # store: a small batch's state commit halves. A setting of the session, read when the query starts; an
    # existing checkpoint takes it from its next batch on.
    spark.conf.set(STATE_CHANGELOG, "true")

    # at once: creating a table is mostly the driver's fixed cost
    def create(name: str) -> None:
        ensure_delta_table(spark, settings.tables_root, name)
        ensure_table_properties(spark, settings.tables_root, name)

    setup = _Phases()
    run_concurrently(*(partial(create, name) for name in INGEST_TABLES))
    setup.done("tables")
    settings = checked_identity(spark, settings)
    setup.done("checkpoint check")
    set_fold_position(spark, settings.tables_root)
    setup.done("fold position")
    records = kafka_source(spark, settings, settings.clicks_topic)
    deduped = drop_repeated_events(parse_kafka_records(records, settings.limits), settings.dedup_window)
    writer = (
        deduped.writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", settings.checkpoint)
        .foreachBatch(lambda df, batch_id: on_batch(write_ingest_batch(df, batch_id, settings)))
    )
    if once:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_seconds} seconds")
    query = writer.start()
    setup.done("query start")
    log.info("ingest query started in %.2f s (%s)", setup.total_s(), setup.describe())
    return query


def ingest_once(spark: SparkSession, settings: IngestSettings, timeout_s: int = 600) -> FoldReport | None:
    """Ingest what is on the clicks topic now, then fold it into interactions (`jobrec ingest --once` without the
    job events and the restarts; tests and benchmarks). Raises what the query raised."""
    query = start_ingest(spark, settings, once=True)
    if not query.awaitTermination(timeout_s):
        query.stop()
        raise TimeoutError(f"the ingest did not finish within {timeout_s} s")
    failure = query.exception()
    if failure is not None:
        raise failure
    return fold_events(spark, settings.tables_root, settings.weights)


def checked_identity(spark: SparkSession, settings: IngestSettings) -> IngestSettings:
    """`settings` with the ingest's identity: the checkpoint's own, or a new one written into a new checkpoint.
    Raises checkpoint_guard.CheckpointMismatch when the checkpoint and the tables disagree (a lost or stale
    checkpoint), before anything is read or written."""
    if settings.identity:  # a recovery has just made it
        return settings
    paths = {name: table_path(settings.tables_root, name) for name in INGEST_TABLES}
    identity = judge_checkpoint(read_checkpoint_state(spark, settings.checkpoint), table_transactions(spark, paths))
    if identity is None:
        identity = new_app_id()
        write_identity(spark, settings.checkpoint, identity)
        log.info("new ingest checkpoint at %s; its writes carry the identity %s", settings.checkpoint, identity)
    return replace(settings, identity=identity)


def new_progress(queries: list[StreamingQuery], reported: dict[str, str]) -> list[dict[str, Any]]:
    """The progress reports of the queries not seen at the last call (`reported` remembers what was seen)."""
    fresh: list[dict[str, Any]] = []
    for q in queries:
        progress = q.lastProgress
        if progress is None:
            continue
        stamp = str(progress["timestamp"])
        if reported.get(str(q.id)) != stamp:
            reported[str(q.id)] = stamp
            fresh.append(progress)
    return fresh


def run_ingest(
    start: Callable[[], list[StreamingQuery]],
    *,
    backoff_seconds: float,
    should_stop: Callable[[], bool] = lambda: False,
    heartbeat: Callable[[], None] = lambda: None,
    on_progress: Callable[[dict[str, Any]], None] = lambda progress: None,
    between: Callable[[], None] = lambda: None,
) -> None:
    """Keep the ingest queries running: when one fails (brokers unreachable, say), log why and start all again.

    The checkpoint makes a restart resume exactly where the failed query stopped. `heartbeat` (the liveness
    signal) is called only when a query reported new progress, a finished micro-batch or Spark's periodic idle
    report, so a query that is stuck in a batch, or fails and restarts without ever finishing one, stops the
    heartbeat and the liveness probe notices. `on_progress` gets each new progress report (for the metrics);
    `between` is called at every turn of the watch loop, about once a second (the fold into interactions).
    """
    from pyspark.errors import StreamingQueryException

    reported: dict[str, str] = {}  # query id -> timestamp of the newest progress seen
    while not should_stop():
        queries = start()
        try:
            # until stopped, or all queries ended (an --once run ends query by query), or one failed
            while any(q.isActive for q in queries) and not should_stop():
                if any(q.exception() is not None for q in queries if not q.isActive):
                    break
                fresh = new_progress(queries, reported)
                if fresh:
                    heartbeat()
                for progress in fresh:
                    on_progress(progress)
                between()
                # the queries may have ended while `between` ran: the loop's test sees it
                running = [q for q in queries if q.isActive]
                if running:
                    running[0].awaitTermination(timeout=1)
            for q in queries:
                if q.isActive:
                    q.stop()
            for q in queries:
                ex = q.exception()
                if ex is not None:
                    raise ex
            return
        except StreamingQueryException as e:
            # one failed query restarts all: each resumes from its own checkpoint
            for q in queries:
                if q.isActive:
                    q.stop()
            # an --once (availableNow) run that failed is retried too, until it has read what was there
            log.error("ingest query failed: %s; restarting in %.0f s", str(e).splitlines()[0][:300], backoff_seconds)
            time.sleep(backoff_seconds)
