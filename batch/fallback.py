"""Fallback lists: what a publish sends until a model passes the quality gate, so that something is always served.

There are no factors to score with yet, so every user of the interactions table and the new-user key get a
popularity list (source fallback, model_version "popularity"): the open jobs most users interacted with, the
user's own jobs left out, `publish.max_per_category` applied. The lists go out as a model's do
(`jobrec.batch.publish.publish_recommendations`); the speed layer answers clicks the same way until then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from jobrec.batch.core.catalog import CatalogRow, serving_filter
from jobrec.batch.core.top_n import capped_top
from jobrec.batch.publish import MESSAGE, RECS_ARROW_SCHEMA, RECS_DDL, SEEN, user_histories
from jobrec.schemas import tables as t
from jobrec.schemas.recommendation import NEW_USER_KEY, POPULARITY_MODEL_VERSION, recommendation_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PopularJobs:
    """The jobs a fallback list may hold, most popular first: (users desc, job_id asc), closed and expired jobs
    left out. `shares` are their users as a share of the most popular job's (closed jobs counted: the speed
    layer's scale); `categories` their category codes for the cap (None: no catalog)."""

    job_ids: list[str]
    shares: np.ndarray
    categories: np.ndarray | None = None
    position: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", {job: i for i, job in enumerate(self.job_ids)})


def rank_popular_jobs(
    users_per_job: Mapping[str, int], catalog: list[CatalogRow] | None, now: datetime
) -> tuple[PopularJobs, int]:
    """(the open jobs by popularity, how many jobs the catalog hid) from job -> number of users who interacted."""
    job_ids = sorted(users_per_job, key=lambda job: (-users_per_job[job], job))
    counts = np.array([float(users_per_job[job]) for job in job_ids])
    top = counts[0] if counts.size and counts[0] > 0 else 1.0
    allowed = serving_filter(job_ids, catalog, now) if catalog else None
    keep = ~allowed.excluded if allowed is not None else np.ones(len(job_ids), dtype=bool)
    return (
        PopularJobs(
            [job for job, kept in zip(job_ids, keep.tolist(), strict=True) if kept],
            counts[keep] / top,
            allowed.categories[keep] if allowed is not None else None,
        ),
        int((~keep).sum()),
    )


def popular_unseen(
    popular: PopularJobs, seen: Iterable[str], n: int, max_per_category: int = 0
) -> list[dict[str, object]]:
    """The fallback list of one user: the `n` most popular jobs of `popular` the user has not interacted with
    (`seen`), at most `max_per_category` of one category; score = popularity share, best first.

    Only a prefix of the popularity order is looked at: without a cap the list lies within the first
    n + len(seen) jobs; a cap that skips jobs widens it (as `capped_top` widens its own window)."""
    seen_at = np.fromiter((p for p in (popular.position.get(job) for job in seen) if p is not None), dtype=np.int64)
    total = len(popular.job_ids)
    m = min(total, n + len(seen_at))
    while True:
        row = -np.arange(m, dtype=np.float64)  # keeps the popularity order; -inf hides a job
        row[seen_at[seen_at < m]] = -np.inf
        categories = popular.categories[:m] if popular.categories is not None else None
        best = capped_top(row, n, categories, max_per_category)
        if len(best) >= n or m == total:
            break
        m = min(total, 4 * max(m, 1))
    return [
        {t.JOB_ID: popular.job_ids[j], t.SCORE: round(float(popular.shares[j]), 6), t.RANK: r + 1}
        for r, j in enumerate(best.tolist())
    ]


def fallback_user_batches(
    batches: Iterator[pa.RecordBatch],
    popular: PopularJobs,
    n: int,
    *,
    generated_at: datetime,
    max_per_category: int = 0,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of (user_id, seen, newest_event_at) -> (user_id, newest_event_at, items, message): each
    user's popularity list (source fallback, model_version "popularity")."""
    for batch in batches:
        users = batch.column(t.USER_ID).to_pylist()
        seen_lists = batch.column(SEEN).to_pylist()
        newest = batch.column(t.NEWEST_EVENT_AT).to_pylist()
        out: dict[str, list[object]] = {f.name: [] for f in RECS_ARROW_SCHEMA}
        for user, seen, newest_at in zip(users, seen_lists, newest, strict=True):
            items = popular_unseen(popular, seen or (), n, max_per_category)
            out[t.USER_ID].append(user)
            out[t.NEWEST_EVENT_AT].append(newest_at)
            out[t.ITEMS].append(items)
            out[MESSAGE].append(
                recommendation_message(
                    user, POPULARITY_MODEL_VERSION, generated_at, newest_at, t.SOURCE_FALLBACK, items
                )
            )
        yield pa.RecordBatch.from_pydict(out, schema=RECS_ARROW_SCHEMA)


def recommend_popular(
    spark: SparkSession,
    interactions: DataFrame,
    n: int,
    *,
    generated_at: datetime,
    catalog: list[CatalogRow] | None = None,
    max_per_category: int = 0,
) -> DataFrame:
    """What a publish sends while no model has passed the gate: one row per user of `interactions`
    (user_id, newest_event_at, items, message) with their popularity list, and one keyed NEW_USER_KEY.

    Popularity is each job's number of users in `interactions` (one row per user and job); `catalog` hides
    closed and expired jobs and gives the categories for the cap. The per-job counts go to the driver (one row
    per job); the users stay in Spark, one Arrow batch at a time.
    """
    users_per_job = {r[0]: r[1] for r in interactions.groupBy(t.JOB_ID).count().collect()}
    popular, n_hidden = rank_popular_jobs(users_per_job, catalog, generated_at)
    log.info(
        "fallback lists: %d jobs by popularity, %d closed or expired hidden (at %s)",
        len(popular.job_ids),
        n_hidden,
        generated_at.isoformat(timespec="seconds"),
    )
    per_user = user_histories(interactions).mapInArrow(
        lambda batches: fallback_user_batches(
            batches, popular, n, generated_at=generated_at, max_per_category=max_per_category
        ),
        RECS_DDL,
    )
    items = popular_unseen(popular, (), n, max_per_category)
    message = recommendation_message(
        NEW_USER_KEY, POPULARITY_MODEL_VERSION, generated_at, None, t.SOURCE_FALLBACK, items
    )
    return per_user.unionByName(spark.createDataFrame([(NEW_USER_KEY, None, items, message)], RECS_DDL))
