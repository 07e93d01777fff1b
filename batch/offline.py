"""`jobrec offline`: recommendations for anyone with a file, no Kafka, no tables to keep.

Reads (user, job, count) rows of any layout, trains ALS on every row (with --tune, first chooses the parameters
on a validation split carved from the same file), and writes the top K unseen jobs of every user as CSV
user_id,job_id,rank,score.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.backfill import COUNT, CsvLayout, counts_to_interactions, read_counts_csv
from jobrec.batch.core.evaluate import evaluate_model
from jobrec.batch.core.split import random_holdout
from jobrec.batch.publish import recommend_top_n
from jobrec.batch.train import AlsParams, train_on
from jobrec.batch.tune import Grid, format_table, grid_search
from jobrec.schemas import tables as t

log = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "rank",
    "max_iter",
    "reg_param",
    "alpha",
    "val_ndcg",
    "val_precision",
    "val_recall",
    "val_map",
    "seconds",
)


class NoUsableRows(ValueError):
    """A file without one row that has both ids and a positive count; the message names the column at fault."""


def _no_usable_rows(spark: SparkSession, path: str, layout: CsvLayout) -> str:
    """Why nothing in the file is usable, with an example value of the column at fault."""
    raw = spark.read.option("header", True).option("sep", layout.sep).csv(path)
    if raw.isEmpty():
        return f"{path}: no data rows"
    for column in (layout.user_col, layout.job_col):
        if raw.where(F.col(column).isNotNull()).isEmpty():
            return f"{path}: column {column!r} is empty in every row"
    example = raw.select(layout.count_col).first()
    value = example[0] if example else None
    return (
        f"{path}: no row has a positive number in column {layout.count_col!r} (for example {value!r}); "
        "pass --count-col to name another column, or --sep if the columns are split differently"
    )


def read_interactions_file(
    spark: SparkSession, path: str, layout: CsvLayout, weights: Mapping[str, float], binary: bool = False
) -> DataFrame:
    """The file's rows with count > 0 as interactions; `binary` counts each pair once, whatever its count (for
    data whose counts are noise, like the seed's random click counts)."""
    raw = read_counts_csv(spark, path, layout)
    counts = raw.where(F.col(t.USER_ID).isNotNull() & F.col(t.JOB_ID).isNotNull() & (F.col(COUNT) > 0))
    if counts.isEmpty():
        raise NoUsableRows(_no_usable_rows(spark, path, layout))
    if binary:
        counts = counts.withColumn(COUNT, F.lit(1).cast("long")).dropDuplicates([t.USER_ID, t.JOB_ID])
    return counts_to_interactions(counts, "click", weights).cache()


def tune_on_validation(
    spark: SparkSession, interactions: DataFrame, base: AlsParams, grid: Grid, k: int, seed: int = 42
) -> tuple[AlsParams, list[dict[str, object]]]:
    by_user: dict[str, list] = {}
    for r in interactions.select(t.USER_ID, t.JOB_ID, t.STRENGTH).collect():
        by_user.setdefault(r[0], []).append((r[1], float(r[2]), None))
    kept, held = random_holdout(by_user, 0.2, seed)
    train_rows = [(u, j) for u, rows in kept.items() for j, _, _ in rows]
    train_df = interactions.join(
        spark.createDataFrame(train_rows, f"{t.USER_ID} STRING, {t.JOB_ID} STRING"), [t.USER_ID, t.JOB_ID]
    ).cache()
    train_sets = {u: {j for j, _, _ in rows} for u, rows in kept.items()}
    held_map = {u: {j: s for j, s, _ in rows} for u, rows in held.items()}

    def score(params: AlsParams) -> dict[str, float]:
        model = train_on(train_df, -1, params)
        users = {r[0]: np.asarray(r[1]) for r in model.user_factors.select(t.USER_ID, t.FEATURES).collect()}
        jobs = model.job_factors.select(t.JOB_ID, t.FEATURES).orderBy(t.JOB_ID).collect()
        return evaluate_model(users, [j[0] for j in jobs], np.asarray([j[1] for j in jobs]), train_sets, held_map, k)

    rows = grid_search(grid.points(base), score)
    best = rows[0]
    chosen = AlsParams(**{f: best[f] for f in asdict(base)})  # type: ignore[arg-type]
    return chosen, rows


def run_offline(
    spark: SparkSession,
    path: str,
    out: str,
    k: int,
    layout: CsvLayout,
    base: AlsParams,
    weights: Mapping[str, float],
    *,
    tune: bool,
    grid: Grid | None = None,
    binary: bool = False,
) -> dict[str, object]:
    interactions = read_interactions_file(spark, path, layout, weights, binary)
    params, table = base, list[dict[str, object]]()
    if tune:
        params, table = tune_on_validation(spark, interactions, base, grid or Grid(), k)
        print(format_table(table, TABLE_COLUMNS))
        print(f"chosen on validation: {asdict(params)}")
    model = train_on(interactions, -1, params)
    recs = recommend_top_n(
        spark,
        model.user_factors,
        model.job_factors,
        interactions,
        k,
        model_version=model.model_version,
        generated_at=datetime.now(timezone.utc),
    )
    n_users = 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "job_id", "rank", "score"])
        for row in recs.select(t.USER_ID, t.ITEMS).orderBy(t.USER_ID).toLocalIterator():
            n_users += 1
            w.writerows((row[0], it[t.JOB_ID], it[t.RANK], f"{it[t.SCORE]:.6f}") for it in row[1])
    log.info("wrote the top %d of %d users to %s", k, n_users, out)
    return {"users": n_users, "params": asdict(params), "tuning": table}
