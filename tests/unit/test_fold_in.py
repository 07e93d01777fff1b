"""Fold-in against an independent solve of the full normal equations, written from the paper's matrix form."""

from __future__ import annotations

import numpy as np

from jobrec.batch.core.fold_in import fold_in_user, gramian


def normal_equations_solution(y: np.ndarray, r_row: np.ndarray, alpha: float, lam: float) -> np.ndarray:
    """x_u = (Y^T C_u Y + lambda I)^-1 Y^T C_u p(u), with the dense diagonal C_u over every job."""
    c = np.diag(1.0 + alpha * r_row)
    p = (r_row > 0).astype(float)
    return np.linalg.solve(y.T @ c @ y + lam * np.eye(y.shape[1]), y.T @ c @ p)


def test_matches_the_dense_normal_equations() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(scale=0.3, size=(200, 12))
    r_row = np.zeros(200)
    history = rng.choice(200, size=15, replace=False)
    r_row[history] = rng.integers(1, 6, size=15)
    alpha, reg = 10.0, 0.1
    ours = fold_in_user(gramian(y), y[history], r_row[history], alpha, reg)
    # Spark's regularisation is regParam times the number of positive ratings
    expected = normal_equations_solution(y, r_row, alpha, reg * 15)
    assert np.allclose(ours, expected, rtol=1e-4, atol=1e-10)


def test_empty_history_gives_zero_vector() -> None:
    y = np.ones((3, 2))
    assert fold_in_user(gramian(y), y[:0], np.array([]), 1.0, 0.1).tolist() == [0.0, 0.0]
