"""A retrain behind the quality gate: validate a candidate on held-out clicks, then publish or keep serving.

1. Snapshot the interactions (one Delta version for the whole run).
2. Hold out validation_share of each sampled user's interactions (at most eval_users users, chosen by a hash
   of the id, fixed by the seed); train a candidate on the rest; rank the held-out jobs (NDCG@k and the other
   metrics) for the candidate and for popularity on the same split.
3. `gate.decide` against popularity and the serving model's recorded validation NDCG@k.
4. If it passes: refit on the whole snapshot (with gate.refit) and record the model as published; else record
   it as rejected with the reason, and the serving model stays.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.core.evaluate import evaluate_model, evaluate_rankings
from jobrec.batch.core.gate import GateDecision, decide
from jobrec.batch.core.split import random_holdout
from jobrec.batch.train import (
    AlsParams,
    TrainedModel,
    read_interactions_snapshot,
    serving_model_metrics,
    train_on,
    write_model,
)
from jobrec.schemas import tables as t
from jobrec.schemas.config import GateConfig

log = logging.getLogger(__name__)


# the gate's settings are the config's `gate` section, passed as they are
GateSettings = GateConfig


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else round(v, 6)) for k, v in metrics.items()}


def validate_candidate(
    spark: SparkSession,
    interactions: DataFrame,
    data_version: int,
    params: AlsParams,
    gate: GateSettings,
    min_interactions: int,
) -> tuple[TrainedModel, dict[str, float], dict[str, float]]:
    """(candidate trained without the held-out pairs, its validation metrics, popularity's on the same split)."""
    n_users = interactions.select(t.USER_ID).distinct().count()
    share = min(1.0, gate.eval_users / max(1, n_users))
    buckets = 1_000_000
    sampled = interactions.where(
        (F.abs(F.xxhash64(F.col(t.USER_ID), F.lit(gate.seed))) % buckets) < int(share * buckets)
    )
    by_user: dict[str, list] = {}
    for r in sampled.select(t.USER_ID, t.JOB_ID, t.STRENGTH, t.LAST_AT).where(F.col(t.STRENGTH) > 0).collect():
        by_user.setdefault(r[0], []).append((r[1], float(r[2]), r[3]))
    kept, held = random_holdout(by_user, gate.validation_share, gate.seed)
    held_pairs = spark.createDataFrame(
        [(u, job) for u, rows in held.items() for job, _, _ in rows], f"{t.USER_ID} STRING, {t.JOB_ID} STRING"
    )
    train_df = interactions.join(held_pairs, [t.USER_ID, t.JOB_ID], "left_anti")
    candidate = train_on(train_df, data_version, params, min_interactions)

    users = set(held)
    user_vecs = {
        r[t.USER_ID]: np.asarray(r[t.FEATURES], dtype=np.float64)
        for r in candidate.user_factors.where(F.col(t.USER_ID).isin(list(users))).collect()
    }
    jobs = candidate.job_factors.select(t.JOB_ID, t.FEATURES).orderBy(t.JOB_ID).collect()
    job_ids = [r[0] for r in jobs]
    job_matrix = np.asarray([r[1] for r in jobs], dtype=np.float64)
    train_sets = {u: {job for job, _, _ in rows} for u, rows in kept.items()}
    held_map = {u: {job: s for job, s, _ in rows} for u, rows in held.items()}
    model_metrics = evaluate_model(user_vecs, job_ids, job_matrix, train_sets, held_map, gate.k)
    counts: dict[str, int] = dict(train_df.where(F.col(t.STRENGTH) > 0).groupBy(t.JOB_ID).count().collect())
    pop = np.array([counts.get(j, 0) - i * 1e-9 for i, j in enumerate(job_ids)])
    pop_metrics = evaluate_rankings(lambda u: pop, job_ids, train_sets, held_map, gate.k, sorted(user_vecs))
    return candidate, model_metrics, pop_metrics


def gated_retrain(
    spark: SparkSession, tables_root: str, params: AlsParams, gate: GateSettings, min_interactions: int
) -> tuple[TrainedModel, GateDecision]:
    interactions, data_version = read_interactions_snapshot(spark, tables_root)
    interactions = interactions.cache()
    if not gate.enabled:
        model = train_on(interactions, data_version, params, min_interactions)
        decision = GateDecision(True, "quality gate disabled (gate.enabled: false)")
    else:
        started = time.monotonic()
        candidate, val, pop = validate_candidate(spark, interactions, data_version, params, gate, min_interactions)
        serving_ndcg = (serving_model_metrics(spark, tables_root).get("validation") or {}).get("ndcg")
        decision = decide(val["ndcg"], pop["ndcg"], serving_ndcg, gate.tolerance, gate.k)
        validate_s = round(time.monotonic() - started, 3)
        model = (
            train_on(interactions, data_version, params, min_interactions)
            if decision.publish and gate.refit
            else candidate
        )
        model.timings["validate_s"] = validate_s
        model.metrics = {"k": gate.k, "validation": _clean(val), "popularity": _clean(pop), "gate": decision.reason}
        log.info("validation@%d: model %s; popularity %s", gate.k, _clean(val), _clean(pop))
    status = t.STATUS_PUBLISHED if decision.publish else t.STATUS_REJECTED
    write_model(spark, tables_root, model, status, write_factors=decision.publish)
    model.status = status
    (log.info if decision.publish else log.warning)("model %s %s: %s", model.model_version, status, decision.reason)
    interactions.unpersist()
    return model, decision
