"""top_k_sorted against a stable sort of each whole row: narrow and wide rows, heavy ties at the boundary, rows
with few allowed scores, float32, k beyond the row."""

from __future__ import annotations

import numpy as np
import pytest

from jobrec.batch.core.top_n import top_k_sorted


def _reference(scores: np.ndarray, k: int) -> np.ndarray:
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for r, row in enumerate(scores):
        order = [i for i in np.argsort(-row, kind="stable") if np.isfinite(row[i])][:k]
        out[r, : len(order)] = order
    return out


@pytest.mark.parametrize("n_cols", [7, 500, 4133])
@pytest.mark.parametrize("kind", ["normal", "ties", "few_allowed", "float32"])
def test_matches_a_stable_sort_of_each_row(n_cols: int, kind: str) -> None:
    rng = np.random.default_rng(n_cols)
    scores = rng.normal(size=(60, n_cols))
    if kind == "ties":
        scores = rng.integers(0, 3, size=(60, n_cols)).astype(float)  # thousands of equal scores per row
    if kind == "few_allowed":
        scores[rng.random(scores.shape) < 0.995] = -np.inf
        scores[0] = -np.inf  # a row with nothing allowed
    if kind == "float32":
        scores = scores.astype(np.float32)
    for k in (1, 10, 40):
        got = top_k_sorted(scores.copy(), k)
        np.testing.assert_array_equal(got, _reference(scores, k), err_msg=f"k={k}")


def test_k_beyond_the_row_pads() -> None:
    assert top_k_sorted(np.array([[0.5, 2.0, -np.inf]]), 5).tolist() == [[1, 0, -1, -1, -1]]
