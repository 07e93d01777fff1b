"""The single-machine engine's side of a retrain: the interactions snapshot read into the driver as arrays, a gated
(and, when due, tuned) implicit-library ALS on them, and the factors handed back to Spark to be written.

Spark still reads and writes every table (one Delta version for the whole run, the same factor tables and models
row as the Spark engine), so everything downstream (publish, the speed layer, status) does not care which engine
trained a model. The maths is in `jobrec.batch.core`; the search in `jobrec.batch.search`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.core.als_implicit import for_implicit, train_on_matrix
from jobrec.batch.core.gate import GateDecision, decide
from jobrec.batch.core.interaction_matrix import (
    InteractionMatrix,
    build_matrix,
    holdout_mask,
    sample_users,
)
from jobrec.batch.core.params import AlsParams
from jobrec.batch.core.ranking import evaluate_factors, evaluate_popularity
from jobrec.batch.search import Fitting, SearchResult, describe, search_params
from jobrec.batch.train import NotEnoughData, TrainedModel, new_model_version, read_interactions_snapshot
from jobrec.schemas import tables as t
from jobrec.schemas.config import GateConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tuning:
    """Whether this retrain searches first, why, and with what budget."""

    due: bool
    reason: str
    budget_seconds: float
    max_trials: int
    # search again when the gate rejects the model of carried or configured params (retrain.tune_every >= 0)
    on_rejection: bool = True


def read_snapshot_matrix(spark: SparkSession, tables_root: str, reference_time: float) -> tuple[InteractionMatrix, int]:
    """The newest interactions snapshot as a matrix (ages in days before `reference_time`), and its Delta version."""
    interactions, version = read_interactions_snapshot(spark, tables_root)
    return frame_matrix(interactions, reference_time), version


def frame_matrix(interactions: DataFrame, reference_time: float) -> InteractionMatrix:
    """Interactions rows on the driver as a matrix (ages in days before `reference_time`), through Arrow."""
    table = interactions.select(
        t.USER_ID, t.JOB_ID, F.col(t.STRENGTH).cast("double").alias(t.STRENGTH), F.unix_micros(t.LAST_AT).alias("us")
    ).toArrow()
    last_us = table.column("us").to_numpy(zero_copy_only=False).astype(np.float64)
    ages = (reference_time - last_us / 1e6) / 86400.0
    return build_matrix(
        table.column(t.USER_ID).to_numpy(zero_copy_only=False),
        table.column(t.JOB_ID).to_numpy(zero_copy_only=False),
        table.column(t.STRENGTH).to_numpy(zero_copy_only=False),
        ages,
    )


def factors_frame(spark: SparkSession, version: str, id_col: str, ids: np.ndarray, factors: np.ndarray) -> DataFrame:
    """(model_version, id, features) rows for the factor tables, through Arrow (no Python object per value)."""
    flat = pa.array(np.ascontiguousarray(factors, dtype=np.float32).ravel())
    offsets = pa.array(np.arange(0, factors.size + 1, factors.shape[1], dtype=np.int32))
    table = pa.table(
        {
            t.MODEL_VERSION: pa.array([version] * len(ids), pa.string()),
            id_col: pa.array(ids.tolist(), pa.string()),
            t.FEATURES: pa.ListArray.from_arrays(offsets, flat),
        }
    )
    return spark.createDataFrame(table)


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else round(float(v), 6)) for k, v in metrics.items()}


def _fit(params: AlsParams, data: InteractionMatrix) -> tuple[np.ndarray, np.ndarray, AlsParams, float]:
    started = time.monotonic()
    users, jobs, params = train_on_matrix(params, data)
    return users, jobs, params, time.monotonic() - started


def gated_retrain_single_node(
    spark: SparkSession,
    tables_root: str,
    params: AlsParams,
    gate: GateConfig,
    tuning: Tuning,
    min_interactions: int,
    serving_ndcg: Callable[[], float | None],
    out: TextIO | None = sys.stderr,
) -> tuple[TrainedModel, GateDecision, dict[str, Any]]:
    """(the model to record, the gate's decision, what the run adds to the model's metrics: the search, where the
    params came from). Nothing is written here."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    reference_time = round(time.time(), 3)
    params = replace(for_implicit(params), reference_time=reference_time)
    data, data_version = read_snapshot_matrix(spark, tables_root, reference_time)
    if data.nnz < min_interactions:
        raise NotEnoughData(
            f"not enough data to train: {data.nnz} interactions, retrain.min_interactions is {min_interactions}; "
            "load some (`jobrec load CSV`) or stream clicks in (`jobrec ingest`) first"
        )
    timings["read_and_index_s"] = round(time.monotonic() - started, 3)
    log.info(
        "training ALS (implicit engine) on %d interactions (%d users x %d jobs, Delta version %d)",
        data.nnz,
        data.n_users,
        data.n_jobs,
        data_version,
    )
    extra: dict[str, Any] = {"engine": "implicit"}
    if not gate.enabled:
        users, jobs, params, fit_s = _fit(params, data)
        timings["fit_s"] = round(fit_s, 3)
        decision = GateDecision(True, "quality gate disabled (gate.enabled: false)")
        return _model(spark, params, data_version, data, users, jobs, timings), decision, extra

    sampled = sample_users(data.user_ids, gate.eval_users, gate.seed)
    held = holdout_mask(data, gate.validation_share, gate.seed, sampled)
    train, validation = data.select(~held), data.select(held)
    pop = evaluate_popularity(train.users_per_job(), train.strength, validation.strength, gate.k)
    serving = serving_ndcg()

    def search() -> SearchResult | None:
        started = time.monotonic()
        result = search_params(
            train, validation, params, gate.k, tuning.budget_seconds, max_trials=tuning.max_trials, out=out
        )
        timings["search_s"] = round(time.monotonic() - started, 3)
        extra["search"] = result.record(tuning.budget_seconds)
        if result.n_complete == 0:
            log.warning(
                "the search completed no trial within %.0f s; keeping %s", tuning.budget_seconds, describe(params)
            )
            return None
        return result

    def validate(p: AlsParams, trained: Fitting | None = None):
        """Fit on the train split (or take the search's model of these params, fitted on the same split) and
        score it on validation."""
        started = time.monotonic()
        if trained is not None:
            users, jobs, p = trained.user_factors(), trained.job_factors(), trained.params
        else:
            users, jobs, p, _ = _fit(p, train)
        val = evaluate_factors(users, jobs, train.strength, validation.strength, gate.k)
        timings["validate_s"] = round(time.monotonic() - started, 3)
        return users, jobs, p, val, decide(val["ndcg"], pop["ndcg"], serving, gate.tolerance, gate.k)

    # where this model's params come from; "search" once a search's winner is used
    source = "configured params" if tuning.due else tuning.reason
    searched, trained = False, None
    if tuning.due:
        log.info("tuning first: %s", tuning.reason)
        searched, result = True, search()
        if result is not None:
            params, source, trained = result.best, "search", result.best_model
    users, jobs, params, val, decision = validate(params, trained)
    if not decision.publish and not searched and tuning.on_rejection:
        log.warning("model rejected (%s); tuning and validating again", decision.reason)
        result = search()
        if result is not None:
            params, source = result.best, "search"
            users, jobs, params, val, decision = validate(params, result.best_model)
    extra["params_source"] = source
    metrics = {"k": gate.k, "validation": _clean(val), "popularity": _clean(pop), "gate": decision.reason}
    log.info("validation@%d: model %s; popularity %s", gate.k, metrics["validation"], metrics["popularity"])
    if decision.publish and gate.refit:
        users, jobs, params, fit_s = _fit(params, data)
        timings["fit_s"] = round(fit_s, 3)
        model = _model(spark, params, data_version, data, users, jobs, timings)
    else:
        model = _model(spark, params, data_version, train, users, jobs, timings)
    model.metrics = {**metrics, **extra}
    return model, decision, extra


def _model(
    spark: SparkSession,
    params: AlsParams,
    data_version: int,
    data: InteractionMatrix,
    users: np.ndarray,
    jobs: np.ndarray,
    timings: dict[str, float],
) -> TrainedModel:
    version = new_model_version()
    # a user or job with no pair in `data` (a validation-only one) has no trained vector: it is left out, as
    # Spark's ALS leaves it out
    has_user = np.diff(data.strength.indptr) > 0
    has_job = data.users_per_job() > 0
    return TrainedModel(
        version,
        params,
        data_version,
        int(has_user.sum()),
        int(has_job.sum()),
        data.nnz,
        factors_frame(spark, version, t.USER_ID, data.user_ids[has_user], users[has_user]),
        factors_frame(spark, version, t.JOB_ID, data.job_ids[has_job], jobs[has_job]),
        timings,
    )
