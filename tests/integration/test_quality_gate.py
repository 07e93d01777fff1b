"""The quality gate on real Spark and Delta: a good retrain is published with its validation metrics; a bad one
is recorded as rejected with the reason, and the serving model stays."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
from pyspark.sql import functions as F

from jobrec.batch.backfill import CsvLayout, load_counts_csv
from jobrec.batch.delta_tables import table_path
from jobrec.batch.processes import als_params
from jobrec.batch.retrain import GateSettings, gated_retrain
from jobrec.batch.train import serving_model_version
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from tests.integration.conftest import SEED_DIR, write_config


def test_good_model_published_bad_model_rejected(spark, tmp_path) -> None:
    # the seed's first 300 users: enough signal, a quick fit
    slice_csv = tmp_path / "slice.csv"
    with (SEED_DIR / "job_clicks.csv").open(newline="") as src, slice_csv.open("w", newline="") as dst:
        rows = [r for r in csv.DictReader(src) if int(r["userId"]) <= 300 and r["Clicks"] != "0"]
        w = csv.writer(dst)
        w.writerow(["userId", "jobId", "Clicks"])
        w.writerows((r["userId"], r["jobId"], 1) for r in rows)
    cfg = load_config(write_config(tmp_path, "unused:9092", "gate"), env={})
    load_counts_csv(spark, str(slice_csv), CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights)
    gate = GateSettings(enabled=True, k=10, validation_share=0.2, eval_users=5000, tolerance=0.01, seed=42, refit=False)

    good, decision = gated_retrain(spark, cfg.storage.tables_root, als_params(cfg), gate, 1)
    assert decision.publish, decision.reason
    assert good.metrics["validation"]["ndcg"] > good.metrics["popularity"]["ndcg"]
    assert serving_model_version(spark, cfg.storage.tables_root) == good.model_version

    # one factor, one sweep, heavy regularisation: worse than the serving model
    bad_params = replace(als_params(cfg), rank=1, max_iter=1, reg_param=50.0)
    bad, decision = gated_retrain(spark, cfg.storage.tables_root, bad_params, gate, 1)
    assert not decision.publish
    assert serving_model_version(spark, cfg.storage.tables_root) == good.model_version
    models = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.MODELS))
    row = models.where(F.col(t.MODEL_VERSION) == bad.model_version).first()
    assert row[t.STATUS] == t.STATUS_REJECTED
    assert "NDCG@10" in json.loads(row[t.METRICS])["gate"]
    # a rejected model leaves no factors behind for anyone to serve
    factors = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.USER_FACTORS))
    assert factors.where(F.col(t.MODEL_VERSION) == bad.model_version).count() == 0


def test_spark_and_numpy_confidence_agree(spark) -> None:
    """The training side (Spark column) and the fold-in side (numpy) compute the same r."""
    from pyspark.sql import functions as F

    from jobrec.batch.core.confidence import rating_values
    from jobrec.batch.train import rating_column

    rows = [(4.0, 10.0), (4.0, 0.0), (7.5, 3.2), (1.0, -2.0), (2.0, None)]
    df = spark.createDataFrame(rows, "s DOUBLE, age DOUBLE")
    for form, eps, half in (("linear", 1.0, 0.0), ("linear", 1.0, 7.0), ("log", 0.5, 0.0), ("log", 2.0, 3.0)):
        got = [r[0] for r in df.select(rating_column(F.col("s"), F.col("age"), form, eps, half)).collect()]
        ages = np.array([a if a is not None else np.nan for _, a in rows])
        want = rating_values(np.array([s for s, _ in rows]), ages, form, eps, half)
        assert np.allclose(got, want), (form, eps, half)
