"""The implicit engine inside the real retrain (Spark reads and writes the Delta tables): the first retrain searches,
the next ones reuse what it found until retrain.tune_every, a rejection searches again at once, and the speed
layer's fold-in reproduces the vectors the engine wrote."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobrec.batch.backfill import CsvLayout, load_counts_csv
from jobrec.batch.core.confidence import rating_values
from jobrec.batch.core.fold_in import fold_in_user
from jobrec.batch.delta_tables import table_path
from jobrec.batch.processes import als_params, retrain_and_publish
from jobrec.batch.retrain import gated_retrain
from jobrec.batch.single_node import Tuning, gated_retrain_single_node
from jobrec.batch.train import serving_model_version
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from tests.integration.conftest import SEED_DIR, write_config

USERS = 300


@pytest.fixture(scope="module")
def seed_slice(tmp_path_factory) -> tuple[str, dict[str, dict[str, float]]]:
    """The seed's first USERS users with their raw click counts (no --binary): {user: {job: clicks}}."""
    folder = tmp_path_factory.mktemp("engines")
    path = folder / "slice.csv"
    pairs: dict[str, dict[str, float]] = {}
    with (SEED_DIR / "job_clicks.csv").open(newline="") as src, path.open("w", newline="") as dst:
        w = csv.writer(dst)
        w.writerow(["userId", "jobId", "Clicks"])
        for r in csv.DictReader(src):
            if int(r["userId"]) <= USERS and float(r["Clicks"]) > 0:
                w.writerow((r["userId"], r["jobId"], r["Clicks"]))
                user = pairs.setdefault(r["userId"], {})
                user[r["jobId"]] = user.get(r["jobId"], 0.0) + float(r["Clicks"])
    return str(path), pairs


def _config(tmp_path, engine: str = "implicit", **retrain):
    return load_config(
        write_config(
            tmp_path,
            "unused:9092",
            "engines",
            als={"engine": engine},
            retrain={"tune_budget_seconds": 4, "tune_max_trials": 12, **retrain},
        ),
        env={},
    )


def _models(spark, cfg) -> list:
    path = table_path(cfg.storage.tables_root, t.MODELS)
    return spark.read.format("delta").load(path).orderBy(F.col(t.CREATED_AT)).collect()


def test_the_first_retrain_searches_and_the_next_reuse_its_params(spark, tmp_path, seed_slice) -> None:
    path, pairs = seed_slice
    cfg = _config(tmp_path, tune_every=2)
    load_counts_csv(spark, path, CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights)
    first = retrain_and_publish(spark, cfg, None, publish=False)
    second = retrain_and_publish(spark, cfg, None, publish=False)
    third = retrain_and_publish(spark, cfg, None, publish=False)
    rows = _models(spark, cfg)
    assert [r[t.MODEL_VERSION] for r in rows] == [first.model_version, second.model_version, third.model_version]
    metrics = [json.loads(r[t.METRICS]) for r in rows]
    params = [json.loads(r[t.PARAMS]) for r in rows]
    # the first one searched, and the models table keeps the search: its size, budget and best trials
    assert metrics[0]["search"]["trials"] >= 1 and metrics[0]["search"]["budget_seconds"] == 4
    assert metrics[0]["params_source"] == "search" and metrics[0]["engine"] == "implicit"
    assert params[0]["engine"] == "implicit" and params[0]["reg_scaling"] == "none"
    # the second reused the first's params; with tune_every 2 the third searched again
    assert "search" not in metrics[1] and metrics[1]["params_source"] == f"params of model {first.model_version}"
    same = ("confidence", "alpha", "reg_param", "rank", "max_iter", "epsilon")
    assert {k: params[1][k] for k in same} == {k: params[0][k] for k in same}
    assert "search" in metrics[2]
    # every model counts the pairs of the slice and passes the gate on raw counts
    assert all(r[t.STATUS] == t.STATUS_PUBLISHED for r in rows)
    assert rows[0][t.N_INTERACTIONS] == sum(len(j) for j in pairs.values())
    assert metrics[0]["validation"]["ndcg"] > metrics[0]["popularity"]["ndcg"]


