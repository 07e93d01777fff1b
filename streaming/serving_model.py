"""The serving model assembled from the rows the tables give (`serving_tables.read_serving_model` reads them for
the speed layer and the HTTP API alike, so the API's similar jobs and anonymous lists use the very model,
parameters and popularity order the speed layer folds users in with). Pure: no Spark, no Kafka, no Delta.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jobrec.streaming.speed import POPULAR_JOBS, ServingModel


def assemble_serving_model(
    version: str,
    params: Mapping[str, Any],
    job_factors: Iterable[tuple[str, Any]],
    users_per_job: Iterable[tuple[str, int]],
) -> ServingModel:
    """The model of `version` from its models-table params (the JSON object), its (job_id, features) rows and the
    (job_id, users who interacted with it) counts of the interactions table, in any order.

    Jobs are held in job_id order; the fallback order is the POPULAR_JOBS jobs of the model with the most users
    (ties by job_id), and a job's popularity is its users as a share of the most popular job's.
    """
    rows = sorted(job_factors, key=lambda row: row[0])
    job_ids = [job for job, _ in rows]
    position = {job: i for i, job in enumerate(job_ids)}
    by_users = sorted(users_per_job, key=lambda pair: (-pair[1], pair[0]))
    popular = [position[job] for job, _ in by_users if job in position][:POPULAR_JOBS]
    popularity = np.zeros(len(job_ids))
    for job, users in by_users:
        if job in position:
            popularity[position[job]] = users
    if popularity.max(initial=0.0) > 0:
        popularity /= popularity.max()
    return ServingModel(
        version,
        job_ids,
        np.asarray([features for _, features in rows], dtype=np.float64),
        float(params["alpha"]),
        float(params["reg_param"]),
        popular,
        popularity=popularity,
        confidence=params.get("confidence", "linear"),
        epsilon=float(params.get("epsilon", 1.0)),
        half_life_days=float(params.get("half_life_days", 0.0)),
        reference_time=float(params.get("reference_time", 0.0)),
        # a model recorded before the engines existed was Spark's, with its count-scaled lambda
        reg_scaling=params.get("reg_scaling", "count"),
    )
