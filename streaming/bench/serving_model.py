"""A synthetic serving model in Delta for `jobrec bench api --mode similar`, written without a JVM.

The benchmark measures the API's similar-jobs and anonymous-list answers at a production size (100,000 jobs at rank
32 by default) without training one: it writes the four tables the API reads (models, job_factors, interactions,
jobs) with delta-rs, in the columns of `schemas.tables`. The factors are random; the numbers of users per job fall
off as a power law (a few popular jobs, a long tail), a twentieth of the jobs is closed, and every job has one of
the config's categories, so the serving filter and the category cap do their real work.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from jobrec.schemas import tables as t

MODEL_VERSION = "bench-model"
CLOSED_SHARE = 0.05


def bench_job_ids(n_jobs: int) -> list[str]:
    return [f"job-{i}" for i in range(n_jobs)]


def write_bench_model(
    tables_root: Path, n_jobs: int, rank: int, categories: list[str], users_per_job_top: int = 500, seed: int = 7
) -> None:
    """The published model MODEL_VERSION with `n_jobs` random job factors of `rank`, its interactions and the jobs
    table, in Delta tables under `tables_root`."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    jobs = bench_job_ids(n_jobs)
    params = {"alpha": 5.0, "reg_param": 0.2, "reg_scaling": "count", "confidence": "linear", "rank": rank}
    now = datetime.now(timezone.utc)
    write_deltalake(
        str(tables_root / t.MODELS),
        pa.table(
            {
                t.MODEL_VERSION: [MODEL_VERSION],
                t.CREATED_AT: pa.array([now], pa.timestamp("us", "UTC")),
                t.STATUS: [t.STATUS_PUBLISHED],
                t.PARAMS: [json.dumps(params)],
            }
        ),
    )
    factors = rng.normal(scale=0.3, size=(n_jobs, rank)).astype(np.float32)
    write_deltalake(
        str(tables_root / t.JOB_FACTORS),
        pa.table(
            {
                t.MODEL_VERSION: [MODEL_VERSION] * n_jobs,
                t.JOB_ID: jobs,
                t.FEATURES: pa.FixedSizeListArray.from_arrays(pa.array(factors.ravel()), rank).cast(
                    pa.list_(pa.float32())
                ),
            }
        ),
        partition_by=[t.MODEL_VERSION],
    )
    # job i has about users_per_job_top / (1 + i / 50) users: one row per (user, job), as the interactions table
    users = np.maximum(1, (users_per_job_top / (1 + np.arange(n_jobs) / 50)).astype(np.int64))
    owner = np.repeat(np.arange(n_jobs), users)
    write_deltalake(
        str(tables_root / t.INTERACTIONS),
        pa.table(
            {
                t.USER_ID: pa.array(np.char.add("user-", np.arange(owner.size).astype(str))),
                t.JOB_ID: pa.array(np.asarray(jobs, dtype=object)[owner].tolist()),
                t.STRENGTH: pa.array(np.ones(owner.size)),
            }
        ),
    )
    closed = rng.random(n_jobs) < CLOSED_SHARE
    no_time = pa.array([None] * n_jobs, pa.timestamp("us", "UTC"))
    write_deltalake(
        str(tables_root / t.JOBS),
        pa.table(
            {
                t.JOB_ID: jobs,
                t.CATEGORY: [categories[i % len(categories)] for i in rng.integers(0, len(categories), n_jobs)],
                t.STATUS: [t.JOB_CLOSED if c else t.JOB_OPEN for c in closed.tolist()],
                t.EXPIRES_AT: no_time,
                t.UPDATED_AT: no_time,
                t.CATEGORY_AT: no_time,
            }
        ),
    )
