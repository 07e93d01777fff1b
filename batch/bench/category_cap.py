"""`jobrec bench category-cap`: what a cap on the jobs of one category per list costs and buys, measured on a
held-out split, to choose `publish.max_per_category`: NDCG@10 and catalog coverage of the same model's lists
under each cap, and how much of a list its largest category fills on average.

One model (the config's ALS parameters) is trained on a per-user random 80 % of the file (seed 42, each clicked
pair counted once, as the seed evaluation does) and scored on the other 20 %; only the cap changes between rows.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from jobrec.batch.core.catalog import CategoryNormaliser
from jobrec.batch.core.evaluate import evaluate_model
from jobrec.batch.core.split import random_holdout
from jobrec.batch.core.top_n import NO_CATEGORY, capped_top
from jobrec.schemas import tables as t
from jobrec.schemas.config import Config

K = 10


def largest_category_share(
    user_vectors: dict[str, np.ndarray],
    job_matrix: np.ndarray,
    train: dict[str, set[int]],
    categories: np.ndarray,
    cap: int,
) -> float:
    """Mean over users of the share of their top-K list taken by its most frequent category."""
    shares = []
    for user, vector in user_vectors.items():
        row = job_matrix @ vector
        row[list(train.get(user, ()))] = -np.inf
        best = capped_top(row, K, categories, cap)
        known = [c for c in categories[best].tolist() if c != NO_CATEGORY]
        shares.append(max(Counter(known).values()) / len(best) if known and len(best) else 0.0)
    return float(np.mean(shares)) if shares else 0.0


def measure_caps(spark: Any, cfg: Config, seed_dir: Path, caps: list[int]) -> list[dict[str, float]]:
    from jobrec.batch.backfill import CsvLayout
    from jobrec.batch.offline import read_interactions_file
    from jobrec.batch.processes import als_params
    from jobrec.batch.train import train_on

    interactions = read_interactions_file(
        spark, str(seed_dir / "job_clicks.csv"), CsvLayout(), dict(cfg.ingest.weights), binary=True
    )
    by_user: dict[str, list] = {}
    for r in interactions.select(t.USER_ID, t.JOB_ID, t.STRENGTH).collect():
        by_user.setdefault(r[0], []).append((r[1], float(r[2]), None))
    kept, held = random_holdout(by_user, 0.2, 42)
    rows = [(u, j, s) for u, rs in kept.items() for j, s, _ in rs]
    train_df = spark.createDataFrame(rows, f"{t.USER_ID} STRING, {t.JOB_ID} STRING, {t.STRENGTH} DOUBLE")
    model = train_on(train_df, -1, als_params(cfg))
    users = {r[0]: np.asarray(r[1]) for r in model.user_factors.select(t.USER_ID, t.FEATURES).collect()}
    jobs = model.job_factors.select(t.JOB_ID, t.FEATURES).orderBy(t.JOB_ID).collect()
    job_ids = [j[0] for j in jobs]
    job_matrix = np.asarray([j[1] for j in jobs], dtype=np.float64)

    normaliser = CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases)
    with (seed_dir / "jobs.csv").open(newline="") as f:
        category_of = {r["jobID"]: normaliser.normalise(r["job_category"]) for r in csv.DictReader(f)}
    names = sorted({c for c in category_of.values() if c})
    code = {name: i for i, name in enumerate(names)}
    categories = np.array([code.get(category_of.get(j) or "", NO_CATEGORY) for j in job_ids], dtype=np.int64)

    train_sets = {u: {j for j, _, _ in rs} for u, rs in kept.items()}
    held_map = {u: {j: s for j, s, _ in rs} for u, rs in held.items()}
    position = {j: i for i, j in enumerate(job_ids)}
    train_idx = {u: {position[j] for j in js if j in position} for u, js in train_sets.items()}
    out = []
    for cap in caps:
        m = evaluate_model(users, job_ids, job_matrix, train_sets, held_map, K, categories, cap)
        out.append(
            {
                "max_per_category": cap,
                "ndcg@10": round(m["ndcg"], 4),
                "coverage@10": round(m["coverage"], 4),
                "largest_category_share": round(
                    largest_category_share(users, job_matrix, train_idx, categories, cap), 3
                ),
                "users": int(m["users"]),
            }
        )
    return out


def run_category_cap_bench(cfg: Config, seed_dir: Path, caps: list[int]) -> int:
    from jobrec.batch.bench.verdict import measured_something
    from jobrec.batch.processes import spark_session

    with spark_session(cfg, "bench-category-cap") as spark:
        rows = measure_caps(spark, cfg, seed_dir, caps)
    print(f"{'cap':>5}{'NDCG@10':>10}{'coverage@10':>13}{'largest category':>18}")
    for r in rows:
        print(
            f"{r['max_per_category'] or 'none':>5}{r['ndcg@10']:>10.4f}{r['coverage@10']:>13.4f}"
            f"{r['largest_category_share']:>17.0%}"
        )
    print(json.dumps(rows))
    return measured_something("category-cap", {"users": min((r["users"] for r in rows), default=0)})
