"""The Delta `jobs` table: load a jobs.csv-style file, apply job events, read which jobs may be recommended.

One row per job (schemas/tables.py JOBS_DDL). Both writers are idempotent by construction: the CSV load only
inserts new jobs and fixes categories (so loading a file twice changes nothing, and it never reopens a closed
job), and events are applied by the newest-wins rule of `jobrec.batch.core.catalog.wins`, so a replayed or
repeated event changes nothing either.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobrec.batch.core.catalog import CatalogRow, CategoryNormaliser
from jobrec.batch.delta_tables import ensure_delta_table, idempotent_writes, read_delta_table
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import from_epoch_micros
from jobrec.schemas.job_event import CLOSED

log = logging.getLogger(__name__)


# columns of a batch of job events to merge (one row per event, category already normalised)
JOB_UPDATES_DDL = (
    f"{t.EVENT_ID} STRING, {t.JOB_ID} STRING, {t.ACTION} STRING, {t.OCCURRED_AT} TIMESTAMP, "
    f"{t.CATEGORY} STRING, {t.RAW_CATEGORY} STRING, {t.EXPIRES_AT} TIMESTAMP"
)


@dataclass(frozen=True)
class JobsLoadReport:
    rows_read: int
    rows_bad: int
    jobs_inserted: int
    categories_updated: int
    categories_fixed: int
    normalisation: str  # what was fixed, e.g. "789 'Retial' -> 'Retail'"


def read_jobs_csv(
    path: str, normaliser: CategoryNormaliser, job_col: str = "jobID", category_col: str = "job_category"
) -> tuple[list[tuple[str, str | None, str | None]], int, int]:
    """(job_id, category, raw_category) rows, rows read, rows without a job id. The last row of a job wins."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist")
    rows: dict[str, tuple[str, str | None, str | None]] = {}
    n_read = n_bad = 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for column in (job_col, category_col):
            if column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
        for record in reader:
            n_read += 1
            job = (record.get(job_col) or "").strip()
            if not job:
                n_bad += 1
                continue
            raw = record.get(category_col)
            rows[job] = (job, normaliser.normalise(raw), raw.strip() if raw else None)
    return list(rows.values()), n_read, n_bad


def load_jobs_csv(
    spark: SparkSession,
    path: str,
    tables_root: str,
    normaliser: CategoryNormaliser,
    job_col: str = "jobID",
    category_col: str = "job_category",
) -> JobsLoadReport:
    """Insert the file's jobs as open jobs; for jobs already there, only a different category is written."""
    from delta.tables import DeltaTable

    rows, n_read, n_bad = read_jobs_csv(path, normaliser, job_col, category_col)
    target = ensure_delta_table(spark, tables_root, t.JOBS)
    updates = spark.createDataFrame(rows, f"{t.JOB_ID} STRING, {t.CATEGORY} STRING, {t.RAW_CATEGORY} STRING")
    (
        DeltaTable.forPath(spark, target)
        .alias("t")
        .merge(updates.alias("u"), f"t.{t.JOB_ID} = u.{t.JOB_ID}")
        .whenMatchedUpdate(
            # a category set by a job event is newer than any file
            condition=f"t.{t.CATEGORY_AT} IS NULL AND NOT (t.{t.CATEGORY} <=> u.{t.CATEGORY})",
            set={t.CATEGORY: f"u.{t.CATEGORY}", t.RAW_CATEGORY: f"u.{t.RAW_CATEGORY}"},
        )
        .whenNotMatchedInsert(
            values={
                t.JOB_ID: f"u.{t.JOB_ID}",
                t.CATEGORY: f"u.{t.CATEGORY}",
                t.RAW_CATEGORY: f"u.{t.RAW_CATEGORY}",
                t.STATUS: F.lit(t.JOB_OPEN),
            }
        )
        .execute()
    )
    # the newest MERGE, not the newest commit: auto compaction may have committed after it
    merges = DeltaTable.forPath(spark, target).history(10).where("operation = 'MERGE'").limit(1).collect()
    metrics = (merges[0]["operationMetrics"] if merges else None) or {}
    report = JobsLoadReport(
        n_read,
        n_bad,
        int(metrics.get("numTargetRowsInserted", 0)),
        int(metrics.get("numTargetRowsUpdated", 0)),
        normaliser.n_fixed,
        normaliser.summary(),
    )
    log.info(
        "loaded %s into jobs: %d rows read, %d without a job id, %d jobs inserted, %d categories updated; %s",
        path,
        report.rows_read,
        report.rows_bad,
        report.jobs_inserted,
        report.categories_updated,
        report.normalisation,
    )
    return report


