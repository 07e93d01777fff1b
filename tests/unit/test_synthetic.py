"""The synthetic data generator: the planted structure is there, measured from the ids it writes out, and the count
shapes are what their names say."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from jobrec.batch.backfill import CsvLayout
from jobrec.batch.bench.synthetic import (
    COUNT_SHAPES,
    PlantedData,
    index_from_id,
    planted_interactions,
    planted_jobs_for_user,
    planted_neighbours,
    write_counts_csv,
)

# 2,000 users, 500 jobs in 5 groups of 100: at most 50 pairs a user, 10 on average
SIZE = (2_000, 500, 20_000)


@pytest.fixture(scope="module")
def data() -> PlantedData:
    return planted_interactions(*SIZE, n_groups=5, seed=7, counts="heavy")


def _same(a: PlantedData, b: PlantedData) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in ("user_ids", "job_ids", "counts")
    ) and np.array_equal(a.truth.job_group, b.truth.job_group)


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data(data: PlantedData) -> None:
    assert _same(data, planted_interactions(*SIZE, n_groups=5, seed=7, counts="heavy"))
    assert not _same(data, planted_interactions(*SIZE, n_groups=5, seed=8, counts="heavy"))


def test_the_pairs_do_not_depend_on_the_count_shape(data: PlantedData) -> None:
    ratings = planted_interactions(*SIZE, n_groups=5, seed=7, counts="ratings")
    assert np.array_equal(ratings.user_ids, data.user_ids) and np.array_equal(ratings.job_ids, data.job_ids)


def test_sizes_are_as_asked_and_no_pair_repeats(data: PlantedData) -> None:
    n_users, n_jobs, n_pairs = SIZE
    pairs = list(zip(data.user_ids, data.job_ids, strict=True))
    assert len(data) == len(pairs) == n_pairs
    assert len(set(pairs)) == n_pairs
    assert {index_from_id(u) for u in data.user_ids} == set(range(n_users))
    assert max(index_from_id(j) for j in data.job_ids) < n_jobs
    assert all(u.startswith("u") for u in data.user_ids[:100]) and all(j.startswith("j") for j in data.job_ids[:100])


def test_every_user_has_at_least_two_pairs_and_a_few_have_very_many(data: PlantedData) -> None:
    per_user = np.array(list(Counter(data.user_ids).values()))
    assert per_user.min() >= 2
    # heavy-tailed activity: the busiest user has many times the pairs of the median one
    assert per_user.max() >= 4 * np.median(per_user)


def test_most_of_a_users_pairs_fall_in_their_group(data: PlantedData) -> None:
    # from the ids as written, not the generator's own index arrays
    users = np.array([index_from_id(u) for u in data.user_ids])
    jobs = np.array([index_from_id(j) for j in data.job_ids])
    share = np.mean(data.truth.user_group[users] == data.truth.job_group[jobs])
    # 85 % of draws come from the user's own group and a fifth of the rest land there by chance (5 groups)
    assert 0.75 <= share <= 0.95, share
    # and per user: at least three users in four have most of their pairs in their group
    in_group = data.truth.user_group[users] == data.truth.job_group[jobs]
    per_user = np.bincount(users, weights=in_group) / np.bincount(users)
    assert np.mean(per_user > 0.5) >= 0.75


def test_job_popularity_is_skewed(data: PlantedData) -> None:
    per_job = np.array(list(Counter(data.job_ids).values()))
    assert per_job.max() >= 10 * np.median(per_job)


def test_planted_neighbours_are_the_other_jobs_of_the_group(data: PlantedData) -> None:
    groups = data.truth.job_group
    neighbours = planted_neighbours(data.truth, 3)
    assert 3 not in neighbours
    assert set(neighbours) == {j for j in range(len(groups)) if groups[j] == groups[3] and j != 3}
    assert len(neighbours) == 99  # 500 jobs in 5 balanced groups
    user_jobs = planted_jobs_for_user(data.truth, 11)
    assert set(user_jobs) == {j for j in range(len(groups)) if groups[j] == data.truth.user_group[11]}


def test_heavy_counts_are_whole_heavy_tailed_and_bounded(data: PlantedData) -> None:
    c = data.counts
    assert c.dtype == np.float64 and np.all(c == np.round(c))
    assert c.min() >= 1 and c.max() <= 100_000
    assert c.max() / np.median(c) >= 100


def _in_group(data: PlantedData) -> np.ndarray:
    return data.truth.user_group[data.user_index] == data.truth.job_group[data.job_index]


def test_ratings_are_one_to_five_and_higher_inside_the_group() -> None:
    data = planted_interactions(*SIZE, n_groups=5, seed=7, counts="ratings")
    assert set(np.unique(data.counts)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    inside = _in_group(data)
    assert data.counts[inside].mean() > data.counts[~inside].mean() + 1.0


def test_noise_counts_are_one_to_ten_and_unrelated_to_the_group() -> None:
    data = planted_interactions(*SIZE, n_groups=5, seed=7, counts="noise")
    assert set(np.unique(data.counts)) == set(map(float, range(1, 11)))
    # with 20,000 pairs a correlation of independent draws is within about 0.007 of 0
    r = np.corrcoef(data.counts, _in_group(data).astype(float))[0, 1]
    assert abs(r) < 0.03, r


def test_binary_counts_are_all_one() -> None:
    data = planted_interactions(200, 100, 1_000, n_groups=4, seed=1, counts="binary")
    assert np.all(data.counts == 1.0)


def test_impossible_sizes_and_unknown_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        planted_interactions(100, 50, 150)  # fewer than 2 pairs a user
    with pytest.raises(ValueError, match="at most"):
        planted_interactions(100, 50, 5_000, n_groups=5)  # 5 jobs a user at most: half a group of 10
    with pytest.raises(ValueError, match="counts 'loud'"):
        planted_interactions(100, 50, 300, counts="loud")  # type: ignore[arg-type]
    assert "noise" in COUNT_SHAPES


def test_the_csv_holds_one_row_per_pair_in_the_layout(tmp_path: Path, data: PlantedData) -> None:
    path = tmp_path / "pairs.csv"
    write_counts_csv(path, data, CsvLayout(sep=";", user_col="who", job_col="what", count_col="plays"))
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    assert rows[0] == ["who", "what", "plays"]
    assert len(rows) == len(data) + 1
    assert rows[1] == [data.user_ids[0], data.job_ids[0], str(int(data.counts[0]))]
    written = {(u, j): float(c) for u, j, c in rows[1:]}
    assert written == {(u, j): c for u, j, c in zip(data.user_ids, data.job_ids, data.counts, strict=True)}
