"""Top-N selection for a block of users: score every job, hide the jobs each user has seen and the jobs nobody
may be shown (closed, expired), keep the best N, at most `max_per_category` of one category.

Pure numpy, used by the batch publisher (one block of users per Arrow batch), the speed layer and tests
without a JVM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NO_CATEGORY = -1


def _best_in_order(row: np.ndarray, m: int) -> np.ndarray:
    """Indices of the `m` highest finite scores of `row`, by score descending, then index ascending."""
    n_items = row.shape[0]
    candidates = np.argpartition(-row, m - 1)[:m] if m < n_items else np.arange(n_items)
    order = np.lexsort((candidates, -row[candidates]))
    return candidates[order]


def capped_top(row: np.ndarray, n: int, categories: np.ndarray | None, max_per_category: int) -> np.ndarray:
    """The best `n` items of one scored row (-inf = not allowed), taking at most `max_per_category` per category.

    Greedy in score order, which is the best list under the cap. It looks at the top 4n first and widens only
    when one category crowds the top (rare), so the cap costs little.
    """
    available = int(np.count_nonzero(~np.isneginf(row)))
    if available == 0 or n <= 0:
        return np.empty(0, dtype=np.int64)
    if categories is None or max_per_category <= 0:
        return _best_in_order(row, min(n, available))
    m = min(available, 4 * n)
    while True:
        ordered = _best_in_order(row, m)
        taken: list[int] = []
        per_category: dict[int, int] = {}
        for i in ordered.tolist():
            c = int(categories[i])
            if c != NO_CATEGORY:
                if per_category.get(c, 0) >= max_per_category:
                    continue
                per_category[c] = per_category.get(c, 0) + 1
            taken.append(i)
            if len(taken) == n:
                break
        if len(taken) == n or m == available:
            return np.asarray(taken, dtype=np.int64)
        m = min(available, 4 * m)


def top_n_unseen(
    user_vectors: np.ndarray,
    item_matrix: np.ndarray,
    seen: Sequence[np.ndarray],
    n: int,
    excluded: np.ndarray | None = None,
    categories: np.ndarray | None = None,
    max_per_category: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each user (row of `user_vectors`), the indices and scores of the best `n` items not in `seen[i]`.

    Scores are dot products x_u . y_i. `excluded` (a boolean mask over items) hides items from every user;
    `categories` (an int code per item, NO_CATEGORY for none) with `max_per_category` > 0 caps each category.
    A user with fewer than n allowed items gets them all. Ties break by the lower item index (deterministic).
    """
    if user_vectors.shape[0] == 0:
        return []
    # asarray, not astype: no copy of the (large) item matrix when it is float64 already
    scores = np.asarray(user_vectors, dtype=np.float64) @ np.asarray(item_matrix, dtype=np.float64).T
    if excluded is not None and excluded.any():
        scores[:, excluded] = -np.inf
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for i, row in enumerate(scores):
        if len(seen[i]):
            row[np.asarray(seen[i], dtype=np.int64)] = -np.inf
        best = capped_top(row, n, categories, max_per_category)
        out.append((best, row[best]))
    return out
