"""Publish: the top-N unseen jobs of every user, to the `recommendations` Delta table and the Kafka topic.

Scoring runs where the users are: the job factors (small: jobs x rank floats) go to every task, each Arrow
batch of users is scored with numpy (`jobrec.batch.core.top_n`), and the jobs a user has interacted with are
hidden, as are the jobs the catalog says are closed or expired at publish time; `publish.max_per_category`
caps a category.
One message per user, keyed by user_id, valid against schemas/recommendation.v1.json. Until a model passes the
quality gate, `jobrec.batch.fallback` makes the lists a publish sends instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.core.catalog import CatalogRow, ServingFilter, serving_filter
from jobrec.batch.core.top_n import capped_top, rows_per_block, top_n_unseen
from jobrec.batch.delta_tables import ensure_delta_table, run_concurrently
from jobrec.schemas import tables as t
from jobrec.schemas.recommendation import NEW_USER_KEY, recommendation_message

log = logging.getLogger(__name__)

SEEN = "seen"
MESSAGE = "message"

RECS_ARROW_SCHEMA = pa.schema(
    [
        (t.USER_ID, pa.string()),
        (t.NEWEST_EVENT_AT, pa.timestamp("us", tz="UTC")),
        (
            t.ITEMS,
            pa.list_(pa.struct([(t.JOB_ID, pa.string()), (t.SCORE, pa.float64()), (t.RANK, pa.int32())])),
        ),
        (MESSAGE, pa.string()),
    ]
)
RECS_DDL = (
    f"{t.USER_ID} STRING, {t.NEWEST_EVENT_AT} TIMESTAMP, "
    f"{t.ITEMS} ARRAY<STRUCT<{t.JOB_ID}: STRING, {t.SCORE}: DOUBLE, {t.RANK}: INT>>, {MESSAGE} STRING"
)


def score_user_batches(
    batches: Iterator[pa.RecordBatch],
    job_ids: list[str],
    job_matrix: np.ndarray,
    n: int,
    *,
    model_version: str,
    generated_at: datetime,
    allowed: ServingFilter | None = None,
    max_per_category: int = 0,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of (user_id, features, seen, newest_event_at) -> (user_id, newest_event_at, items, message)."""
    excluded = allowed.excluded if allowed else None
    categories = allowed.categories if allowed else None
    position = {job: i for i, job in enumerate(job_ids)}
    for batch in batches:
        users = batch.column(t.USER_ID).to_pylist()
        features = batch.column(t.FEATURES).to_pylist()
        seen_lists = batch.column(SEEN).to_pylist()
        newest = batch.column(t.NEWEST_EVENT_AT).to_pylist()
        out: dict[str, list[object]] = {f.name: [] for f in RECS_ARROW_SCHEMA}
        block = rows_per_block(len(job_ids))
        for start in range(0, len(users), block):
            stop = start + block
            # float32, as the factors are stored: the block's scores cost a quarter of float64's
            vectors = np.asarray(features[start:stop], dtype=np.float32)
            seen = [
                np.fromiter((position[j] for j in (s or []) if j in position), dtype=np.int64)
                for s in seen_lists[start:stop]
            ]
            for offset, (idx, scores) in enumerate(
                top_n_unseen(vectors, job_matrix, seen, n, excluded, categories, max_per_category)
            ):
                user = users[start + offset]
                items = [
                    {t.JOB_ID: job_ids[j], t.SCORE: round(float(s), 6), t.RANK: r + 1}
                    for r, (j, s) in enumerate(zip(idx.tolist(), scores.tolist(), strict=True))
                ]
                newest_at = newest[start + offset]
                out[t.USER_ID].append(user)
                out[t.NEWEST_EVENT_AT].append(newest_at)
                out[t.ITEMS].append(items)
                out[MESSAGE].append(
                    recommendation_message(user, model_version, generated_at, newest_at, t.SOURCE_BATCH, items)
                )
        yield pa.RecordBatch.from_pydict(out, schema=RECS_ARROW_SCHEMA)


def popular_items(
    users_per_job: dict[str, int], job_ids: list[str], allowed: ServingFilter | None, n: int, max_per_category: int
) -> list[dict[str, object]]:
    """The list for a user with no history: the jobs most users interacted with, open ones only, capped by
    category; ties by job order. A job's score is its popularity: its users as a share of the most popular job's
    (1.0 for that job), the same scale as the speed layer's fallback lists."""
    counts = np.array([float(users_per_job.get(j, 0)) for j in job_ids]) if job_ids else np.empty(0)
    row = counts.copy()
    row[row <= 0] = -np.inf
    if allowed is not None:
        row[allowed.excluded] = -np.inf
    best = capped_top(row, n, allowed.categories if allowed is not None else None, max_per_category)
    top = counts.max() if counts.size else 0.0
    return [
        {t.JOB_ID: job_ids[j], t.SCORE: round(float(counts[j] / top), 6) if top > 0 else 0.0, t.RANK: r + 1}
        for r, j in enumerate(best.tolist())
    ]


