"""The job-events query: the jobs topic -> dead_letters and the Delta `jobs` table, beside the clicks ingest.

Plan: Kafka records -> parse against job event v1 and normalise the category (mapInArrow) ->
foreachBatch(`write_job_events_batch`): rejected records to dead_letters, valid events MERGEd into jobs
(newest event per job wins, `batch.jobs_table`). Both writes carry (app id, batch id), so a batch replayed
after a crash is skipped; and the MERGE's newest-wins rule makes a repeated event a no-op anyway, which is why
this query needs no de-duplication state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from jobrec.batch.core.catalog import CategoryNormaliser, expiry
from jobrec.batch.delta_tables import ensure_delta_table, ensure_table_properties
from jobrec.batch.jobs_table import apply_job_events
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EventLimits, Rejection, epoch_micros
from jobrec.schemas.job_event import parse_job_event
from jobrec.streaming import parse
from jobrec.streaming.ingest import IngestSettings, _discard, dead_letter_rows, kafka_columns, kafka_source

log = logging.getLogger(__name__)

QUERY_NAME = "ingest_job_events"
EXPIRES_AT_US = "expires_at_us"

PARSED_JOB_ARROW_SCHEMA = pa.schema(
    [
        (t.EVENT_ID, pa.string()),
        (t.JOB_ID, pa.string()),
        (t.ACTION, pa.string()),
        (parse.OCCURRED_AT_US, pa.int64()),
        (t.CATEGORY, pa.string()),
        (t.RAW_CATEGORY, pa.string()),
        (EXPIRES_AT_US, pa.int64()),
        *parse.VERDICT_FIELDS,
    ]
)
PARSED_JOB_DDL = parse.spark_ddl(PARSED_JOB_ARROW_SCHEMA)
_EVENT_COLUMNS = (t.EVENT_ID, t.JOB_ID, t.ACTION, parse.OCCURRED_AT_US, t.CATEGORY, t.RAW_CATEGORY, EXPIRES_AT_US)


def parse_job_record_batch(
    batch: pa.RecordBatch, limits: EventLimits, normaliser: CategoryNormaliser, default_ttl_days: float
) -> pa.RecordBatch:
    """One output row per Kafka record: the event with its normalised category and effective expiry, or why not."""
    values = batch.column(parse.IN_VALUE).to_pylist()
    received = batch.column(parse.IN_RECEIVED_MS).to_pylist()
    rows = [
        _job_row(raw, received_ms, limits, normaliser, default_ttl_days)
        for raw, received_ms in zip(values, received, strict=True)
    ]
    return parse.verdict_batch(PARSED_JOB_ARROW_SCHEMA, rows, values, batch)


def _job_row(
    raw: bytes | None,
    received_ms: int | None,
    limits: EventLimits,
    normaliser: CategoryNormaliser,
    default_ttl_days: float,
) -> tuple[object, ...] | Rejection:
    try:
        verdict = parse_job_event(raw, received_ms if received_ms is not None else 0, limits)
        if isinstance(verdict, Rejection):
            return verdict
        expires = expiry(verdict, default_ttl_days)
        return (
            verdict.event_id,
            verdict.job_id,
            verdict.action,
            epoch_micros(verdict.occurred_at),
            normaliser.normalise(verdict.category),
            verdict.category,
            epoch_micros(expires) if expires else None,
        )
    except Exception as e:  # one record must never fail the micro-batch (and so the stream)
        return parse.internal_error(e)


def _normaliser(settings: IngestSettings) -> CategoryNormaliser:
    return CategoryNormaliser(list(settings.categories), dict(settings.aliases))


def parse_job_records(records: DataFrame, settings: IngestSettings) -> DataFrame:
    limits, ttl = settings.limits, settings.default_ttl_days

    def parse_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        normaliser = _normaliser(settings)
        for b in batches:
            yield parse_job_record_batch(b, limits, normaliser, ttl)

    parsed = kafka_columns(records).mapInArrow(parse_batches, PARSED_JOB_DDL)
    return parsed.select(
        "*",
        F.timestamp_micros(F.col(parse.OCCURRED_AT_US)).alias(t.OCCURRED_AT),
        F.timestamp_micros(F.col(EXPIRES_AT_US)).alias(t.EXPIRES_AT),
        F.timestamp_millis(F.col(parse.IN_RECEIVED_MS)).alias(t.RECEIVED_AT),
    )


def write_job_events_batch(batch: DataFrame, batch_id: int, settings: IngestSettings) -> dict[str, int]:
    spark = batch.sparkSession
    started = time.monotonic()
    app_id = f"jobrec-jobs:{settings.jobs_checkpoint}"
    batch = batch.persist()
    try:
        counts = batch.agg(
            F.count(F.lit(1)).alias("all"),
            F.count(t.REASON_CODE).alias("rejected"),
            F.sum(
                F.when(
                    F.col(t.REASON_CODE).isNull() & ~F.col(t.CATEGORY).eqNullSafe(F.col(t.RAW_CATEGORY)), 1
                ).otherwise(0)
            ).alias("fixed"),
        ).collect()[0]
        n_rejected = int(counts["rejected"])
        n_events = int(counts["all"]) - n_rejected
        if n_rejected:
            rejected = dead_letter_rows(batch, batch_id)
            (
                rejected.write.format("delta")
                .mode("append")
                .option("txnAppId", app_id)
                .option("txnVersion", batch_id)
                .save(ensure_delta_table(spark, settings.tables_root, t.DEAD_LETTERS))
            )
        if n_events:
            events = batch.where(F.col(t.REASON_CODE).isNull()).select(
                t.EVENT_ID, t.JOB_ID, t.ACTION, t.OCCURRED_AT, t.CATEGORY, t.RAW_CATEGORY, t.EXPIRES_AT
            )
            apply_job_events(spark, events, settings.tables_root, app_id, batch_id)
        if n_events or n_rejected:
            log.info(
                "job events batch %d: %d events (%d categories fixed), %d dead letters in %.2f s",
                batch_id,
                n_events,
                int(counts["fixed"] or 0),
                n_rejected,
                time.monotonic() - started,
            )
        return {"events": n_events, "dead_letters": n_rejected}
    finally:
        batch.unpersist()


def start_job_events(
    spark: SparkSession, settings: IngestSettings, *, once: bool = False, trigger_seconds: float = 0.0
) -> StreamingQuery:
    """Start the job-events query; `once` reads what is on the topic now and stops."""
    for name in (t.DEAD_LETTERS, t.JOBS):
        ensure_delta_table(spark, settings.tables_root, name)
    ensure_table_properties(spark, settings.tables_root, t.JOBS)  # dead_letters: by the ingest query, first
    records = kafka_source(spark, settings, settings.jobs_topic)
    writer = (
        parse_job_records(records, settings)
        .writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", settings.jobs_checkpoint)
        .foreachBatch(lambda df, batch_id: _discard(write_job_events_batch(df, batch_id, settings)))
    )
    # job events are few and must take effect soon: a batch at least every second while running
    trigger = {"availableNow": True} if once else {"processingTime": f"{max(trigger_seconds, 1)} seconds"}
    return writer.trigger(**trigger).start()
