"""Publish on the driver: the top-N lists of a model whose data fits one machine, scored in numpy on the driver.

When the single-machine engine trained the model, its factors and the interactions already fit the driver, and
shipping them to Python workers (a shuffle to group each user's history, a worker per task, the job factors
pickled to each) costs several times the scoring itself. Here the three tables come to the driver as Arrow, the
users are scored in blocks (`jobrec.batch.core.top_n`, the same selection as the distributed publisher), and the
lists go back to Spark as one Arrow table, to be written to the recommendations table and the topic by the same
`publish_recommendations` as the distributed path. The lists are the same either way (tests compare them).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.core.catalog import CatalogRow, serving_filter
from jobrec.batch.core.top_n import rows_per_block, top_n_unseen
from jobrec.batch.publish import MESSAGE, RECS_ARROW_SCHEMA, popular_items
from jobrec.schemas import tables as t
from jobrec.schemas.recommendation import NEW_USER_KEY, recommendation_message, recommendation_messages

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NO_TIME = np.iinfo(np.int64).min  # microseconds of a pair without a time
_ITEM_TYPE = RECS_ARROW_SCHEMA.field(t.ITEMS).type


def factor_matrix(table: pa.Table, id_col: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, factors as float32 rows) from a factors table's (id, features) columns, without a Python object per
    value. Every vector of one model has the model's rank; a table that breaks that is refused."""
    ids = table.column(id_col).to_numpy(zero_copy_only=False)
    features = table.column(t.FEATURES).combine_chunks()
    if len(features) == 0:
        return ids, np.empty((0, 0), dtype=np.float32)
    lengths = features.value_lengths().to_numpy(zero_copy_only=False)
    if features.null_count or (lengths != lengths[0]).any():
        raise ValueError(f"{id_col} factors of unequal length or missing: not one model's factors")
    flat = features.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return ids, flat.reshape(len(features), int(lengths[0]))


