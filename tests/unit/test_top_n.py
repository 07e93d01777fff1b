"""Top-N selection against a brute-force ranking worked out independently."""

from __future__ import annotations

import numpy as np

from batch.top_n import top_n_unseen


def test_small_case_worked_by_hand() -> None:
    # one user x = (1, 0): the score of each item is its first coordinate
    items = np.array([[0.1, 9], [0.9, 0], [0.5, 1], [0.7, 5], [0.3, 2]])
    [(idx, scores)] = top_n_unseen(np.array([[1.0, 0.0]]), items, [np.array([1])], 3)
    # item 1 (0.9) is seen, so: item 3 (0.7), item 2 (0.5), item 4 (0.3)
    assert idx.tolist() == [3, 2, 4]
    assert np.allclose(scores, [0.7, 0.5, 0.3])


def test_matches_brute_force_on_random_factors() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(40, 8)), rng.normal(size=(300, 8))
    seen = [rng.choice(300, size=rng.integers(0, 50), replace=False) for _ in range(40)]
    result = top_n_unseen(users, items, seen, 10)
    for u in range(40):
        ranking = sorted((i for i in range(300) if i not in set(seen[u])), key=lambda i: -float(users[u] @ items[i]))
        assert result[u][0].tolist() == ranking[:10]


def test_user_who_saw_almost_everything_gets_what_is_left() -> None:
    items = np.eye(4)
    [(idx, _)] = top_n_unseen(np.ones((1, 4)), items, [np.array([0, 1, 3])], 10)
    assert idx.tolist() == [2]
    [(idx, _)] = top_n_unseen(np.ones((1, 4)), items, [np.arange(4)], 10)
    assert idx.tolist() == []


def test_ties_break_by_lower_index() -> None:
    [(idx, _)] = top_n_unseen(np.ones((1, 1)), np.ones((6, 1)), [np.array([], dtype=np.int64)], 3)
    assert idx.tolist() == [0, 1, 2]