def user_histories(interactions: DataFrame) -> DataFrame:
    """One row per user: (user_id, seen: the jobs they interacted with, newest_event_at)."""
    return interactions.groupBy(t.USER_ID).agg(
        F.collect_list(t.JOB_ID).alias(SEEN), F.max(t.LAST_AT).alias(t.NEWEST_EVENT_AT)
    )


def recommend_top_n(
    spark: SparkSession,
    user_factors: DataFrame,
    job_factors: DataFrame,
    interactions: DataFrame,
    n: int,
    *,
    model_version: str,
    generated_at: datetime,
    catalog: list[CatalogRow] | None = None,
    max_per_category: int = 0,
    new_user_list: bool = False,
) -> DataFrame:
    """One row per user with factors: (user_id, newest_event_at, items, message); with `new_user_list`, one
    more row keyed NEW_USER_KEY with the popular-jobs list for users who have no list (what a publish sends).

    `catalog` (the jobs table's rows) hides closed and expired jobs and gives the categories for the cap.
    """
    jobs = job_factors.select(t.JOB_ID, t.FEATURES).orderBy(t.JOB_ID).collect()
    job_ids = [r[t.JOB_ID] for r in jobs]
    job_matrix = np.asarray([r[t.FEATURES] for r in jobs], dtype=np.float32)
    allowed = serving_filter(job_ids, catalog, generated_at) if catalog else None
    if allowed is not None:
        log.info(
            "publish hides %d of the model's %d jobs (closed or expired at %s)",
            allowed.n_excluded,
            len(job_ids),
            generated_at.isoformat(timespec="seconds"),
        )
    users = user_factors.select(t.USER_ID, t.FEATURES).join(user_histories(interactions), t.USER_ID, "left")
    per_user = users.mapInArrow(
        lambda batches: score_user_batches(
            batches,
            job_ids,
            job_matrix,
            n,
            model_version=model_version,
            generated_at=generated_at,
            allowed=allowed,
            max_per_category=max_per_category,
        ),
        RECS_DDL,
    )
    if not new_user_list:
        return per_user
    users_per_job = {r[0]: r[1] for r in interactions.groupBy(t.JOB_ID).count().collect()}
    items = popular_items(users_per_job, job_ids, allowed, n, max_per_category)
    new_user = spark.createDataFrame(
        [
            (
                NEW_USER_KEY,
                None,
                items,
                recommendation_message(NEW_USER_KEY, model_version, generated_at, None, t.SOURCE_FALLBACK, items),
            )
        ],
        RECS_DDL,
    )
    return per_user.unionByName(new_user)


def publish_recommendations(
    spark: SparkSession,
    recs: DataFrame,
    tables_root: str,
    kafka_options: dict[str, str],
    topic: str,
    model_version: str,
    generated_at: datetime,
    source: str = t.SOURCE_BATCH,
    cache: bool = True,
) -> int:
    """Write the lists to the recommendations table and one message per user to the topic. Returns the number
    of users (the NEW_USER_KEY list not counted). `source` is the users' lists' (the NEW_USER_KEY list is always
    a fallback list). `cache`: keep the lists between the two writes (not when they were made on the driver and
    are already in memory)."""
    started = time.monotonic()
    if cache:
        recs = recs.persist()
    try:
        n_users = recs.where(F.col(t.USER_ID) != NEW_USER_KEY).count()
        table = recs.select(
            t.USER_ID,
            F.lit(model_version).alias(t.MODEL_VERSION),
            F.lit(generated_at).cast("timestamp").alias(t.GENERATED_AT),
            t.NEWEST_EVENT_AT,
            F.when(F.col(t.USER_ID) == NEW_USER_KEY, F.lit(t.SOURCE_FALLBACK)).otherwise(F.lit(source)).alias(t.SOURCE),
            t.ITEMS,
        )
        path = ensure_delta_table(spark, tables_root, t.RECOMMENDATIONS)
        messages = (
            recs.select(F.col(t.USER_ID).alias("key"), F.col(MESSAGE).alias("value"))
            .write.format("kafka")
            .options(**kafka_options)
            .option("topic", topic)
            .option("kafka.acks", "all")
        )
        # the table and the topic are written at once; a failure of either fails the publish (the next one
        # sends every list again)
        run_concurrently(partial(table.write.format("delta").mode("append").save, path), messages.save)
    finally:
        if cache:
            recs.unpersist()
    log.info(
        "published %s top-N lists of %d users and the list for new users (model %s) in %.1f s",
        source,
        n_users,
        model_version,
        time.monotonic() - started,
    )
    return n_users