def recommend_on_driver(
    users: pa.Table,
    jobs: pa.Table,
    histories: pa.Table,
    n: int,
    *,
    model_version: str,
    generated_at: datetime,
    catalog: list[CatalogRow] | None = None,
    max_per_category: int = 0,
) -> pa.Table:
    """Every user with factors: (user_id, newest_event_at, items, message), as `recommend_top_n` makes them, and
    the NEW_USER_KEY row with the popular-jobs list.

    `users` (user_id, features), `jobs` (job_id, features): one model's factors; `histories` (user_id, job_id,
    last_at): the interactions table, whose jobs are hidden from their user and whose users per job rank the
    popular list."""
    user_ids, user_matrix = factor_matrix(users, t.USER_ID)
    job_ids, job_matrix = factor_matrix(jobs, t.JOB_ID)
    order = np.argsort(job_ids, kind="stable")  # job order by id, as the distributed publisher's (ties, the cap)
    job_ids, job_matrix = job_ids[order], job_matrix[order]
    job_list = job_ids.tolist()
    allowed = serving_filter(job_list, catalog, generated_at) if catalog else None

    seen_user = pd.Index(user_ids).get_indexer(histories.column(t.USER_ID).to_numpy(zero_copy_only=False))
    seen_job = pd.Index(job_ids).get_indexer(histories.column(t.JOB_ID).to_numpy(zero_copy_only=False))
    # a backfilled pair has no time (null): it never makes a user's newest event
    last_us = histories.column(t.LAST_AT).cast(pa.int64()).fill_null(_NO_TIME).to_numpy(zero_copy_only=False)
    newest = _newest_per_user(seen_user, last_us, len(user_ids))
    known = (seen_user >= 0) & (seen_job >= 0)
    by_user = np.argsort(seen_user[known], kind="stable")
    seen_jobs = seen_job[known][by_user]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(seen_user[known], minlength=len(user_ids)))])

    excluded = allowed.excluded if allowed else None
    categories = allowed.categories if allowed else None
    picked: list[list[int]] = []
    scores: list[list[float]] = []
    block = rows_per_block(len(job_list))
    for lo in range(0, len(user_ids), block):
        hi = min(len(user_ids), lo + block)
        seen = [seen_jobs[indptr[u] : indptr[u + 1]] for u in range(lo, hi)]
        ranked = top_n_unseen(user_matrix[lo:hi], job_matrix, seen, n, excluded, categories, max_per_category)
        # the block's scores rounded in one call (a Python round per score costs a fifth of the scoring)
        rounded = np.round(np.concatenate([v for _, v in ranked]).astype(np.float64), 6).tolist()
        at = 0
        for idx, _ in ranked:
            picked.append(idx.tolist())
            scores.append(rounded[at : at + len(idx)])
            at += len(idx)
    user_list = [str(u) for u in user_ids]
    newest_at = [None if us is None else _EPOCH + timedelta(microseconds=us) for us in newest]
    messages = recommendation_messages(
        user_list, model_version, generated_at, newest_at, t.SOURCE_BATCH, job_list, picked, scores
    )

    # one row per (user, job): a job's rows are its users (only the model's jobs can be listed)
    users_per_job = np.bincount(seen_job[seen_job >= 0], minlength=len(job_list))
    counts = dict(zip(job_list, users_per_job.tolist(), strict=True))
    popular = popular_items(counts, job_list, allowed, n, max_per_category)
    messages.append(recommendation_message(NEW_USER_KEY, model_version, generated_at, None, t.SOURCE_FALLBACK, popular))
    lengths = [len(p) for p in picked] + [len(popular)]  # the last row is NEW_USER_KEY's
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = [j for p in picked for j in p]
    ranks = np.arange(offsets[-1], dtype=np.int32) - np.repeat(offsets[:-1], lengths) + 1
    items = pa.StructArray.from_arrays(
        [
            pa.array(job_ids[np.asarray(flat, dtype=np.int64)].tolist() + [i[t.JOB_ID] for i in popular], pa.string()),
            pa.array([v for row in scores for v in row] + [i[t.SCORE] for i in popular], pa.float64()),
            pa.array(ranks, pa.int32()),
        ],
        fields=list(_ITEM_TYPE.value_type),
    )
    return pa.table(
        {
            t.USER_ID: pa.array(user_list + [NEW_USER_KEY], pa.string()),
            t.NEWEST_EVENT_AT: pa.array(
                [None if us is None else int(us) for us in newest] + [None], pa.timestamp("us", tz="UTC")
            ),
            t.ITEMS: pa.ListArray.from_arrays(pa.array(offsets), items, type=_ITEM_TYPE),
            MESSAGE: pa.array(messages, pa.string()),
        },
        schema=RECS_ARROW_SCHEMA,
    )


def _newest_per_user(user_pos: np.ndarray, last_us: np.ndarray, n_users: int) -> list[int | None]:
    """Each user's newest interaction time (microseconds), None for a user with none."""
    newest = np.full(n_users, _NO_TIME, dtype=np.int64)
    mine = user_pos >= 0
    np.maximum.at(newest, user_pos[mine], last_us[mine])
    return [None if us == _NO_TIME else us for us in newest.tolist()]


def recommend_top_n_on_driver(
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
) -> DataFrame:
    """`recommend_top_n` with `new_user_list`, scored on the driver: the same rows, as a DataFrame over the
    driver's Arrow table."""
    started = time.monotonic()
    users = user_factors.select(t.USER_ID, t.FEATURES).toArrow()
    jobs = job_factors.select(t.JOB_ID, t.FEATURES).toArrow()
    histories = interactions.select(t.USER_ID, t.JOB_ID, F.col(t.LAST_AT)).toArrow()
    read_s = time.monotonic() - started
    table = recommend_on_driver(
        users,
        jobs,
        histories,
        n,
        model_version=model_version,
        generated_at=generated_at,
        catalog=catalog,
        max_per_category=max_per_category,
    )
    log.info(
        "scored %d users' lists on the driver in %.1f s (%.1f s of it reading factors and histories)",
        table.num_rows - 1,
        time.monotonic() - started,
        read_s,
    )
    return spark.createDataFrame(table)
