"""Top-N selection against a brute-force ranking worked out independently."""

from __future__ import annotations

import numpy as np

from jobrec.batch.core.top_n import capped_top, top_n_unseen


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


def _brute_force(user, items, seen, excluded, categories, cap, n):
    """Walk every item by score (then index) and take it unless hidden or its category is full."""
    ranking = sorted(range(len(items)), key=lambda i: (-float(user @ items[i]), i))
    taken, per = [], {}
    for i in ranking:
        if i in seen or excluded[i]:
            continue
        c = int(categories[i])
        if cap and c >= 0 and per.get(c, 0) >= cap:
            continue
        per[c] = per.get(c, 0) + 1
        taken.append(i)
        if len(taken) == n:
            break
    return taken


def test_excluded_items_and_category_cap_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    users, items = rng.normal(size=(30, 6)), rng.normal(size=(400, 6))
    seen = [rng.choice(400, size=rng.integers(0, 40), replace=False) for _ in range(30)]
    excluded = rng.random(400) < 0.2
    categories = rng.integers(-1, 5, size=400)  # -1: a job without a category is never capped
    for cap in (0, 1, 2, 3):
        result = top_n_unseen(users, items, seen, 10, excluded, categories, cap)
        for u in range(30):
            expected = _brute_force(users[u], items, set(seen[u].tolist()), excluded, categories, cap, 10)
            assert result[u][0].tolist() == expected, (cap, u)
            if cap:
                counts = np.bincount(categories[result[u][0]] + 1)
                assert counts[1:].max(initial=0) <= cap


def test_cap_widens_past_a_crowded_top() -> None:
    # the 60 best items are all category 0: with a cap of 2 the list needs items from far down the ranking
    scores = np.linspace(1, 0, 100)
    items = scores[:, None]
    categories = np.array([0] * 60 + [1] * 20 + [2] * 20)
    [(idx, _)] = top_n_unseen(np.ones((1, 1)), items, [np.array([], dtype=np.int64)], 6, None, categories, 2)
    assert idx.tolist() == [0, 1, 60, 61, 80, 81]
    # only 3 categories x 2: a list of 10 cannot be filled and stops at 6
    [(idx, _)] = top_n_unseen(np.ones((1, 1)), items, [np.array([], dtype=np.int64)], 10, None, categories, 2)
    assert len(idx) == 6


def test_excluded_items_are_never_listed() -> None:
    items = np.eye(5)
    excluded = np.array([True, False, True, False, False])
    [(idx, _)] = top_n_unseen(np.ones((1, 5)) + np.arange(5), items, [np.array([], dtype=np.int64)], 5, excluded)
    assert idx.tolist() == [4, 3, 1]


def test_capped_top_breaks_ties_at_the_boundary_by_lower_index() -> None:
    # popularity counts tie often; a partition alone would pick any of the tied jobs at the cut
    rng = np.random.default_rng(3)
    for _ in range(50):
        row = rng.integers(0, 4, size=300).astype(float)
        expected = sorted(range(300), key=lambda i: (-row[i], i))[:10]
        assert capped_top(row, 10, None, 0).tolist() == expected
