"""Retrain: interactions snapshot -> implicit-feedback ALS (Hu, Koren, Volinsky 2008) -> versioned factors.

Spark MLlib's ALS with implicitPrefs=True minimises, over all user-job pairs,
  sum c_ui (p_ui - x_u . y_i)^2 + lambda (|x_u|^2 + |y_i|^2),  p_ui = [r_ui > 0], c_ui = 1 + alpha r_ui
where r_ui is the interaction's weighted strength (ingest.weights). Ids are arbitrary strings; ALS needs ints,
so they are indexed here and the factors are written back under the original ids.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StructField, StructType

from jobrec.batch.core.params import AlsParams
from jobrec.batch.delta_tables import (
    ensure_delta_table,
    latest_version,
    read_delta_table,
    run_concurrently,
    table_path,
)
from jobrec.schemas import tables as t

log = logging.getLogger(__name__)

USER_IDX = "user_idx"
JOB_IDX = "job_idx"
RATING = "rating"


def rating_column(strength: Column, age_days: Column, form: str, epsilon: float, half_life_days: float) -> Column:
    """The Spark twin of `jobrec.batch.core.confidence.rating_values`: the r of c = 1 + alpha * r."""
    s = strength.cast("double")
    if form == "binary":
        return F.when(s > 0, F.lit(1.0)).otherwise(F.lit(0.0))
    if half_life_days > 0:
        age = F.greatest(F.coalesce(age_days, F.lit(0.0)), F.lit(0.0))
        s = s * F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))
    return F.log1p(s / F.lit(float(epsilon))) if form == "log" else s


@dataclass
class TrainedModel:
    """What a retrain produced: factors as DataFrames plus the models-table record."""

    model_version: str
    params: AlsParams
    data_version: int
    n_users: int
    n_jobs: int
    n_interactions: int
    user_factors: DataFrame
    job_factors: DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    # the gate's record: k, validation and popularity metrics (None where undefined), and its reason
    metrics: dict[str, Any] = field(default_factory=dict)
    # published or rejected, once the models table records it ("" before)
    status: str = ""


class NotEnoughData(ValueError):
    """Too few interactions to train on; the message says how many and the configured minimum."""


def new_model_version(now: datetime | None = None) -> str:
    """Sortable by time, unique enough for two retrains in the same second: 20261126T193348Z-1a2b."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def read_interactions_snapshot(spark: SparkSession, tables_root: str) -> tuple[DataFrame, int]:
    """The interactions table at its newest Delta version, and that version (recorded with the model); before the
    ingest has created it, an empty frame at version -1 (the retrain then has too little data)."""
    from delta.tables import DeltaTable

    path = table_path(tables_root, t.INTERACTIONS)
    if not DeltaTable.isDeltaTable(spark, path):
        return read_delta_table(spark, tables_root, t.INTERACTIONS), -1
    version = latest_version(spark, path)
    return spark.read.format("delta").option("versionAsOf", version).load(path), version


def _dense_index(ids: DataFrame, idx_col: str) -> DataFrame:
    """Distinct ids -> (id, 0..n-1); zipWithIndex scales where a global window would not."""
    schema = StructType([*ids.schema.fields, StructField(idx_col, LongType(), False)])
    rdd = ids.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1]))
    return ids.sparkSession.createDataFrame(rdd, schema).withColumn(idx_col, F.col(idx_col).cast("int"))


