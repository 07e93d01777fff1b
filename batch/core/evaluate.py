"""Evaluate a factor model and the popularity baseline on the same held-out split, at k.

Scores are computed on the driver with numpy: fine for evaluation samples (thousands of users); the publish
path scores all users on the executors instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from jobrec.batch.core import metrics
from jobrec.batch.core.top_n import capped_top


def _summarise(
    ranked: list[list[int]],
    relevant: list[set[int]],
    score_rows: list[np.ndarray],
    seen: list[set[int]],
    held_strength: list[dict[int, float]],
    n_items: int,
    k: int,
) -> dict[str, float]:
    out = {
        "precision": float(
            np.mean([metrics.precision_at_k(r, rel, k) for r, rel in zip(ranked, relevant, strict=True)])
        ),
        "recall": float(np.mean([metrics.recall_at_k(r, rel, k) for r, rel in zip(ranked, relevant, strict=True)])),
        "map": float(
            np.mean([metrics.average_precision_at_k(r, rel, k) for r, rel in zip(ranked, relevant, strict=True)])
        ),
        "ndcg": float(np.mean([metrics.ndcg_at_k(r, rel, k) for r, rel in zip(ranked, relevant, strict=True)])),
        "coverage": metrics.catalog_coverage(ranked, n_items, k),
    }
    aucs = [metrics.auc(s, rel, sn) for s, rel, sn in zip(score_rows, relevant, seen, strict=True)]
    out["auc"] = float(np.nanmean(aucs)) if aucs else float("nan")
    per_user = [
        (held, metrics.percentile_ranks(s, sn)) for s, held, sn in zip(score_rows, held_strength, seen, strict=True)
    ]
    out["mpr"] = metrics.expected_percentile_rank(per_user)
    out["users"] = len(ranked)
    return out


def evaluate_rankings(
    score_fn,
    job_ids: Sequence[str],
    train: Mapping[str, set[str]],
    held: Mapping[str, Mapping[str, float]],
    k: int,
    users: Sequence[str],
    categories: np.ndarray | None = None,
    max_per_category: int = 0,
) -> dict[str, float]:
    """score_fn(user) -> scores over job_ids; seen (train) jobs are never ranked; held-out jobs unknown to the
    catalog still count as relevant (and are missed). With `categories` (an int code per job) and
    `max_per_category` > 0, each list is the best one under that cap, as the published lists are."""
    position = {j: i for i, j in enumerate(job_ids)}
    ranked, relevant, rows, seen_sets, held_strength = [], [], [], [], []
    for user in users:
        scores = np.asarray(score_fn(user), dtype=np.float64)
        seen = {position[j] for j in train.get(user, ()) if j in position}
        # a held-out job the model never saw is still relevant: a distinct negative index that no ranking has
        rel = {position.get(j, -1 - n) for n, j in enumerate(held[user])}
        if categories is not None and max_per_category > 0:
            row = scores.copy()
            row[list(seen)] = -np.inf
            order = capped_top(row, k, categories, max_per_category).tolist()
        else:
            order = [i for i in np.argsort(-scores, kind="stable") if i not in seen][:k]
        ranked.append(order)
        relevant.append(rel)
        rows.append(scores)
        seen_sets.append(seen)
        held_strength.append({position[j]: float(r) for j, r in held[user].items() if j in position})
    return _summarise(ranked, relevant, rows, seen_sets, held_strength, len(job_ids), k)


def evaluate_model(
    user_vectors: Mapping[str, np.ndarray],
    job_ids: Sequence[str],
    job_matrix: np.ndarray,
    train: Mapping[str, set[str]],
    held: Mapping[str, Mapping[str, float]],
    k: int,
    categories: np.ndarray | None = None,
    max_per_category: int = 0,
) -> dict[str, float]:
    users = [u for u in sorted(held) if u in user_vectors]
    return evaluate_rankings(
        lambda u: job_matrix @ user_vectors[u], job_ids, train, held, k, users, categories, max_per_category
    )


def popularity_scores(train: Mapping[str, set[str]], job_ids: Sequence[str]) -> np.ndarray:
    """Number of users who interacted with each job (ties broken by catalog order)."""
    counts = Counter(j for jobs in train.values() for j in jobs)
    return popularity_from_counts(np.array([counts.get(j, 0) for j in job_ids], dtype=np.float64))


def popularity_from_counts(users_per_job: np.ndarray) -> np.ndarray:
    """Scores from users per job, in catalog order: a tie goes to the job that comes first."""
    n = len(users_per_job)
    return np.asarray(users_per_job, dtype=np.float64) + (n - np.arange(n)) / (n + 1) / 1e6


def evaluate_popularity(
    job_ids: Sequence[str],
    train: Mapping[str, set[str]],
    held: Mapping[str, Mapping[str, float]],
    k: int,
    users: Sequence[str] | None = None,
) -> dict[str, float]:
    pop = popularity_scores(train, job_ids)
    return evaluate_rankings(lambda u: pop, job_ids, train, held, k, users or sorted(held))
