"""Building the interaction matrix, splitting it and sampling users: checked against answers worked out by hand."""

from __future__ import annotations

import numpy as np

from jobrec.batch.core.interaction_matrix import build_matrix, confidence_matrix, holdout_mask, sample_users
from jobrec.batch.core.params import AlsParams


def test_repeated_pairs_add_up_and_the_newest_time_wins() -> None:
    m = build_matrix(
        np.array(["b", "a", "b", "a", "c"]),
        np.array(["j2", "j1", "j2", "j9", "j1"]),
        np.array([1.0, 2.0, 3.0, 0.0, -1.0]),  # a zero and a negative strength are no interaction
        np.array([5.0, 1.0, 2.0, 0.0, 0.0]),
    )
    assert m.user_ids.tolist() == ["a", "b"] and m.job_ids.tolist() == ["j1", "j2"]
    dense = m.strength.toarray()
    assert dense.tolist() == [[2.0, 0.0], [0.0, 4.0]]
    assert m.age_days.tolist() == [1.0, 2.0]  # b/j2: the newer of 5 and 2 days
    assert m.users_per_job().tolist() == [1, 1]


def test_confidence_is_one_plus_alpha_r_in_each_form() -> None:
    m = build_matrix(np.array(["u", "u"]), np.array(["a", "b"]), np.array([1.0, 9.0]))
    base = AlsParams(rank=2, max_iter=1, reg_param=0.1, alpha=2.0, seed=0, epsilon=3.0)
    from dataclasses import replace

    assert confidence_matrix(m, base).data.tolist() == [3.0, 19.0]
    assert confidence_matrix(m, replace(base, confidence="binary")).data.tolist() == [3.0, 3.0]
    log_form = confidence_matrix(m, replace(base, confidence="log")).data
    np.testing.assert_allclose(log_form, [1 + 2 * np.log(1 + 1 / 3), 1 + 2 * np.log(1 + 9 / 3)], rtol=1e-6)


def test_holdout_takes_a_share_of_each_user_never_all_and_keeps_the_index_space() -> None:
    users = np.repeat([f"u{i}" for i in range(50)], 10).tolist() + ["solo"]
    jobs = [f"j{i}" for _ in range(50) for i in range(10)] + ["j0"]
    m = build_matrix(np.array(users), np.array(jobs), np.ones(len(users)))
    held = holdout_mask(m, 0.2, seed=3)
    train, validation = m.select(~held), m.select(held)
    per_user = np.diff(validation.strength.indptr)
    solo = m.user_ids.tolist().index("solo")
    assert per_user[solo] == 0  # a user with one pair keeps it
    assert all(per_user[u] == 2 for u in range(m.n_users) if u != solo)
    assert train.nnz + validation.nnz == m.nnz and train.strength.shape == m.strength.shape
    assert (train.strength.multiply(validation.strength)).nnz == 0
    # fixed by the seed
    assert (holdout_mask(m, 0.2, seed=3) == held).all() and not (holdout_mask(m, 0.2, seed=4) == held).all()


def test_holdout_only_touches_eligible_users() -> None:
    m = build_matrix(np.array(["a"] * 5 + ["b"] * 5), np.array(list("vwxyz") * 2), np.ones(10))
    held = holdout_mask(m, 0.4, seed=0, eligible=np.array([True, False]))
    assert held[:5].sum() == 2 and held[5:].sum() == 0


def test_user_sample_is_stable_as_other_users_arrive() -> None:
    ids = np.array([f"user-{i}" for i in range(1000)], dtype=object)
    first = set(ids[sample_users(ids, 100, seed=1)])
    grown = np.concatenate([ids, np.array([f"late-{i}" for i in range(1000)], dtype=object)])
    second = set(grown[sample_users(grown, 200, seed=1)])
    assert len(first) == 100 and len(second) == 200
    # the users of the smaller sample who are still among the 200 smallest hashes: all of them, since a hash
    # does not depend on the other ids
    assert first <= set(grown[sample_users(grown, 2000, seed=1)])
    assert len(first & second) >= 50
    assert sample_users(ids, 5000, seed=1).all()
