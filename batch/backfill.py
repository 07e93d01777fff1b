"""Backfill: load historical (user, job, count) rows from a CSV straight into the interactions table.

So a deployment starts from its history (the seed's job_clicks.csv is one) without pushing millions of events
through Kafka. Loading the same file twice adds nothing: the MERGE carries the file's checksum as its Delta
transaction id, and Delta skips a transaction it has already committed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.delta_tables import ensure_delta_table, idempotent_writes, latest_version
from jobrec.batch.interactions_table import merge_interactions
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EVENT_TYPES

log = logging.getLogger(__name__)

COUNT = "count"


@dataclass(frozen=True)
class CsvLayout:
    sep: str = ","
    user_col: str = "userId"
    job_col: str = "jobId"
    count_col: str = "Clicks"


@dataclass(frozen=True)
class LoadReport:
    rows_read: int
    rows_bad: int
    rows_zero: int
    pairs_loaded: int
    skipped_as_already_loaded: bool


def file_checksum(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_counts_csv(spark: SparkSession, path: str, layout: CsvLayout) -> DataFrame:
    """CSV -> (user_id, job_id, count): ids as strings, count as a double (null where it is not a finite number):
    counts come as people have them, `3`, `3.0` or `0.5` (hours played, say)."""
    raw = spark.read.option("header", True).option("sep", layout.sep).option("inferSchema", False).csv(path)
    missing = [c for c in (layout.user_col, layout.job_col, layout.count_col) if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (columns: {', '.join(raw.columns)})")
    return raw.select(
        F.trim(F.col(layout.user_col)).alias(t.USER_ID),
        F.trim(F.col(layout.job_col)).alias(t.JOB_ID),
        F.expr(f"try_cast(trim(`{layout.count_col}`) AS DOUBLE)").alias(COUNT),
    ).withColumn(COUNT, F.when(F.isnan(COUNT) | (F.abs(COUNT) == float("inf")), None).otherwise(F.col(COUNT)))


def counts_to_interactions(counts: DataFrame, event_type: str, weights: Mapping[str, float]) -> DataFrame:
    """(user_id, job_id, count>0) -> interactions rows counting `event_type`; repeated pairs add up.

    The strength (ALS's r) is the count times the event type's weight, fractions kept; the event-count column
    holds the count rounded, and at least 1 for any positive count (a pair with some signal was acted on)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"event type {event_type!r}: expected one of {', '.join(EVENT_TYPES)}")
    summed = counts.groupBy(t.USER_ID, t.JOB_ID).agg(F.sum(COUNT).alias(COUNT))
    events = F.greatest(F.round(F.col(COUNT)), F.lit(1.0))
    cols = [(events if e == event_type else F.lit(0)).cast("long").alias(t.count_column(e)) for e in EVENT_TYPES]
    return summed.select(
        t.USER_ID,
        t.JOB_ID,
        *cols,
        (F.col(COUNT).cast("double") * F.lit(float(weights[event_type]))).alias(t.STRENGTH),
        F.lit(None).cast("timestamp").alias(t.FIRST_AT),
        F.lit(None).cast("timestamp").alias(t.LAST_AT),
    )


def load_counts_csv(
    spark: SparkSession,
    path: str,
    layout: CsvLayout,
    tables_root: str,
    event_type: str,
    weights: Mapping[str, float],
    binary: bool = False,
) -> LoadReport:
    """Merge a counts CSV into interactions, once per file content. `binary`: a pair with count > 0 counts as one
    event, for files whose counts are noise (the seed's click counts are random)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist")
    counts = read_counts_csv(spark, path, layout).cache()
    valid = (
        F.col(t.USER_ID).isNotNull()
        & (F.length(t.USER_ID) > 0)
        & F.col(t.JOB_ID).isNotNull()
        & (F.length(t.JOB_ID) > 0)
        & F.col(COUNT).isNotNull()
        & (F.col(COUNT) >= 0)
    )
    stats = counts.agg(
        F.count(F.lit(1)).alias("read"),
        F.sum(F.when(~valid | valid.isNull(), 1).otherwise(0)).alias("bad"),
        F.sum(F.when(valid & (F.col(COUNT) == 0), 1).otherwise(0)).alias("zero"),
    ).collect()[0]
    # a zero count is a pair shown but never acted on: no interaction (clicks > 0 is the signal)
    positive = counts.where(valid & (F.col(COUNT) > 0))
    if binary:
        positive = positive.withColumn(COUNT, F.lit(1).cast("long"))
    interactions = counts_to_interactions(positive, event_type, weights)
    target = ensure_delta_table(spark, tables_root, t.INTERACTIONS)
    before = latest_version(spark, target)
    app_id = f"jobrec-load:{file_checksum(path)}:{event_type}{':binary' if binary else ''}"
    with idempotent_writes(spark, app_id, 0):
        merge_interactions(spark, interactions, target)
    skipped = latest_version(spark, target) == before
    pairs = 0 if skipped else interactions.count()
    counts.unpersist()
    report = LoadReport(int(stats["read"]), int(stats["bad"] or 0), int(stats["zero"] or 0), pairs, skipped)
    if skipped:
        log.info("%s was loaded before (same content): nothing added", path)
    else:
        log.info(
            "loaded %s: %d rows read, %d (user, job) pairs merged, %d zero-count rows skipped, %d bad rows skipped",
            path,
            report.rows_read,
            report.pairs_loaded,
            report.rows_zero,
            report.rows_bad,
        )
    return report
