"""A retrain behind the quality gate: validate a candidate on held-out clicks, then publish or keep serving.

1. Snapshot the interactions (one Delta version for the whole run).
2. Hold out validation_share of each sampled user's interactions (at most eval_users users, chosen by a hash
   of the id, fixed by the seed); train a candidate on the rest; rank the held-out jobs (NDCG@k and the other
   metrics) for the candidate and for popularity on the same split.
3. `gate.decide` against popularity and the serving model's recorded validation NDCG@k.
4. If it passes: refit on the whole snapshot (with gate.refit) and record the model as published; else record
   it as rejected with the reason, and the serving model stays.

Two engines train (als.engine): the Spark engine runs the steps above with Spark MLlib's ALS on the cluster; the
implicit engine (`jobrec.batch.single_node`) runs them on the driver. Either first searches the parameters
(`jobrec.batch.search`; for Spark, its trials fitted by Spark on a sample: `jobrec.batch.spark_search`) when a
search is due: on the first retrain of that engine, every retrain.tune_every retrains, and whenever the gate
rejects. Between searches a retrain reuses the parameters recorded with the serving model of the same engine.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.core.evaluate import evaluate_model, evaluate_rankings
from jobrec.batch.core.gate import GateDecision, decide
from jobrec.batch.core.params import AlsParams
from jobrec.batch.core.split import random_holdout
from jobrec.batch.delta_tables import ensure_delta_table
from jobrec.batch.train import (
    TrainedModel,
    read_interactions_snapshot,
    serving_model_metrics,
    train_on,
    write_model,
)
from jobrec.schemas import tables as t
from jobrec.schemas.config import GateConfig, RetrainConfig

if TYPE_CHECKING:
    from jobrec.batch.single_node import Tuning

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


def resolve_engine(spark: SparkSession, tables_root: str, engine: str, single_node_max_pairs: int) -> str:
    """`auto`: implicit while the interactions table holds at most single_node_max_pairs pairs (its Delta row
    count: a metadata read), spark beyond."""
    if engine != "auto":
        return engine
    interactions, _ = read_interactions_snapshot(spark, tables_root)
    n = interactions.count()
    chosen = "implicit" if n <= single_node_max_pairs else "spark"
    log.info("als.engine auto: %d pairs, single_node_max_pairs %d: the %s engine", n, single_node_max_pairs, chosen)
    return chosen


def plan_tuning(
    spark: SparkSession, tables_root: str, base: AlsParams, retrain: RetrainConfig, engine: str = "implicit"
) -> tuple[Tuning, AlsParams]:
    """Whether this retrain searches first (and why), and the params it starts from: those recorded with the
    newest published model of `engine` whose params came from a search, else the configured ones. Only models
    of the same engine count (a lambda of one engine means something else to the other)."""
    path = ensure_delta_table(spark, tables_root, t.MODELS)
    rows = (
        spark.read.format("delta")
        .load(path)
        .orderBy(F.col(t.CREATED_AT).desc())
        .select(t.MODEL_VERSION, t.STATUS, t.PARAMS, t.METRICS)
        .collect()
    )
    metrics = [json.loads(r[t.METRICS]) if r[t.METRICS] else {} for r in rows]
    since_search = next((n for n, m in enumerate(metrics) if m.get("search") and m.get("engine") == engine), None)
    if not rows:
        due, reason = True, "the first retrain searches for its parameters"
    elif rows[0][t.STATUS] == t.STATUS_REJECTED:
        due, reason = True, f"the last retrain's model {rows[0][t.MODEL_VERSION]} was rejected"
    elif since_search is None:
        due, reason = True, f"no retrain of the {engine} engine has searched for its parameters yet"
    elif retrain.tune_every > 0 and since_search + 1 >= retrain.tune_every:
        # since_search retrains have reused the searched params; this one would make tune_every runs of them
        due, reason = (
            True,
            f"the search's params served {since_search + 1} retrains (retrain.tune_every {retrain.tune_every})",
        )
    else:
        due, reason = False, "configured params"
    params = base
    for r, m in zip(rows, metrics, strict=True):
        if r[t.STATUS] == t.STATUS_PUBLISHED and m.get("engine") == engine and m.get("params_source"):
            if m["params_source"] != "configured params":
                recorded = AlsParams.from_record(json.loads(r[t.PARAMS]))
                params = replace(recorded, reference_time=0.0)
                if not due:
                    reason = f"params of model {r[t.MODEL_VERSION]}"
            break
    from jobrec.batch.single_node import Tuning

    tuning = Tuning(due, reason, retrain.tune_budget_seconds, retrain.tune_max_trials)
    return tuning, params


def gated_retrain(
    spark: SparkSession,
    tables_root: str,
    params: AlsParams,
    gate: GateSettings,
    min_interactions: int,
    *,
    engine: str = "spark",
    retrain: RetrainConfig | None = None,
) -> tuple[TrainedModel, GateDecision]:
    """One retrain behind the gate, recorded in the models table (factors written only if published)."""
    if engine == "implicit":
        return _gated_retrain_single_node(spark, tables_root, params, gate, min_interactions, retrain)
    interactions, data_version = read_interactions_snapshot(spark, tables_root)
    interactions = interactions.cache()
    if not gate.enabled:
        model = train_on(interactions, data_version, params, min_interactions)
        decision = GateDecision(True, "quality gate disabled (gate.enabled: false)")
    else:
        model, decision = _gated_spark(
            spark, tables_root, interactions, data_version, params, gate, min_interactions, retrain
        )
    status = t.STATUS_PUBLISHED if decision.publish else t.STATUS_REJECTED
    write_model(spark, tables_root, model, status, write_factors=decision.publish)
    model.status = status
    (log.info if decision.publish else log.warning)("model %s %s: %s", model.model_version, status, decision.reason)
    interactions.unpersist()
    return model, decision


def _gated_spark(
    spark: SparkSession,
    tables_root: str,
    interactions: DataFrame,
    data_version: int,
    base: AlsParams,
    gate: GateSettings,
    min_interactions: int,
    retrain: RetrainConfig | None,
) -> tuple[TrainedModel, GateDecision]:
    """The Spark engine behind the gate: search first when due (`jobrec.batch.spark_search`), validate a candidate,
    search and validate again if the gate rejects a model of carried or configured params; refit if it passed."""
    if retrain is None:
        from jobrec.batch.single_node import Tuning

        tuning, params = Tuning(False, "configured params", 0.0, 0, on_rejection=False), base
    else:
        tuning, params = plan_tuning(spark, tables_root, base, retrain, engine="spark")
    serving_ndcg = (serving_model_metrics(spark, tables_root).get("validation") or {}).get("ndcg")
    extra: dict[str, Any] = {"engine": "spark"}
    timings: dict[str, float] = {}

    def search(reason: str) -> AlsParams | None:
        from jobrec.batch.spark_search import search_spark_params

        log.info("searching the Spark engine's params: %s", reason)
        started = time.monotonic()
        result = search_spark_params(spark, interactions, params, gate, tuning)
        timings["search_s"] = round(time.monotonic() - started, 3)
        extra["search"] = result.record(tuning.budget_seconds)
        return result.best if result.n_complete else None

    def validate(p: AlsParams) -> tuple[TrainedModel, dict[str, float], dict[str, float], GateDecision]:
        started = time.monotonic()
        candidate, val, pop = validate_candidate(spark, interactions, data_version, p, gate, min_interactions)
        timings["validate_s"] = round(time.monotonic() - started, 3)
        return candidate, val, pop, decide(val["ndcg"], pop["ndcg"], serving_ndcg, gate.tolerance, gate.k)

    source = tuning.reason
    searched = tuning.due and interactions.count() >= min_interactions  # too few: train_on says so below
    if searched:
        found = search(tuning.reason)
        params, source = (found, "search") if found else (params, source)
    candidate, val, pop, decision = validate(params)
    if not decision.publish and not searched and tuning.on_rejection:
        log.warning("model rejected (%s); searching and validating again", decision.reason)
        found = search(f"the gate rejected a model of {source}")
        if found:
            params, source = found, "search"
            candidate, val, pop, decision = validate(params)
    model = (
        train_on(interactions, data_version, params, min_interactions) if decision.publish and gate.refit else candidate
    )
    model.timings.update(timings)
    extra["params_source"] = source
    model.metrics = {
        "k": gate.k,
        "validation": _clean(val),
        "popularity": _clean(pop),
        "gate": decision.reason,
        **extra,
    }
    log.info("validation@%d: model %s; popularity %s", gate.k, _clean(val), _clean(pop))
    return model, decision


def _gated_retrain_single_node(
    spark: SparkSession,
    tables_root: str,
    base: AlsParams,
    gate: GateSettings,
    min_interactions: int,
    retrain: RetrainConfig | None,
) -> tuple[TrainedModel, GateDecision]:
    # the single-machine engine (scipy, the implicit library, Optuna) is loaded only by a process that trains with
    # it, not by every process that imports the batch layer (the HTTP API does, through streaming.processes)
    from jobrec.batch.single_node import Tuning, gated_retrain_single_node

    if retrain is None:
        tuning, params = Tuning(False, "configured params", 0.0, 0, on_rejection=False), base
    else:
        tuning, params = plan_tuning(spark, tables_root, base, retrain)

    def serving_ndcg() -> float | None:
        return (serving_model_metrics(spark, tables_root).get("validation") or {}).get("ndcg")

    model, decision, _ = gated_retrain_single_node(
        spark, tables_root, params, gate, tuning, min_interactions, serving_ndcg
    )
    status = t.STATUS_PUBLISHED if decision.publish else t.STATUS_REJECTED
    write_model(spark, tables_root, model, status, write_factors=decision.publish)
    model.status = status
    (log.info if decision.publish else log.warning)("model %s %s: %s", model.model_version, status, decision.reason)
    return model, decision
