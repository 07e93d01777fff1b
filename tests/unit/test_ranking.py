"""The vectorised ranking metrics against the per-user reference implementation (jobrec.batch.core.metrics, itself
checked against hand-worked cases in test_metrics.py) on random data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from jobrec.batch.core import metrics
from jobrec.batch.core.ranking import evaluate_factors, evaluate_popularity, top_k_of_scores


def _random_split(rng, n_users: int, n_jobs: int, density: float):
    seen = sp.random(n_users, n_jobs, density=density, random_state=rng, format="csr")
    held = sp.random(n_users, n_jobs, density=density, random_state=rng, format="csr")
    held = held - held.multiply(seen > 0)  # a held-out job is never a seen one
    held.eliminate_zeros()
    return seen.tocsr(), held.tocsr()


def _reference(scores: np.ndarray, seen: sp.csr_matrix, held: sp.csr_matrix, k: int) -> dict[str, float]:
    out = {"ndcg": [], "precision": [], "recall": [], "map": []}
    for u in range(scores.shape[0]):
        relevant = set(held[u].indices.tolist())
        if not relevant:
            continue
        hidden = set(seen[u].indices.tolist())
        # ties by the lower index: a stable sort of the negated scores
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if i not in hidden][:k]
        out["ndcg"].append(metrics.ndcg_at_k(ranked, relevant, k))
        out["precision"].append(metrics.precision_at_k(ranked, relevant, k))
        out["recall"].append(metrics.recall_at_k(ranked, relevant, k))
        out["map"].append(metrics.average_precision_at_k(ranked, relevant, k))
    return {name: float(np.mean(v)) for name, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_factor_metrics_match_the_per_user_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_jobs, rank, k = 300, 80, 6, 10
    seen, held = _random_split(rng, n_users, n_jobs, 0.08)
    users, jobs = rng.normal(size=(n_users, rank)), rng.normal(size=(n_jobs, rank))
    got = evaluate_factors(users, jobs, seen, held, k)
    want = _reference(users @ jobs.T, seen, held, k)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert got["users"] == sum(1 for u in range(n_users) if held[u].nnz)


@pytest.mark.parametrize("n_jobs", [50, 3000])
def test_popularity_metrics_match_the_reference_with_ties_broken_by_index(n_jobs: int) -> None:
    rng = np.random.default_rng(7)
    # few jobs seen per user of many: only a prefix of the popularity order is scored, which must not matter
    seen, held = _random_split(rng, 200, n_jobs, 5.0 / n_jobs)
    # many equal counts: the tie-break decides the lists
    counts = rng.integers(0, 4, size=n_jobs).astype(float)
    got = evaluate_popularity(counts, seen, held, 5)
    want = _reference(np.tile(counts, (200, 1)), seen, held, 5)
    assert got["users"] > 100
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_top_k_pads_a_user_who_has_seen_almost_everything() -> None:
    scores = np.array([[3.0, 2.0, 1.0, 0.5]])
    seen = sp.csr_matrix(np.array([[1, 1, 0, 1]]))
    assert top_k_of_scores(scores, seen, 3).tolist() == [[2, -1, -1]]


def test_top_k_hides_excluded_jobs_and_breaks_ties_by_index() -> None:
    scores = np.array([[1.0, 5.0, 5.0, 5.0, 0.0]])
    seen = sp.csr_matrix((1, 5))
    excluded = np.array([False, False, True, False, False])
    assert top_k_of_scores(scores, seen, 3, excluded).tolist() == [[1, 3, 0]]
