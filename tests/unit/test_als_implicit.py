"""The implicit engine: fold-in of a user's unchanged history reproduces the trained vector (the model's last step
is an exact user solve), and it learns a planted block structure."""

from __future__ import annotations

import numpy as np

from jobrec.batch.core.als_implicit import ImplicitAls, train_implicit
from jobrec.batch.core.fold_in import fold_in_user, gramian
from jobrec.batch.core.interaction_matrix import build_matrix, confidence_matrix, rating_matrix
from jobrec.batch.core.params import AlsParams


def _blocks(seed: int = 0):
    """Two groups of 40 users and 30 jobs; each user touches 8 jobs of their own group (counts 1-20)."""
    rng = np.random.default_rng(seed)
    users, jobs, counts = [], [], []
    for u in range(80):
        group = u // 40
        for j in rng.choice(30, size=8, replace=False):
            users.append(f"u{u:02d}")
            jobs.append(f"g{group}-j{j:02d}")
            counts.append(float(rng.integers(1, 21)))
    return build_matrix(np.array(users), np.array(jobs), np.array(counts))


def test_fold_in_reproduces_the_trained_user_vectors_in_every_confidence_form() -> None:
    m = _blocks()
    for form in ("linear", "log", "binary"):
        params = AlsParams(rank=8, max_iter=6, reg_param=0.5, alpha=3.0, seed=1, confidence=form, epsilon=2.0)
        users, jobs, recorded = train_implicit(params, confidence_matrix(m, params))
        assert recorded.engine == "implicit" and recorded.reg_scaling == "none"
        r = rating_matrix(m, recorded)
        yty = gramian(jobs)
        for u in range(0, m.n_users, 7):
            row = slice(r.indptr[u], r.indptr[u + 1])
            x = fold_in_user(
                yty,
                jobs[r.indices[row]].astype(np.float64),
                r.data[row],
                recorded.alpha,
                recorded.reg_param,
                recorded.reg_scaling,
            )
            np.testing.assert_allclose(x, users[u], rtol=2e-4, atol=2e-5 * np.abs(users[u]).max())


def test_the_count_scaled_convention_would_not_match() -> None:
    """The check above can fail: with Spark's count-scaled lambda the fold-in misses the implicit vector."""
    m = _blocks()
    params = AlsParams(rank=8, max_iter=6, reg_param=0.5, alpha=3.0, seed=1)
    users, jobs, recorded = train_implicit(params, confidence_matrix(m, params))
    r = rating_matrix(m, recorded)
    row = slice(r.indptr[0], r.indptr[1])
    x = fold_in_user(gramian(jobs), jobs[r.indices[row]], r.data[row], recorded.alpha, recorded.reg_param, "count")
    assert np.linalg.norm(x - users[0]) > 1e-2 * np.linalg.norm(users[0])


def test_a_user_ranks_their_own_group_first() -> None:
    m = _blocks()
    params = AlsParams(rank=4, max_iter=10, reg_param=0.1, alpha=5.0, seed=2, confidence="binary")
    users, jobs, _ = train_implicit(params, confidence_matrix(m, params))
    group_of_job = np.array([int(j[1]) for j in m.job_ids])
    for u in range(m.n_users):
        top = np.argsort(-(jobs @ users[u]))[:15]
        assert (group_of_job[top] == u // 40).mean() >= 0.9


def test_training_in_steps_equals_training_at_once() -> None:
    m = _blocks()
    params = AlsParams(rank=4, max_iter=6, reg_param=0.1, alpha=5.0, seed=3)
    c = confidence_matrix(m, params)
    once = ImplicitAls(params, c)
    once.fit_more(6)
    steps = ImplicitAls(params, c)
    steps.fit_more(2)
    steps.fit_more(4)
    np.testing.assert_allclose(once.job_factors(), steps.job_factors(), rtol=1e-5, atol=1e-6)
