"""Top-N selection for a block of users: score every job, hide the jobs each user has seen, keep the best N.

Pure numpy, used by the batch publisher (one block of users per Arrow batch) and by tests without a JVM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_n_unseen(
    user_vectors: np.ndarray, item_matrix: np.ndarray, seen: Sequence[np.ndarray], n: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each user (row of `user_vectors`), the indices and scores of the best `n` items not in `seen[i]`.

    Scores are dot products x_u . y_i. A user who has seen all but m < n items gets m. Ties break by the
    lower item index, so the result is deterministic.
    """
    if user_vectors.shape[0] == 0:
        return []
    # asarray, not astype: no copy of the (large) item matrix when it is float64 already
    scores = np.asarray(user_vectors, dtype=np.float64) @ np.asarray(item_matrix, dtype=np.float64).T
    n_items = item_matrix.shape[0]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for i, row in enumerate(scores):
        if len(seen[i]):
            row[np.asarray(seen[i], dtype=np.int64)] = -np.inf
        available = n_items - int(np.count_nonzero(np.isneginf(row)))
        k = min(n, available)
        if k <= 0:
            out.append((np.empty(0, dtype=np.int64), np.empty(0)))
            continue
        if k < n_items:
            candidates = np.argpartition(-row, k - 1)[:k]
        else:
            candidates = np.arange(n_items)
        # sort by score descending, then by index ascending
        order = np.lexsort((candidates, -row[candidates]))
        best = candidates[order][:k]
        out.append((best, row[best]))
    return out
