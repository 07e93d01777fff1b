"""`jobrec offline` on the single-machine engine: a counts CSV in, every user's top K unseen jobs out, no JVM.

1. Read the file with pyarrow (`jobrec.batch.counts_file`): decimal counts kept, bad rows counted, a file with no
   usable row refused naming the column.
2. Hold out validation_share of each sampled user's pairs (a validation split, never a test split: whoever scores
   the output holds their own test data back from the file).
3. With --tune, search the parameters on that split (`jobrec.batch.search`); either way report the model's
   validation NDCG@k beside popularity's on the same split, and warn plainly when the model does not beat it.
4. Train on every pair with the chosen parameters and write user_id,job_id,rank,score for every user, scoring a
   block of users per matrix product.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from jobrec.batch.backfill import CsvLayout
from jobrec.batch.core.als_implicit import for_implicit, train_on_matrix
from jobrec.batch.core.interaction_matrix import (
    InteractionMatrix,
    build_matrix,
    holdout_mask,
    sample_users,
)
from jobrec.batch.core.params import AlsParams
from jobrec.batch.core.ranking import evaluate_factors, evaluate_popularity, top_k_of_scores
from jobrec.batch.core.top_n import rows_per_block
from jobrec.batch.counts_file import binary_counts, read_counts_file
from jobrec.batch.search import TABLE_COLUMNS, describe, format_table, search_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineSettings:
    k: int = 10
    tune: bool = False
    budget_seconds: float = 40.0
    max_trials: int = 200
    binary: bool = False
    validation_share: float = 0.2
    eval_users: int = 5000
    seed: int = 42
    # the strength of one counted event (ingest.weights of a click)
    weight: float = 1.0


def read_matrix(path: str, layout: CsvLayout, binary: bool, weight: float) -> tuple[InteractionMatrix, dict[str, int]]:
    table = read_counts_file(path, layout)
    if binary:
        table = binary_counts(table)
    stats = {"rows_read": table.rows_read, "rows_bad": table.rows_bad, "rows_zero": table.rows_zero}
    return build_matrix(table.user_ids, table.job_ids, table.counts * weight), stats


def write_top_k(out: str, data: InteractionMatrix, users: np.ndarray, jobs: np.ndarray, k: int) -> int:
    """Every user's k best unseen jobs as user_id,job_id,rank,score (scores rounded to 6 decimals); returns the
    number of users written. Columns are gathered per block of users and written by Arrow's CSV writer."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    user_col, job_col, rank_col, score_col = [], [], [], []
    written = 0
    block = rows_per_block(data.n_jobs)
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), block)
    job_matrix = np.asarray(jobs, dtype=np.float32)
    for lo in range(0, data.n_users, block):
        hi = min(data.n_users, lo + block)
        # float32, the factors' precision; masking only touches seen jobs, never a picked one's score
        scores = np.asarray(users[lo:hi], dtype=np.float32) @ job_matrix.T
        best = top_k_of_scores(scores, data.strength[lo:hi], k)
        picked = best >= 0
        written += int(picked.any(axis=1).sum())
        rows = np.repeat(np.arange(hi - lo), k).reshape(hi - lo, k)
        user_col.append(np.repeat(data.user_ids[lo:hi], k).reshape(hi - lo, k)[picked])
        job_col.append(data.job_ids[best[picked]])
        rank_col.append(ranks[: (hi - lo) * k].reshape(hi - lo, k)[picked])
        score_col.append(np.round(scores[rows[picked], best[picked]].astype(np.float64), 6))
    table = pa.table(
        {
            "user_id": pa.array(np.concatenate(user_col).tolist() if user_col else [], pa.string()),
            "job_id": pa.array(np.concatenate(job_col).tolist() if job_col else [], pa.string()),
            "rank": pa.array(np.concatenate(rank_col) if rank_col else np.empty(0, np.int32)),
            "score": pa.array(np.concatenate(score_col) if score_col else np.empty(0)),
        }
    )

    def write(quoting: str) -> None:
        with pa.OSFile(out, "wb") as sink:
            sink.write(b"user_id,job_id,rank,score\n")
            pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style=quoting))

    try:
        # plain fields, as csv.writer writes them; an id with the separator, a quote or a line break in it makes
        # Arrow refuse, and then every string is quoted
        write("none")
    except pa.ArrowInvalid:
        write("needed")
    return written


def run_offline_single_node(
    path: str, out: str, layout: CsvLayout, base: AlsParams, settings: OfflineSettings, progress: TextIO = sys.stderr
) -> dict[str, Any]:
    started = time.monotonic()
    data, stats = read_matrix(path, layout, settings.binary, settings.weight)
    log.info(
        "read %s: %d rows, %d bad, %d zero; %d (user, job) pairs of %d users x %d jobs",
        path,
        stats["rows_read"],
        stats["rows_bad"],
        stats["rows_zero"],
        data.nnz,
        data.n_users,
        data.n_jobs,
    )
    params = for_implicit(base)
    sampled = sample_users(data.user_ids, settings.eval_users, settings.seed)
    held = holdout_mask(data, settings.validation_share, settings.seed, sampled)
    train, validation = data.select(~held), data.select(held)
    pop = evaluate_popularity(train.users_per_job(), train.strength, validation.strength, settings.k)["ndcg"]
    table: list[dict[str, Any]] = []
    if settings.tune:
        result = search_params(
            train, validation, params, settings.k, settings.budget_seconds, max_trials=settings.max_trials, out=progress
        )
        table = sorted(result.trials, key=lambda r: -(r["val_ndcg"] if r["val_ndcg"] is not None else -1.0))
        if result.n_complete:
            params, val_ndcg = result.best, result.best_ndcg
        else:
            log.warning(
                "the search completed no trial in %.0f s: keeping %s", settings.budget_seconds, describe(params)
            )
    if not settings.tune or not table or table[0]["val_ndcg"] is None:
        users, jobs, params = train_on_matrix(params, train)
        val_ndcg = evaluate_factors(users, jobs, train.strength, validation.strength, settings.k)["ndcg"]
    verdict = (
        f"validation NDCG@{settings.k} {val_ndcg:.4f} against popularity's {pop:.4f} on the same split "
        f"({int((np.diff(validation.strength.indptr) > 0).sum())} users, {validation.nnz} held-out pairs)"
    )
    if val_ndcg > pop:
        log.info("%s", verdict)
    else:
        log.warning(
            "the model does NOT beat popularity: %s. Try --tune (or a larger --budget), or --binary if the counts "
            "say little about preference",
            verdict,
        )
    fit_started = time.monotonic()
    users, jobs, params = train_on_matrix(params, data)
    fit_s = time.monotonic() - fit_started
    n_users = write_top_k(out, data, users, jobs, settings.k)
    log.info("wrote the top %d of %d users to %s", settings.k, n_users, out)
    return {
        "users": n_users,
        "params": params.to_record(),
        "tuning": table,
        "validation_ndcg": round(float(val_ndcg), 6),
        "popularity_ndcg": round(float(pop), 6),
        "beats_popularity": bool(val_ndcg > pop),
        "fit_s": round(fit_s, 3),
        "seconds": round(time.monotonic() - started, 3),
        "table_markdown": format_table(table[:15], TABLE_COLUMNS) if table else "",
    }