def job_updates(events: DataFrame) -> DataFrame:
    """One row per job from a batch of events: the status of the winning event (newest; a close wins a tie,
    `jobrec.batch.core.catalog.wins`) and, apart, the category of the newest event that has one (category_at)."""
    order = Window.partitionBy(t.JOB_ID).orderBy(
        F.col(t.OCCURRED_AT).desc(), (F.col(t.ACTION) == CLOSED).desc(), F.col(t.EVENT_ID).desc()
    )
    status = events.withColumn("_n", F.row_number().over(order)).where(F.col("_n") == 1)
    newest_category = (
        events.where(F.col(t.CATEGORY).isNotNull())
        .groupBy(t.JOB_ID)
        .agg(
            F.max_by(F.struct(t.CATEGORY, t.RAW_CATEGORY, t.OCCURRED_AT), F.struct(t.OCCURRED_AT, t.EVENT_ID)).alias(
                "c"
            )
        )
        .select(
            t.JOB_ID,
            F.col(f"c.{t.CATEGORY}").alias(t.CATEGORY),
            F.col(f"c.{t.RAW_CATEGORY}").alias(t.RAW_CATEGORY),
            F.col(f"c.{t.OCCURRED_AT}").alias(t.CATEGORY_AT),
        )
    )
    return status.select(t.JOB_ID, t.EVENT_ID, t.ACTION, t.OCCURRED_AT, t.EXPIRES_AT).join(
        newest_category, t.JOB_ID, "left"
    )


def merge_job_events(spark: SparkSession, events: DataFrame, jobs_path: str) -> None:
    """Apply a batch of job events (JOB_UPDATES_DDL) to the jobs table, status and category each by its rule."""
    from delta.tables import DeltaTable

    closed = F.col(f"u.{t.ACTION}") == CLOSED
    occurred = F.col(f"u.{t.OCCURRED_AT}")
    status_wins = F.expr(
        f"t.{t.UPDATED_AT} IS NULL OR u.{t.OCCURRED_AT} > t.{t.UPDATED_AT} OR "
        f"(u.{t.OCCURRED_AT} = t.{t.UPDATED_AT} AND u.{t.ACTION} = '{CLOSED}' AND t.{t.STATUS} <> '{t.JOB_CLOSED}')"
    )
    category_wins = F.expr(
        f"u.{t.CATEGORY_AT} IS NOT NULL AND (t.{t.CATEGORY_AT} IS NULL OR u.{t.CATEGORY_AT} > t.{t.CATEGORY_AT})"
    )

    def if_status(value, column: str):
        return F.when(status_wins, value).otherwise(F.col(f"t.{column}"))

    def if_category(column: str):
        return F.when(category_wins, F.col(f"u.{column}")).otherwise(F.col(f"t.{column}"))

    update = {
        t.STATUS: if_status(F.when(closed, F.lit(t.JOB_CLOSED)).otherwise(F.lit(t.JOB_OPEN)), t.STATUS),
        t.POSTED_AT: if_status(F.when(closed, F.col(f"t.{t.POSTED_AT}")).otherwise(occurred), t.POSTED_AT),
        t.CLOSED_AT: if_status(F.when(closed, occurred), t.CLOSED_AT),
        t.EXPIRES_AT: if_status(F.when(~closed, F.col(f"u.{t.EXPIRES_AT}")), t.EXPIRES_AT),
        t.UPDATED_AT: if_status(occurred, t.UPDATED_AT),
        t.EVENT_ID: if_status(F.col(f"u.{t.EVENT_ID}"), t.EVENT_ID),
        t.CATEGORY: if_category(t.CATEGORY),
        t.RAW_CATEGORY: if_category(t.RAW_CATEGORY),
        t.CATEGORY_AT: if_category(t.CATEGORY_AT),
    }
    insert: dict[str, str | Column] = {
        t.JOB_ID: F.col(f"u.{t.JOB_ID}"),
        t.STATUS: F.when(closed, F.lit(t.JOB_CLOSED)).otherwise(F.lit(t.JOB_OPEN)),
        t.POSTED_AT: F.when(~closed, occurred),
        t.CLOSED_AT: F.when(closed, occurred),
        t.EXPIRES_AT: F.when(~closed, F.col(f"u.{t.EXPIRES_AT}")),
        t.UPDATED_AT: occurred,
        t.EVENT_ID: F.col(f"u.{t.EVENT_ID}"),
        t.CATEGORY: F.col(f"u.{t.CATEGORY}"),
        t.RAW_CATEGORY: F.col(f"u.{t.RAW_CATEGORY}"),
        t.CATEGORY_AT: F.col(f"u.{t.CATEGORY_AT}"),
    }
    (
        DeltaTable.forPath(spark, jobs_path)
        .alias("t")
        .merge(job_updates(events).alias("u"), f"t.{t.JOB_ID} = u.{t.JOB_ID}")
        .whenMatchedUpdate(condition=status_wins | category_wins, set=update)
        .whenNotMatchedInsert(values=insert)
        .execute()
    )


