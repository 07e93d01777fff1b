"""The parameter search for the Spark engine: the same search (`jobrec.batch.search`), its trials fitted by Spark
MLlib's ALS, so the params it picks are the cluster engine's own (lambda scaled by pair counts).

A cluster's interactions may not fit the driver, so the search runs on a sample: the whole histories of users
drawn by a seeded hash of their id, at most SEARCH_MAX_PAIRS pairs, held out as the gate holds out (validation
only). Each trial's ratings go to Spark as indices (no string indexing per trial) and its factors come back as
arrays, scored by the same ranking code as the single-machine engine's trials.

Spark's ALS cannot resume, so a trial is one whole fit and cannot be pruned: a budget buys far fewer trials than
on the single-machine engine (a fit of the seed's 98k pairs takes about 10 s on 2 cores). A cluster deployment
gives the retrain a larger `retrain.tune_budget_seconds`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from typing import TextIO

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.core.interaction_matrix import InteractionMatrix, holdout_mask, rating_matrix, sample_users
from jobrec.batch.core.params import AlsParams
from jobrec.batch.driver_publish import factor_matrix
from jobrec.batch.search import SearchResult, SearchSpace, search_params
from jobrec.batch.single_node import Tuning, frame_matrix
from jobrec.batch.train import JOB_IDX, RATING, USER_IDX, fit_als
from jobrec.schemas import tables as t
from jobrec.schemas.config import GateConfig

log = logging.getLogger(__name__)

# pairs of the sample the search trains on (whole users' histories)
SEARCH_MAX_PAIRS = 2_000_000
# Spark's lambda is multiplied by each user's and job's pair count, so its useful range sits far below the
# single-machine engine's (0.01-1000)
SPARK_SPACE = SearchSpace(reg_param=(1e-3, 10.0), reg_start=0.1)


class SparkAlsFit:
    """A search trial on Spark's ALS: `fit_more` fits all `params.max_iter` iterations at once."""

    def __init__(self, spark: SparkSession, params: AlsParams, train: InteractionMatrix):
        self.params = params
        self.iterations_done = 0
        ratings = rating_matrix(train, params).tocoo()
        positive = ratings.data > 0
        self._ratings = spark.createDataFrame(
            pa.table(
                {
                    USER_IDX: pa.array(ratings.row[positive].astype(np.int32)),
                    JOB_IDX: pa.array(ratings.col[positive].astype(np.int32)),
                    RATING: pa.array(ratings.data[positive].astype(np.float32)),
                }
            )
        )
        self._users = np.zeros((train.n_users, params.rank), dtype=np.float32)
        self._jobs = np.zeros((train.n_jobs, params.rank), dtype=np.float32)

    def fit_more(self, iterations: int) -> None:
        if self.iterations_done >= self.params.max_iter:
            return
        model = fit_als(self._ratings, self.params)
        for frame, into in ((model.userFactors, self._users), (model.itemFactors, self._jobs)):
            ids, factors = factor_matrix(frame.select("id", t.FEATURES).toArrow(), "id")
            into[ids] = factors
        self.iterations_done = self.params.max_iter

    def user_factors(self, users: np.ndarray | None = None) -> np.ndarray:
        return self._users if users is None else self._users[np.asarray(users)]

    def job_factors(self) -> np.ndarray:
        return self._jobs


def search_sample(interactions: DataFrame, seed: int, max_pairs: int = SEARCH_MAX_PAIRS) -> DataFrame:
    """The interactions of users drawn by a seeded hash of their id, about `max_pairs` pairs in all (all of them
    when there are fewer)."""
    n = interactions.count()
    if n <= max_pairs:
        return interactions
    buckets = 1_000_000
    share = max_pairs / n
    drawn = F.abs(F.xxhash64(F.col(t.USER_ID), F.lit(seed))) % buckets < int(share * buckets)
    return interactions.where(drawn)


def search_spark_split(
    spark: SparkSession,
    train: InteractionMatrix,
    validation: InteractionMatrix,
    base: AlsParams,
    k: int,
    budget_seconds: float,
    max_trials: int,
    out: TextIO | None = sys.stderr,
) -> SearchResult:
    """The search (`jobrec.batch.search.search_params`) with Spark's ALS fitting each trial and Spark's lambda
    range; `train` and `validation` share one index space."""
    return search_params(
        train,
        validation,
        base,
        k,
        budget_seconds,
        max_trials=max_trials,
        space=SPARK_SPACE,
        out=out,
        start=lambda p: SparkAlsFit(spark, p, train),
    )


def search_spark_params(
    spark: SparkSession,
    interactions: DataFrame,
    params: AlsParams,
    gate: GateConfig,
    tuning: Tuning,
    out: TextIO | None = sys.stderr,
) -> SearchResult:
    """The periodic retrain's search for the Spark engine, on a sample of `interactions` split as the gate
    splits."""
    started = time.monotonic()
    reference_time = round(time.time(), 3)
    params = replace(params, reference_time=reference_time)
    data = frame_matrix(search_sample(interactions.where(F.col(t.STRENGTH) > 0), gate.seed), reference_time)
    held = holdout_mask(data, gate.validation_share, gate.seed, sample_users(data.user_ids, gate.eval_users, gate.seed))
    train, validation = data.select(~held), data.select(held)
    log.info(
        "searching the Spark engine's params on %d pairs (%d users, %d jobs) for %.0f s",
        train.nnz,
        train.n_users,
        train.n_jobs,
        tuning.budget_seconds,
    )
    result = search_spark_split(
        spark, train, validation, params, gate.k, tuning.budget_seconds, tuning.max_trials, out=out
    )
    log.info("the Spark engine's search took %.1f s", time.monotonic() - started)
    return result
