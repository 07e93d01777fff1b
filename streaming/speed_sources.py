"""What the speed layer loads from Delta: the serving model's job factors and parameters, and the histories.

Spark is used here only to read tables, at start and when a new model version appears (or, until a first model
passes the gate, at every model check, for the popularity the fallback lists rank by); the hot path is not.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobrec.batch.delta_tables import ensure_delta_table, table_path
from jobrec.batch.train import read_factors, serving_model_version
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import from_epoch_micros
from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION
from jobrec.streaming.speed import POPULAR_JOBS, Histories, ServingModel, popularity_model

log = logging.getLogger(__name__)


def read_users_per_job(spark: SparkSession, tables_root: str, limit: int | None = None) -> list[tuple[str, int]]:
    """(job_id, users who interacted with it) from the interactions table, most users first, then by job_id; the
    first `limit` (None: all)."""
    interactions = spark.read.format("delta").load(ensure_delta_table(spark, tables_root, t.INTERACTIONS))
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
    jobs = job_factors.select(t.JOB_ID, t.FEATURES).orderBy(t.JOB_ID).collect()
    job_ids = [r[t.JOB_ID] for r in jobs]
    position = {j: i for i, j in enumerate(job_ids)}
    by_users = read_users_per_job(spark, tables_root)
    popular = [position[job] for job, _ in by_users if job in position][:POPULAR_JOBS]
    popularity = np.zeros(len(job_ids))
    for job, users in by_users:
        if job in position:
            popularity[position[job]] = users
    if popularity.max(initial=0.0) > 0:
        popularity /= popularity.max()
    return ServingModel(
        version,
        job_ids,
        np.asarray([r[t.FEATURES] for r in jobs], dtype=np.float64),
        float(params["alpha"]),
        float(params["reg_param"]),
        popular,
        popularity=popularity,
        confidence=params.get("confidence", "linear"),
        epsilon=float(params.get("epsilon", 1.0)),
        half_life_days=float(params.get("half_life_days", 0.0)),
        reference_time=float(params.get("reference_time", 0.0)),
        # a model recorded before the engines existed was Spark's, with its count-scaled lambda
        reg_scaling=params.get("reg_scaling", "count"),
    )


def load_histories(spark: SparkSession, tables_root: str, histories: Histories) -> int:
    """Every (user, job, strength, last_at) row of interactions into `histories`; returns the row count."""
    interactions = spark.read.format("delta").load(ensure_delta_table(spark, tables_root, t.INTERACTIONS))
    # times as epoch microseconds: a collected TIMESTAMP would come back naive, in this process's local zone
    rows = interactions.select(t.USER_ID, t.JOB_ID, t.STRENGTH, F.unix_micros(t.LAST_AT)).toLocalIterator()
    n = 0
    for user, job, strength, last_us in rows:
        last_at = from_epoch_micros(last_us)
        histories.load([(user, job, strength, last_at)])
        n += 1
    return n