def apply_job_events(spark: SparkSession, events: DataFrame, tables_root: str, app_id: str, version: int) -> None:
    """merge_job_events once per (app_id, version): a replayed micro-batch is skipped by Delta."""
    path = ensure_delta_table(spark, tables_root, t.JOBS)
    with idempotent_writes(spark, app_id, version):
        merge_job_events(spark, events, path)


def read_catalog_rows(spark: SparkSession, tables_root: str) -> list[CatalogRow]:
    """(job_id, category, status, expires_at, updated_at, category_at) of every job, times aware UTC."""
    jobs = read_delta_table(spark, tables_root, t.JOBS)
    # epoch microseconds: a collected TIMESTAMP would come back naive, in this process's local zone
    times = (t.EXPIRES_AT, t.UPDATED_AT, t.CATEGORY_AT)
    rows = jobs.select(t.JOB_ID, t.CATEGORY, t.STATUS, *(F.unix_micros(c) for c in times)).collect()
    return [(r[0], r[1], r[2], from_epoch_micros(r[3]), from_epoch_micros(r[4]), from_epoch_micros(r[5])) for r in rows]


def count_jobs_by_state(spark: SparkSession, tables_root: str) -> list[tuple[str, int, int, int]]:
    """(category, open, expired, closed) per category of the jobs table, by category name; "(none)" for jobs
    without one. Expired: open, but past its expires_at now."""
    jobs = read_delta_table(spark, tables_root, t.JOBS)
    expired = F.col(t.EXPIRES_AT).isNotNull() & (F.col(t.EXPIRES_AT) <= F.current_timestamp())
    state = F.when(F.col(t.STATUS) == t.JOB_OPEN, F.when(expired, "expired").otherwise("open")).otherwise(
        F.col(t.STATUS)
    )
    table = (
        jobs.withColumn("state", state)
        .groupBy(F.coalesce(t.CATEGORY, F.lit("(none)")).alias(t.CATEGORY))
        .pivot("state", ["open", "expired", "closed"])
        .count()
        .na.fill(0)
        .orderBy(t.CATEGORY)
    )
    return [(r[t.CATEGORY], int(r["open"]), int(r["expired"]), int(r["closed"])) for r in table.collect()]
