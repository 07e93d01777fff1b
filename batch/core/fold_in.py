"""Fold-in: re-solve one user's vector against fixed job factors, exactly as one ALS user step.

Spark MLlib's implicit ALS (and Hu, Koren, Volinsky 2008) solves, for user u with history H (jobs with r > 0):
    x_u = (Y^T Y + Y^T (C_u - I) Y + lambda_u I)^-1  Y^T C_u p(u)
where c_ui = 1 + alpha r_ui and p_ui = 1 on H, 0 elsewhere. Only H contributes beyond Y^T Y:
    Y^T (C_u - I) Y = sum_{i in H} alpha r_ui y_i y_i^T,      Y^T C_u p(u) = sum_{i in H} (1 + alpha r_ui) y_i
Spark scales the regularisation by the number of positive ratings (lambda_u = regParam * |H|, reg_scaling
"count"); the implicit library does not (lambda_u = regParam, reg_scaling "none"). Fold-in uses the convention the
model was trained with, or a fold-in vector would not match the trained one. Y^T Y is computed once per model
version. `fold_in_users` solves a poll's users together, in stacked products and solves, with the same arithmetic.
Pure numpy: no Spark, no Kafka.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gramian(job_matrix: np.ndarray) -> np.ndarray:
    """Y^T Y of the job factors (rank x rank), in float64."""
    y = np.asarray(job_matrix, dtype=np.float64)
    return y.T @ y


def fold_in_user(
    yty: np.ndarray,
    history_vectors: np.ndarray,
    strengths: np.ndarray,
    alpha: float,
    reg_param: float,
    reg_scaling: str = "count",
) -> np.ndarray:
    """The user's vector from the factors of the jobs in their history and the strength r of each."""
    rank = yty.shape[0]
    positive = strengths > 0
    y = np.asarray(history_vectors[positive], dtype=np.float64)
    r = np.asarray(strengths[positive], dtype=np.float64)
    if len(r) == 0:
        return np.zeros(rank)
    c1 = alpha * r
    lam = reg_param * len(r) if reg_scaling == "count" else reg_param
    a = yty + (y.T * c1) @ y + lam * np.eye(rank)
    b = y.T @ (1.0 + c1)
    return np.linalg.solve(a, b)


# the working set of one chunk of fold_in_users (its systems, or its padded histories if longer): within a core's
# cache; a stack far larger measured slower than the one-by-one loop on a busy two-core machine
_CHUNK_BYTES = 1 << 19


def fold_in_users(
    yty: np.ndarray,
    job_matrix: np.ndarray,
    user_rows: Sequence[np.ndarray],
    ratings: Sequence[np.ndarray],
    alpha: float,
    reg_param: float,
    reg_scaling: str = "count",
) -> np.ndarray:
    """Many users' vectors at once (n_users x rank): user k's history is the rows `user_rows[k]` of `job_matrix`
    with strengths `ratings[k]`; row k is what `fold_in_user(yty, job_matrix[user_rows[k]], ratings[k], ...)` gives
    (zeros for a user without a positive strength).

    The same sums and solves, in stacks instead of one Python call each: users sorted by history length are cut
    into chunks (the longest history under twice the shortest, the stack about half a MiB), each chunk's histories
    are padded to its longest, one batched matrix product gives every user's sum_i alpha r_ui y_i y_i^T and one
    batched LAPACK solve their rank x rank systems. The arithmetic is fold_in_user's; the work is mostly BLAS and
    LAPACK, so the gain over the loop is its per-call overhead, large at small ranks and small at large ones.
    """
    rank, n_users = yty.shape[0], len(user_rows)
    out = np.zeros((n_users, rank))
    if n_users == 0:
        return out
    sizes = [len(r) for r in user_rows]
    if sizes != [len(r) for r in ratings]:
        raise ValueError("each user needs one rating per row")
    rows = np.concatenate(user_rows).astype(np.int64, copy=False)
    strengths = np.concatenate(ratings).astype(np.float64, copy=False)
    positive = strengths > 0  # as fold_in_user: NaN and non-positive strengths are not in the history
    owner = np.repeat(np.arange(n_users), sizes)[positive]
    rows, strengths = rows[positive], strengths[positive]
    lengths = np.bincount(owner, minlength=n_users)
    starts = np.cumsum(lengths) - lengths  # each user's entries are contiguous, in user order
    # users by history length, in chunks whose longest history is under twice the shortest (padding at most
    # doubles the product's work) and whose stack stays within _CHUNK_BYTES
    order = np.flatnonzero(lengths)[np.argsort(lengths[lengths > 0], kind="stable")]
    sorted_lengths = lengths[order]
    y_all = np.asarray(job_matrix, dtype=np.float64)
    begin = 0
    while begin < len(order):
        shortest = int(sorted_lengths[begin])
        per_chunk = max(1, _CHUNK_BYTES // (8 * rank * max(rank, 2 * shortest)))
        end = min(begin + per_chunk, int(np.searchsorted(sorted_lengths, 2 * shortest)))
        users, n_hist = order[begin:end], sorted_lengths[begin:end]
        begin = end
        n, width = len(users), int(n_hist[-1])
        # (n, width) padding of the histories: a padded slot repeats the user's last job with both weights zero, so
        # it adds exact zeros to either side (and a gather needs no scatter into a zeroed buffer)
        slots = np.arange(width)
        real = slots < n_hist[:, None]
        entry = starts[users, None] + np.minimum(slots, n_hist[:, None] - 1)
        y = y_all[rows[entry]]
        c1 = np.where(real, alpha * strengths[entry], 0.0)
        # yty + sum_i alpha r_ui y_i y_i^T + lambda_u I, summed in fold_in_user's order, in place
        a = np.matmul(np.swapaxes(y * c1[:, :, None], 1, 2), y)
        a += yty
        lam = reg_param * n_hist if reg_scaling == "count" else np.full(n, float(reg_param))
        a.reshape(n, rank * rank)[:, :: rank + 1] += lam[:, None]  # the diagonals, in place
        b = np.matmul(np.swapaxes(y, 1, 2), np.where(real, 1.0 + c1, 0.0)[:, :, None])
        out[users] = np.linalg.solve(a, b)[:, :, 0]
    return out