def test_the_spark_engine_searches_with_spark_fits_and_the_next_retrain_reuses_them(
    spark, tmp_path, seed_slice
) -> None:
    path, _ = seed_slice
    # two Spark fits of the slice: the configured params, then another form's start. Bounded by trials, not by
    # time: a 6 s budget gave one fit on a loaded machine, whose params then failed the next retrain's gate
    cfg = _config(tmp_path, engine="spark", tune_budget_seconds=300, tune_max_trials=2, tune_every=5)
    load_counts_csv(spark, path, CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights)
    first = retrain_and_publish(spark, cfg, None, publish=False)
    second = retrain_and_publish(spark, cfg, None, publish=False)
    rows = _models(spark, cfg)
    metrics = [json.loads(r[t.METRICS]) for r in rows]
    params = [json.loads(r[t.PARAMS]) for r in rows]
    search = metrics[0]["search"]
    assert search["complete"] == 2 and search["budget_seconds"] == 300
    # the trials were Spark's (count-scaled lambda, in Spark's range), one whole fit each: none pruned
    assert search["pruned"] == 0 and all(trial["reg_param"] <= 10.0 for trial in search["top"])
    assert metrics[0]["engine"] == "spark" and metrics[0]["params_source"] == "search"
    assert params[0]["engine"] == "spark" and params[0]["reg_scaling"] == "count"
    best = max(search["top"], key=lambda trial: trial["val_ndcg"] or -1)
    assert (params[0]["confidence"], params[0]["rank"]) == (best["confidence"], best["rank"])
    assert "search" not in metrics[1] and metrics[1]["params_source"] == f"params of model {first.model_version}"
    assert second.params.reg_param == first.params.reg_param and second.params.confidence == first.params.confidence


def test_a_rejected_model_searches_again_in_the_same_retrain(spark, tmp_path, seed_slice) -> None:
    path, _ = seed_slice
    cfg = _config(tmp_path)
    load_counts_csv(spark, path, CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights)
    # one factor, one sweep, a crushing lambda: the configured params lose to popularity
    bad = replace(als_params(cfg), rank=1, max_iter=1, reg_param=1e4)
    tuning = Tuning(False, "configured params", budget_seconds=4, max_trials=12)
    model, decision, extra = gated_retrain_single_node(
        spark, cfg.storage.tables_root, bad, cfg.gate, tuning, 1, lambda: None, out=None
    )
    assert decision.publish, decision.reason
    assert extra["search"]["trials"] >= 1 and extra["params_source"] == "search"
    assert model.params.rank != 1 or model.params.reg_param != 1e4


def test_fold_in_reproduces_the_implicit_engines_vectors(spark, tmp_path, seed_slice) -> None:
    from jobrec.streaming.serving_tables import read_serving_model

    path, pairs = seed_slice
    cfg = _config(tmp_path)
    load_counts_csv(spark, path, CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights)
    gate = replace(cfg.gate, enabled=False)
    model, decision = gated_retrain(
        spark,
        cfg.storage.tables_root,
        replace(als_params(cfg), confidence="log", epsilon=2.0),
        gate,
        1,
        engine="implicit",
    )
    assert decision.publish and serving_model_version(spark, cfg.storage.tables_root) == model.model_version
    serving = read_serving_model(cfg.storage.tables_root)
    assert serving is not None and serving.reg_scaling == "none" and serving.confidence == "log"
    trained = {r[t.USER_ID]: np.array(r[t.FEATURES], dtype=np.float64) for r in model.user_factors.collect()}
    errors = []
    for user in sorted(pairs)[:60]:
        jobs = sorted(pairs[user])
        idx = np.array([serving.position[j] for j in jobs])
        # the strength of a loaded click count: count x the click weight, then the model's log form
        strengths = np.array([pairs[user][j] for j in jobs]) * cfg.ingest.weights["click"]
        r = rating_values(strengths, None, serving.confidence, serving.epsilon, serving.half_life_days)
        x = fold_in_user(serving.yty, serving.job_matrix[idx], r, serving.alpha, serving.reg_param, serving.reg_scaling)
        errors.append(np.linalg.norm(x - trained[user]) / np.linalg.norm(trained[user]))
    print(
        "implicit engine: fold-in vs trained user vector, relative error "
        f"median {np.median(errors):.2e}, max {max(errors):.2e}"
    )
    # float32 factors and a float32 Cholesky solve in the engine, float64 here
    assert max(errors) < 1e-3
