"""`jobrec offline`: recommendations for anyone with a file, no Kafka, no tables to keep.

Reads (user, job, count) rows of any layout, trains ALS on every row (with --tune, first chooses the parameters
on a validation split carved from the same file), and writes the top K unseen jobs of every user as CSV
user_id,job_id,rank,score.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.backfill import COUNT, CsvLayout, counts_to_interactions, read_counts_csv
from jobrec.batch.publish import recommend_top_n
from jobrec.batch.search import TABLE_COLUMNS, describe, format_table
from jobrec.batch.train import AlsParams, train_on
from jobrec.schemas import tables as t

log = logging.getLogger(__name__)


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
    spark: SparkSession,
    interactions: DataFrame,
    base: AlsParams,
    k: int,
    budget_seconds: float,
    max_trials: int,
    seed: int = 42,
) -> tuple[AlsParams, list[dict[str, Any]]]:
    """The Spark engine's search (`jobrec.batch.spark_search`) on a per-user 80/20 split of the file's pairs:
    (the best params, the trials table)."""
    from jobrec.batch.core.interaction_matrix import holdout_mask
    from jobrec.batch.single_node import frame_matrix
    from jobrec.batch.spark_search import search_spark_split

    data = frame_matrix(interactions.withColumn(t.LAST_AT, F.current_timestamp()), time.time())
    held = holdout_mask(data, 0.2, seed)
    result = search_spark_split(spark, data.select(~held), data.select(held), base, k, budget_seconds, max_trials)
    return result.best, result.trials


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
    budget_seconds: float = 40.0,
    max_trials: int = 200,
    binary: bool = False,
) -> dict[str, object]:
    interactions = read_interactions_file(spark, path, layout, weights, binary)
    params, table = base, list[dict[str, Any]]()
    if tune:
        params, table = tune_on_validation(spark, interactions, base, k, budget_seconds, max_trials)
        best_first = sorted(table, key=lambda r: -(r["val_ndcg"] if r["val_ndcg"] is not None else -1))
        print(format_table(best_first[:15], TABLE_COLUMNS))
        print(f"chosen on validation: {describe(params)}")
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