def index_interactions(
    interactions: DataFrame, params: AlsParams | None = None
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(ratings(user_idx, job_idx, rating), users(user_id, user_idx), jobs(job_id, job_idx)); strength > 0 only.
    The rating is the confidence input of `jobrec.batch.core.confidence` (the strength itself by default)."""
    positive = interactions.where(F.col(t.STRENGTH) > 0)
    if params is not None and (params.confidence != "linear" or params.half_life_days > 0):
        age_days = (F.lit(params.reference_time) - F.unix_timestamp(F.col(t.LAST_AT))) / 86400.0
        rating = rating_column(F.col(t.STRENGTH), age_days, params.confidence, params.epsilon, params.half_life_days)
        positive = positive.withColumn(t.STRENGTH, rating)
    positive = positive.select(t.USER_ID, t.JOB_ID, t.STRENGTH)
    users = _dense_index(positive.select(t.USER_ID).distinct(), USER_IDX).cache()
    jobs = _dense_index(positive.select(t.JOB_ID).distinct(), JOB_IDX).cache()
    ratings = (
        positive.join(users, t.USER_ID)
        .join(jobs, t.JOB_ID)
        .select(USER_IDX, JOB_IDX, F.col(t.STRENGTH).cast("float").alias(RATING))
    )
    return ratings, users, jobs


def fit_als(ratings: DataFrame, params: AlsParams):  # -> pyspark.ml.recommendation.ALSModel
    from pyspark.ml.recommendation import ALS

    als = ALS(
        rank=params.rank,
        maxIter=params.max_iter,
        regParam=params.reg_param,
        alpha=params.alpha,
        implicitPrefs=True,
        userCol=USER_IDX,
        itemCol=JOB_IDX,
        ratingCol=RATING,
        seed=params.seed,
        checkpointInterval=params.checkpoint_interval,
        coldStartStrategy="drop",
    )
    return als.fit(ratings)


def train_model(spark: SparkSession, tables_root: str, params: AlsParams, min_interactions: int = 1) -> TrainedModel:
    """Train on the newest interactions snapshot. Nothing is written; see `write_model`."""
    interactions, data_version = read_interactions_snapshot(spark, tables_root)
    return train_on(interactions, data_version, params, min_interactions)


def train_on(interactions: DataFrame, data_version: int, params: AlsParams, min_interactions: int = 1) -> TrainedModel:
    """Train on the given interactions rows (the snapshot, or a training split of it)."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    params = replace(params, engine="spark", reg_scaling="count")
    if params.half_life_days > 0 and not params.reference_time:
        params = replace(params, reference_time=round(time.time(), 3))
    ratings, users, jobs = index_interactions(interactions, params)
    ratings = ratings.cache()
    n_interactions = ratings.count()
    if n_interactions < min_interactions:
        raise NotEnoughData(
            f"not enough data to train: {n_interactions} interactions, retrain.min_interactions is "
            f"{min_interactions}; load some (`jobrec load CSV`) or stream clicks in (`jobrec ingest`) first"
        )
    n_users, n_jobs = users.count(), jobs.count()
    timings["read_and_index_s"] = round(time.monotonic() - started, 3)
    log.info(
        "training ALS on %d interactions (%d users x %d jobs, %s), rank %d, %d iterations",
        n_interactions,
        n_users,
        n_jobs,
        f"Delta version {data_version}" if data_version >= 0 else "from a file",
        params.rank,
        params.max_iter,
    )
    started = time.monotonic()
    model = fit_als(ratings, params)
    version = new_model_version()
    user_factors = (
        model.userFactors.join(users, F.col("id") == F.col(USER_IDX))
        .select(F.lit(version).alias(t.MODEL_VERSION), t.USER_ID, F.col("features").alias(t.FEATURES))
        .cache()
    )
    job_factors = (
        model.itemFactors.join(jobs, F.col("id") == F.col(JOB_IDX))
        .select(F.lit(version).alias(t.MODEL_VERSION), t.JOB_ID, F.col("features").alias(t.FEATURES))
        .cache()
    )
    user_factors.count()
    job_factors.count()
    timings["fit_s"] = round(time.monotonic() - started, 3)
    ratings.unpersist()
    return TrainedModel(
        version, params, data_version, n_users, n_jobs, n_interactions, user_factors, job_factors, timings
    )


def write_model(
    spark: SparkSession, tables_root: str, model: TrainedModel, status: str, write_factors: bool = True
) -> None:
    """Append the factors (tagged with the version) and the models-table row. The row goes last: a reader
    that finds a published row in `models` finds all its factors."""
    started = time.monotonic()
    if write_factors:
        paths = [ensure_delta_table(spark, tables_root, name) for name in (t.USER_FACTORS, t.JOB_FACTORS)]
        run_concurrently(
            *(
                partial(frame.write.format("delta").mode("append").save, path)
                for frame, path in zip((model.user_factors, model.job_factors), paths, strict=True)
            )
        )
    model.timings["write_factors_s"] = round(time.monotonic() - started, 3)
    row = [
        (
            model.model_version,
            datetime.now(timezone.utc),
            status,
            json.dumps(model.params.to_record()),
            model.data_version,
            model.n_users,
            model.n_jobs,
            model.n_interactions,
            json.dumps(model.metrics),
            json.dumps(model.timings),
        )
    ]
    path = ensure_delta_table(spark, tables_root, t.MODELS)
    spark.createDataFrame(row, t.MODELS_DDL).write.format("delta").mode("append").save(path)


def _serving_model_column(spark: SparkSession, tables_root: str, column: str) -> Any:
    """One column of the newest published model's row; None before the first one."""
    rows = (
        read_delta_table(spark, tables_root, t.MODELS)
        .where(F.col(t.STATUS) == t.STATUS_PUBLISHED)
        .orderBy(F.col(t.CREATED_AT).desc())
        .select(column)
        .limit(1)
        .collect()
    )
    return rows[0][0] if rows else None


def serving_model_version(spark: SparkSession, tables_root: str) -> str | None:
    """The newest published model's version, or None before the first retrain."""
    return _serving_model_column(spark, tables_root, t.MODEL_VERSION)


def serving_model_metrics(spark: SparkSession, tables_root: str) -> dict:
    """The metrics recorded with the serving model ({} before the first one)."""
    metrics = _serving_model_column(spark, tables_root, t.METRICS)
    return json.loads(metrics) if metrics else {}


def read_factors(spark: SparkSession, tables_root: str, model_version: str) -> tuple[DataFrame, DataFrame]:
    users = read_delta_table(spark, tables_root, t.USER_FACTORS)
    jobs = read_delta_table(spark, tables_root, t.JOB_FACTORS)
    return (
        users.where(F.col(t.MODEL_VERSION) == model_version),
        jobs.where(F.col(t.MODEL_VERSION) == model_version),
    )
