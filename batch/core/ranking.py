"""Ranking metrics for many users at once: the top k unseen jobs of a block of users from one matrix product,
and NDCG, precision, recall and MAP at k from the ranked block and the held-out pairs.

The gate and the search score thousands of users per trial, so the per-user Python loop of
`jobrec.batch.core.evaluate` (which also computes AUC and percentile ranks) would cost more than a fit. The
definitions are the same as `jobrec.batch.core.metrics` (gain 1 per held-out job, discount log2(rank + 1); ties
by the lower job index); tests/unit/test_ranking.py checks them against it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jobrec.batch.core.top_n import rows_per_block, top_k_sorted

METRICS = ("ndcg", "precision", "recall", "map")


def top_k_of_scores(scores: np.ndarray, seen: sp.csr_matrix, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """Row i's k best job indices by score, descending (ties by the lower index), never a job seen in row i of
    `seen` nor one `excluded`; -1 pads a row with fewer than k allowed jobs. `scores` is overwritten."""
    n_rows = scores.shape[0]
    rows = np.repeat(np.arange(n_rows), np.diff(seen.indptr))
    scores[rows, seen.indices] = -np.inf
    if excluded is not None and excluded.any():
        scores[:, excluded] = -np.inf
    return top_k_sorted(scores, k)


def metrics_of_ranked(ranked: np.ndarray, held: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Per row: NDCG, precision, recall and AP at k of the ranked job indices against the held-out jobs of the
    same row. Rows without held-out jobs score 0 (callers pass only rows that have some)."""
    n_rows = ranked.shape[0]
    n_jobs = held.shape[1]
    held_rows = np.repeat(np.arange(n_rows), np.diff(held.indptr))
    held_keys = np.sort(held_rows.astype(np.int64) * n_jobs + held.indices)
    keys = np.arange(n_rows)[:, None].astype(np.int64) * n_jobs + ranked[:, :k]
    hits = np.isin(keys, held_keys) & (ranked[:, :k] >= 0)
    n_rel = np.diff(held.indptr)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_rel, k)]
    dcg = (hits * discount).sum(axis=1)
    n_hits = hits.sum(axis=1)
    cum_hits = np.cumsum(hits, axis=1)
    ap_num = (hits * cum_hits / np.arange(1, k + 1)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "ndcg": np.where(n_rel > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0),
            "precision": n_hits / k,
            "recall": np.where(n_rel > 0, n_hits / np.maximum(n_rel, 1), 0.0),
            "map": np.where(n_rel > 0, ap_num / np.maximum(np.minimum(n_rel, k), 1), 0.0),
        }


def evaluate_factors(
    user_vectors: np.ndarray,
    job_matrix: np.ndarray,
    seen: sp.csr_matrix,
    held: sp.csr_matrix,
    k: int,
    excluded: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean metrics at k over the rows that have held-out jobs: user_vectors[i] scores every job, seen[i] is
    hidden, held[i] is what should come back. All three are aligned by row."""
    return _evaluate(lambda rows: user_vectors[rows] @ job_matrix.T, seen, held, k, excluded)


def evaluate_popularity(
    users_per_job: np.ndarray, seen: sp.csr_matrix, held: sp.csr_matrix, k: int, excluded: np.ndarray | None = None
) -> dict[str, float]:
    """The same metrics for the baseline that shows everyone the jobs most users interacted with.

    A user's k best unseen jobs by popularity lie among the k + (jobs they have seen) most popular allowed jobs,
    so only that many columns are scored (in index order, which keeps the tie rule), not the whole catalog."""
    pop = np.asarray(users_per_job, dtype=np.float64)
    order = np.lexsort((np.arange(len(pop)), -pop))
    if excluded is not None:
        order = order[~excluded[order]]
    has_held = np.diff(held.indptr) > 0
    most_seen = int(np.diff(seen.indptr)[has_held].max()) if has_held.any() else 0
    columns = np.sort(order[: k + most_seen])
    sub = pop[columns]
    return _evaluate(lambda rows: np.tile(sub, (len(rows), 1)), seen, held, k, None, columns)


def _evaluate(
    score_block, seen: sp.csr_matrix, held: sp.csr_matrix, k: int, excluded, columns: np.ndarray | None = None
) -> dict[str, float]:
    """`score_block(rows)` scores every job (or only `columns`, ascending job indices) for those rows."""
    has_held = np.flatnonzero(np.diff(held.indptr) > 0)
    seen, held = seen[has_held], held[has_held]
    if columns is not None:
        seen = seen[:, columns]
    totals = dict.fromkeys(METRICS, 0.0)
    n = len(has_held)
    block = rows_per_block(held.shape[1] if columns is None else len(columns))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        # a fresh block in the factors' precision: top_k_of_scores writes -inf into it
        scores = np.array(score_block(has_held[lo:hi]))
        ranked = top_k_of_scores(scores, seen[lo:hi], k, excluded)
        if columns is not None:
            ranked = np.where(ranked >= 0, columns[np.maximum(ranked, 0)], -1)
        for name, values in metrics_of_ranked(ranked, held[lo:hi], k).items():
            totals[name] += float(values.sum())
    out = {name: (totals[name] / n if n else float("nan")) for name in METRICS}
    out["users"] = n
    return out
