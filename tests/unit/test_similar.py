"""Similar jobs by the cosine of job factors, without a JVM: planted groups, hidden jobs, the category cap."""

from __future__ import annotations

import numpy as np

from jobrec.batch.core.similar import capped_capacity, similar_items, unit_rows
from jobrec.batch.core.top_n import NO_CATEGORY

GROUPS, PER_GROUP, RANK = 4, 5, 8


def planted_factors(seed: int = 3) -> np.ndarray:
    """Four groups of five jobs: each group's factors are its own direction (an axis) plus a little noise, at
    lengths from 0.5 to 3 (popular and unpopular jobs). So the cosine of two jobs of one group is near 1 and of
    two groups near 0, whatever their lengths: a job's nearest four are its group."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(GROUPS):
        for _ in range(PER_GROUP):
            direction = np.zeros(RANK)
            direction[g] = 1.0
            rows.append(rng.uniform(0.5, 3.0) * (direction + rng.normal(scale=0.05, size=RANK)))
    return np.array(rows)


def group_of(job: int) -> int:
    return job // PER_GROUP


def test_the_neighbours_of_a_job_are_its_planted_group() -> None:
    unit = unit_rows(planted_factors())
    for job in range(GROUPS * PER_GROUP):
        best, scores = similar_items(unit, job, PER_GROUP - 1)
        assert {group_of(j) for j in best.tolist()} == {group_of(job)}, job
        assert job not in best.tolist()
        assert np.all(scores > 0.9) and np.all(np.diff(scores) <= 0)
        # the next one is of another group: far below
        wider, wider_scores = similar_items(unit, job, PER_GROUP)
        assert group_of(int(wider[-1])) != group_of(job) and wider_scores[-1] < 0.3


def test_scores_are_cosines_computed_independently() -> None:
    y = planted_factors()
    best, scores = similar_items(unit_rows(y), 7, 6)
    for j, s in zip(best.tolist(), scores.tolist(), strict=True):
        assert abs(s - y[7] @ y[j] / (np.linalg.norm(y[7]) * np.linalg.norm(y[j]))) < 1e-12


def test_a_hidden_job_is_never_returned_even_when_it_is_the_nearest() -> None:
    unit = unit_rows(planted_factors())
    nearest = int(similar_items(unit, 0, 1)[0][0])
    excluded = np.zeros(GROUPS * PER_GROUP, dtype=bool)
    excluded[nearest] = True
    for k in (1, 4, 19):
        best, _ = similar_items(unit, 0, k, excluded)
        assert nearest not in best.tolist()
    # every other job is still there when k asks for all of them
    assert len(similar_items(unit, 0, 100, excluded)[0]) == GROUPS * PER_GROUP - 2


def test_the_category_cap_gives_the_places_to_the_next_best() -> None:
    unit = unit_rows(planted_factors())
    # jobs 1 and 2 of job 0's group are "IT" (code 0), the rest of its group has no category, group 1 is "HR"
    categories = np.full(GROUPS * PER_GROUP, NO_CATEGORY)
    categories[[1, 2]] = 0
    categories[PER_GROUP : 2 * PER_GROUP] = 1
    uncapped, _ = similar_items(unit, 0, 4, None, categories, 0)
    assert set(uncapped.tolist()) == {1, 2, 3, 4}
    capped, scores = similar_items(unit, 0, 4, None, categories, 1)
    # one IT job of the two (the nearer), the two uncategorised ones, and then the best of the rest
    nearer_it = min((1, 2), key=lambda j: -float(unit[0] @ unit[j]))
    assert set(capped.tolist()[:3]) == {nearer_it, 3, 4} and capped[3] not in (1, 2)
    assert np.all(np.diff(scores) <= 0)


def test_a_zero_factor_has_cosine_zero_with_everything() -> None:
    y = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.1]])
    unit = unit_rows(y)
    assert np.allclose(unit[1], 0.0)
    best, scores = similar_items(unit, 0, 2)
    assert best.tolist() == [2, 1] and scores[1] == 0.0


def test_a_k_beyond_what_the_cap_allows_is_every_job_the_cap_lets_through() -> None:
    y = planted_factors()
    unit = unit_rows(y)
    # two categories over the 20 jobs, one job without: a cap of 2 lets at most 2 + 2 + 1 through
    categories = np.arange(GROUPS * PER_GROUP) % 2
    categories[19] = NO_CATEGORY
    allowed = np.ones(GROUPS * PER_GROUP, dtype=bool)
    allowed[0] = False
    assert capped_capacity(allowed, categories, 2) == 5 and capped_capacity(allowed, None, 0) == 19
    best, _ = similar_items(unit, 0, 100, None, categories, 2)
    # the greedy walk down the whole cosine order, written plainly
    order = sorted(range(1, 20), key=lambda j: (-float(unit[0] @ unit[j]), j))
    taken: list[int] = []
    for j in order:
        if categories[j] == NO_CATEGORY or sum(categories[t] == categories[j] for t in taken) < 2:
            taken.append(j)
    assert best.tolist() == taken


def test_float32_ranking_with_the_cosines_recomputed_in_float64() -> None:
    y = planted_factors()
    best, scores = similar_items(unit_rows(y, np.float32), 7, 6, factors=y)
    assert best.tolist() == similar_items(unit_rows(y), 7, 6)[0].tolist()
    for j, s in zip(best.tolist(), scores.tolist(), strict=True):
        assert abs(s - y[7] @ y[j] / (np.linalg.norm(y[7]) * np.linalg.norm(y[j]))) < 1e-12
