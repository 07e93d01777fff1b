"""Ranking metrics at k, for a model and for the popularity baseline on the same split.

Inputs are per user: the ranked item indices the recommender returned (seen items already removed), the set of
held-out relevant items, and for AUC and percentile rank the scores of every candidate item. Pure numpy; each
function is checked against small cases worked out by hand in tests/unit/test_metrics.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Share of the top k that is relevant (k in the denominator, even if fewer were returned)."""
    return sum(1 for i in ranked[:k] if i in relevant) / k


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Share of the relevant items found in the top k."""
    return sum(1 for i in ranked[:k] if i in relevant) / len(relevant) if relevant else 0.0


def average_precision_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Mean of precision@i over the ranks i of the hits in the top k, divided by min(|relevant|, k)."""
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, item in enumerate(ranked[:k]):
        if item in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / min(len(relevant), k)


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """DCG of the top k (gain 1 per relevant item, discount log2(rank + 1)) over the best possible DCG."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / np.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(relevant))))
    return float(dcg / ideal)


def _candidates(n: int, excluded: set[int]) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    if excluded:
        keep[np.fromiter(excluded, dtype=np.int64, count=len(excluded))] = False
    return np.flatnonzero(keep)


def auc(scores: np.ndarray, relevant: set[int], excluded: set[int]) -> float:
    """Probability that a relevant item outscores a non-relevant one, over all items not in `excluded`
    (ties count one half)."""
    candidates = _candidates(len(scores), excluded)
    is_pos = np.isin(candidates, np.fromiter(relevant, dtype=np.int64, count=len(relevant)))
    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # rank-sum (Mann-Whitney U) with the average rank for tied scores
    _, inverse, counts = np.unique(scores[candidates], return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    u = average_rank[inverse][is_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def percentile_ranks(scores: np.ndarray, excluded: set[int]) -> dict[int, float]:
    """Each candidate item's place in the user's ranking as a percentile: 0 at the top, 1 at the bottom
    (ties broken by the lower index)."""
    candidates = _candidates(len(scores), excluded)
    order = candidates[np.lexsort((candidates, -scores[candidates]))]
    n = len(order)
    pct = np.arange(n) / (n - 1) if n > 1 else np.zeros(n)
    return dict(zip(order.tolist(), pct.tolist(), strict=True))


def expected_percentile_rank(per_user: Sequence[tuple[dict[int, float], dict[int, float]]]) -> float:
    """Hu, Koren and Volinsky's expected percentile ranking: sum r_ui * rank_ui / sum r_ui over held-out pairs,
    where rank_ui is the percentile rank of item i for user u. 0.5 is random; lower is better.
    `per_user` holds (held-out item -> r, item -> percentile rank)."""
    num = sum(r * ranks[i] for held, ranks in per_user for i, r in held.items() if i in ranks)
    den = sum(r for held, ranks in per_user for i, r in held.items() if i in ranks)
    return num / den if den else float("nan")


def catalog_coverage(lists: Sequence[Sequence[int]], n_items: int, k: int) -> float:
    """Share of the catalog that appears in at least one user's top k."""
    return len({i for lst in lists for i in lst[:k]}) / n_items if n_items else 0.0
