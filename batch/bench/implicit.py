"""Spark MLlib ALS against the `implicit` library (a development extra) on the same data, split and parameters:
NDCG@10 and train time of each, and their ratios. Both fit c = 1 + alpha * r over all pairs; note that Spark
scales lambda by each user's (and job's) number of ratings and implicit does not, so the same lambda is a
stronger regulariser in Spark."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame

from jobrec.batch.core.evaluate import evaluate_model
from jobrec.batch.core.split import random_holdout
from jobrec.batch.train import AlsParams, train_on
from jobrec.schemas import tables as t
from jobrec.schemas.config import Config


def compare_with_implicit(spark, interactions: DataFrame, params: AlsParams, k: int = 10) -> dict[str, Any]:
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    by_user: dict[str, list] = {}
    for r in interactions.select(t.USER_ID, t.JOB_ID, t.STRENGTH).collect():
        by_user.setdefault(r[0], []).append((r[1], float(r[2]), None))
    kept, held = random_holdout(by_user, 0.2, 42)
    train_sets = {u: {j for j, _, _ in rs} for u, rs in kept.items()}
    held_map = {u: {j: s for j, s, _ in rs} for u, rs in held.items()}
    rows = [(u, j, s) for u, rs in kept.items() for j, s, _ in rs]
    train_df = spark.createDataFrame(rows, f"{t.USER_ID} STRING, {t.JOB_ID} STRING, {t.STRENGTH} DOUBLE").cache()
    train_df.count()

    started = time.perf_counter()
    spark_model = train_on(train_df, -1, params)
    spark_s = time.perf_counter() - started
    users = {r[0]: np.asarray(r[1]) for r in spark_model.user_factors.select(t.USER_ID, t.FEATURES).collect()}
    jobs = spark_model.job_factors.select(t.JOB_ID, t.FEATURES).orderBy(t.JOB_ID).collect()
    spark_ndcg = evaluate_model(users, [j[0] for j in jobs], np.asarray([j[1] for j in jobs]), train_sets, held_map, k)

    user_ids = sorted(kept)
    job_ids = sorted({j for _, j, _ in rows})
    ui, ji = {u: i for i, u in enumerate(user_ids)}, {j: i for i, j in enumerate(job_ids)}
    matrix = sp.csr_matrix(
        ([s for _, _, s in rows], ([ui[u] for u, _, _ in rows], [ji[j] for _, j, _ in rows])),
        shape=(len(user_ids), len(job_ids)),
        dtype=np.float32,
    )
    model = AlternatingLeastSquares(
        factors=params.rank,
        regularization=params.reg_param,
        alpha=params.alpha,
        iterations=params.max_iter,
        random_state=params.seed,
        calculate_training_loss=False,
    )
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS threads only slow it
        started = time.perf_counter()
        model.fit(matrix, show_progress=False)
        implicit_s = time.perf_counter() - started
    imp_users = {u: np.asarray(model.user_factors[ui[u]]) for u in user_ids}
    imp_ndcg = evaluate_model(imp_users, job_ids, np.asarray(model.item_factors), train_sets, held_map, k)
    return {
        "interactions_train": len(rows),
        "params": {
            "rank": params.rank,
            "iterations": params.max_iter,
            "lambda": params.reg_param,
            "alpha": params.alpha,
        },
        "spark_ndcg@10": round(spark_ndcg["ndcg"], 4),
        "implicit_ndcg@10": round(imp_ndcg["ndcg"], 4),
        "ndcg_ratio_spark_over_implicit": (
            round(spark_ndcg["ndcg"] / imp_ndcg["ndcg"], 3) if imp_ndcg["ndcg"] > 0 else None
        ),
        # microseconds: implicit fits a tiny file in a few milliseconds, which two decimals printed (and the
        # "measured nothing" check read) as 0.0
        "spark_train_seconds": round(spark_s, 6),
        "implicit_train_seconds": round(implicit_s, 6),
        "train_time_ratio_spark_over_implicit": round(spark_s / implicit_s, 1),
    }


def run_implicit_bench(cfg: Config, seed_dir: Path) -> int:
    """`jobrec bench implicit`: the comparison on the seed's job_clicks.csv (binary counts), printed as JSON.
    Needs Spark only: no broker, no tables."""
    from jobrec.batch.backfill import CsvLayout
    from jobrec.batch.bench.verdict import measured_something
    from jobrec.batch.offline import read_interactions_file
    from jobrec.batch.processes import als_params, spark_session

    with spark_session(cfg, "bench-implicit") as spark:
        interactions = read_interactions_file(
            spark, str(seed_dir / "job_clicks.csv"), CsvLayout(), dict(cfg.ingest.weights), binary=True
        )
        figures = compare_with_implicit(spark, interactions, als_params(cfg))
    print(json.dumps(figures, indent=2))
    return measured_something(
        "implicit",
        {
            "interactions_train": figures["interactions_train"],
            "spark_train_seconds": figures["spark_train_seconds"],
            "implicit_train_seconds": figures["implicit_train_seconds"],
        },
    )
