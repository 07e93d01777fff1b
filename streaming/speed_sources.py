"""What the speed layer loads from Delta: the serving model's job factors and parameters, and the histories.

Spark is used here only to read tables, at start and when a new model version appears (or, until a first model
passes the gate, at every model check, for the popularity the fallback lists rank by); the hot path is not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobrec.batch.delta_tables import read_delta_table, table_path
from jobrec.batch.train import read_factors, serving_model_version
from jobrec.schemas import tables as t
from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION
from jobrec.streaming.histories import NO_TIME, Histories, build_segment
from jobrec.streaming.key_partitions import key_partitions
from jobrec.streaming.serving_model import assemble_serving_model
from jobrec.streaming.speed import POPULAR_JOBS, ServingModel, popularity_model

log = logging.getLogger(__name__)


def read_users_per_job(spark: SparkSession, tables_root: str, limit: int | None = None) -> list[tuple[str, int]]:
    """(job_id, users who interacted with it) from the interactions table, most users first, then by job_id; the
    first `limit` (None: all)."""
    interactions = read_delta_table(spark, tables_root, t.INTERACTIONS)
    ranked = interactions.groupBy(t.JOB_ID).count().orderBy(F.col("count").desc(), F.col(t.JOB_ID))
    return [(r[t.JOB_ID], r["count"]) for r in (ranked.limit(limit) if limit is not None else ranked).collect()]


def load_serving_model(spark: SparkSession, tables_root: str, current: str | None = None) -> ServingModel | None:
    """The newest published model, or None if it is `current` already. Before the first published model, the
    popularity model (no factors: every list a fallback list), reloaded at every call so that it follows the
    interactions table."""
    version = serving_model_version(spark, tables_root)
    if version is None:
        fallback = popularity_model(read_users_per_job(spark, tables_root, POPULAR_JOBS))
        if current != POPULARITY_MODEL_VERSION:
            log.info(
                "no model has passed the quality gate yet: clicks are answered with popularity lists (source "
                "fallback, %d jobs) until one does",
                len(fallback.job_ids),
            )
        return fallback
    if version == current:
        return None
    row = (
        spark.read.format("delta")
        .load(table_path(tables_root, t.MODELS))
        .where(F.col(t.MODEL_VERSION) == version)
        .select(t.PARAMS)
        .collect()[0]
    )
    params = json.loads(row[t.PARAMS])
    _, job_factors = read_factors(spark, tables_root, version)
    jobs = job_factors.select(t.JOB_ID, t.FEATURES).collect()
    return assemble_serving_model(
        version, params, ((r[t.JOB_ID], r[t.FEATURES]) for r in jobs), read_users_per_job(spark, tables_root)
    )


# rows per Arrow transfer from Spark: a bounded slice of the table in the driver at a time
ROWS_PER_LOAD_CHUNK = 2_000_000


def load_histories(
    spark: SparkSession,
    tables_root: str,
    histories: Histories,
    partitions: Collection[int] | None = None,
    of_partitions: int = 1,
) -> int:
    """The interactions of the users whose clicks go to `partitions` (of the clicks topic's `of_partitions`; None:
    every user) into `histories`, as columnar segments; returns the rows kept.

    The table comes over as Arrow in slices of whole users (by Spark's hash of the user id), each about
    ROWS_PER_LOAD_CHUNK rows, so the driver never holds the whole table; the users' partitions are computed here
    with the producers' partitioner (`key_partitions`), which Spark has no function for.
    """
    interactions = read_delta_table(spark, tables_root, t.INTERACTIONS)
    # times as epoch microseconds: a collected TIMESTAMP would come back naive, in this process's local zone
    columns = interactions.select(t.USER_ID, t.JOB_ID, t.STRENGTH, F.unix_micros(t.LAST_AT).alias("last_us"))
    total = interactions.count()
    chunks = max(1, -(-total // ROWS_PER_LOAD_CHUNK))
    wanted = set(range(of_partitions)) if partitions is None else set(partitions)
    kept = 0
    for chunk in range(chunks):
        part = columns if chunks == 1 else columns.where(F.pmod(F.hash(t.USER_ID), F.lit(chunks)) == chunk)
        kept += _add_arrow_rows(part.toArrow(), histories, wanted, of_partitions)
        if chunks > 1:
            log.info("histories: slice %d of %d read (%d rows kept so far)", chunk + 1, chunks, kept)
    return kept


def _add_arrow_rows(table: pa.Table, histories: Histories, wanted: set[int], of_partitions: int) -> int:
    if table.num_rows == 0:
        return 0
    users = pc.dictionary_encode(table.column(t.USER_ID).combine_chunks())
    user_ids: list[str] = users.dictionary.to_pylist()
    user_codes = users.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    row_partition = key_partitions(user_ids, of_partitions)[user_codes]
    jobs = pc.dictionary_encode(table.column(t.JOB_ID).combine_chunks())
    job_codes = histories.jobs.codes_of(jobs.dictionary.to_pylist())[jobs.indices.to_numpy(zero_copy_only=False)]
    strengths = table.column(t.STRENGTH).to_numpy().astype(np.float64)
    last_us = pc.fill_null(table.column("last_us"), NO_TIME).to_numpy().astype(np.int64)
    kept = 0
    for p in sorted(wanted):
        rows = np.flatnonzero(row_partition == p)
        if rows.size:
            histories.add_segment(
                p, build_segment(user_codes[rows], user_ids, job_codes[rows], strengths[rows], last_us[rows])
            )
            kept += int(rows.size)
    return kept
