"""Fold-in against an independent solve of the full normal equations, written from the paper's matrix form."""

from __future__ import annotations

import numpy as np
import pytest

from jobrec.batch.core import fold_in
from jobrec.batch.core.fold_in import fold_in_user, fold_in_users, gramian


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


def random_histories(
    rng: np.random.Generator, n_jobs: int, lengths: list[int]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Distinct job rows per user, with strengths 1-5 and, now and then, a zero, negative or NaN strength (which
    is no rating at all)."""
    rows = [rng.choice(n_jobs, size=n, replace=False) for n in lengths]
    ratings = []
    for r in rows:
        strengths = rng.integers(1, 6, size=len(r)).astype(float) * rng.uniform(0.5, 1.5, size=len(r))
        odd = rng.random(len(r)) < 0.1
        strengths[odd] = rng.choice([0.0, -1.0, np.nan], size=int(odd.sum()))
        ratings.append(strengths)
    return rows, ratings


def assert_close_vectors(ours: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Each user's vector within rtol of the expected one, relative to its norm (zero vectors exactly)."""
    assert ours.shape == expected.shape
    for mine, theirs in zip(ours, expected, strict=True):
        assert np.linalg.norm(mine - theirs) <= rtol * np.linalg.norm(theirs), (mine, theirs)


@pytest.mark.parametrize("rank", [1, 8, 32])
@pytest.mark.parametrize("reg_scaling", ["count", "none"])
def test_batched_fold_in_matches_one_by_one_and_the_dense_normal_equations(rank: int, reg_scaling: str) -> None:
    rng = np.random.default_rng(rank)
    n_jobs = 400
    y = rng.normal(scale=0.3, size=(n_jobs, rank))
    # every kind of history: none, a single job, a few, lengths on both sides of each power of two, very long ones
    lengths = [0, 1, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 50, 64, 65, 200, 399] + list(rng.integers(1, 60, 40))
    rows, ratings = random_histories(rng, n_jobs, [int(n) for n in rng.permutation(lengths)])
    alpha, reg = 7.5, 0.05
    ours = fold_in_users(gramian(y), y, rows, ratings, alpha, reg, reg_scaling)

    one_by_one = np.array(
        [fold_in_user(gramian(y), y[r], s, alpha, reg, reg_scaling) for r, s in zip(rows, ratings, strict=True)]
    )
    assert_close_vectors(ours, one_by_one, 1e-9)

    dense = []
    for r, s in zip(rows, ratings, strict=True):
        r_row = np.zeros(n_jobs)
        keep = s > 0
        r_row[r[keep]] = s[keep]
        count = int(keep.sum())
        lam = reg * count if reg_scaling == "count" else reg
        # the paper's matrix form over all 400 jobs; a user with no positive rating has p(u) = 0, so x_u = 0
        dense.append(normal_equations_solution(y, r_row, alpha, lam) if count else np.zeros(rank))
    assert_close_vectors(ours, np.array(dense), 1e-8)


def test_users_without_a_positive_rating_get_zero_vectors_among_others() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=(20, 4))
    rows = [np.array([], dtype=np.int64), np.array([1, 2]), np.array([3, 4]), np.array([5])]
    ratings = [np.array([]), np.array([0.0, -2.0]), np.array([1.0, 2.0]), np.array([np.nan])]
    out = fold_in_users(gramian(y), y, rows, ratings, 10.0, 0.1)
    assert out.shape == (4, 4)
    assert not out[[0, 1, 3]].any()
    assert np.allclose(out[2], fold_in_user(gramian(y), y[[3, 4]], np.array([1.0, 2.0]), 10.0, 0.1), rtol=1e-12)


def test_no_users_gives_an_empty_matrix_of_the_rank() -> None:
    y = np.ones((3, 5))
    assert fold_in_users(gramian(y), y, [], [], 1.0, 0.1).shape == (0, 5)


def test_a_rating_per_row_is_required() -> None:
    y = np.ones((3, 2))
    with pytest.raises(ValueError, match="one rating per row"):
        fold_in_users(gramian(y), y, [np.array([0, 1])], [np.array([1.0])], 1.0, 0.1)


@pytest.mark.parametrize("chunk_bytes", [1, 4096, 1 << 30])
def test_the_chunking_does_not_change_the_vectors(chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # one user per chunk, a few, and everyone of a length class in one stack: the same vectors each time
    monkeypatch.setattr(fold_in, "_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(3)
    y = rng.normal(scale=0.3, size=(120, 6))
    rows, ratings = random_histories(rng, 120, [int(n) for n in rng.integers(0, 40, 150)])
    ours = fold_in_users(gramian(y), y, rows, ratings, 4.0, 0.2, "none")
    expected = [fold_in_user(gramian(y), y[r], s, 4.0, 0.2, "none") for r, s in zip(rows, ratings, strict=True)]
    assert_close_vectors(ours, np.array(expected), 1e-9)
