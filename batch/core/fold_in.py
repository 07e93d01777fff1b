"""Fold-in: re-solve one user's vector against fixed job factors, exactly as one ALS user step.

Spark MLlib's implicit ALS (and Hu, Koren, Volinsky 2008) solves, for user u with history H (jobs with r > 0):
    x_u = (Y^T Y + Y^T (C_u - I) Y + lambda_u I)^-1  Y^T C_u p(u)
where c_ui = 1 + alpha r_ui and p_ui = 1 on H, 0 elsewhere. Only H contributes beyond Y^T Y:
    Y^T (C_u - I) Y = sum_{i in H} alpha r_ui y_i y_i^T,      Y^T C_u p(u) = sum_{i in H} (1 + alpha r_ui) y_i
Spark scales the regularisation by the number of positive ratings (lambda_u = regParam * |H|, reg_scaling
"count"); the implicit library does not (lambda_u = regParam, reg_scaling "none"). Fold-in uses the convention the
model was trained with, or a fold-in vector would not match the trained one. Y^T Y is computed once per model
version.
Pure numpy: no Spark, no Kafka.
"""

from __future__ import annotations

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
