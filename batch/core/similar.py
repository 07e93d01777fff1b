"""Similar jobs: the nearest jobs to one job by the cosine of their ALS factors, best first.

Two jobs whose factors point the same way are clicked by the same users (the factors are what the model learned of
each job from who interacted with it), so the cosine of the job factors is the "jobs like this one" measure; the
length of a factor grows with a job's popularity and is divided out. Hidden jobs (closed, expired) are left out,
the job itself too, and a category may fill at most `max_per_category` places (as in every list). Pure numpy: no
Spark, no Kafka.
"""

from __future__ import annotations

import numpy as np

from jobrec.batch.core.top_n import capped_top


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (float64); a zero row stays zero (its cosine with anything is 0)."""
    m = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)


def similar_items(
    unit: np.ndarray,
    item: int,
    k: int,
    excluded: np.ndarray | None = None,
    categories: np.ndarray | None = None,
    max_per_category: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosines) of the `k` items nearest to row `item` of `unit` (rows of length 1 or 0, `unit_rows`):
    highest cosine first, ties by the lower index; never `item` itself nor an `excluded` one (a boolean mask);
    with `categories` (an int code per item) and `max_per_category` > 0 at most that many of one category.
    Fewer than `k` when fewer items are allowed."""
    scores = unit @ unit[item]
    if excluded is not None:
        scores[excluded] = -np.inf
    scores[item] = -np.inf
    best = capped_top(scores, k, categories, max_per_category)
    return best, scores[best]
