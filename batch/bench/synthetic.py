"""Implicit-feedback data with a planted answer, for tests (does a model recover the structure?) and benchmarks.

Every user and every job belongs to one latent group. A user's jobs are drawn mostly from their own group, the
rest from all jobs by popularity; popularity is Zipf-like (a job's weight is 1 / rank^exponent of its rank inside
its group, so each group's top jobs are also the most popular overall), and user activity is heavy-tailed (a few
users with many pairs, most with few, every user at least 2). The jobs of a group are the answer a good model gives
for "jobs like this one", and a user's group is where their recommendations should come from.

Ids are "u<index>" and "j<index>": `index_from_id` maps one back to the index the truth arrays use. The pairs do
not depend on the count shape (the same seed gives the same pairs for "heavy", "ratings", "noise" and "binary"),
so shapes can be compared on identical pairs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from jobrec.batch.backfill import CsvLayout

CountShape = Literal["heavy", "binary", "ratings", "noise"]
COUNT_SHAPES: tuple[CountShape, ...] = ("heavy", "binary", "ratings", "noise")

# play-count-like counts stop here: the largest in real listening logs are of this order
HEAVY_COUNT_MAX = 100_000.0


@dataclass(frozen=True, eq=False)
class PlantedTruth:
    """The structure the pairs were drawn from, indexed by user index and job index."""

    user_group: np.ndarray  # int32, one per user
    job_group: np.ndarray  # int32, one per job
    job_popularity: np.ndarray  # float64, one per job: its drawing weight, 1 / (rank in its group + 1)^exponent
    in_group_share: float  # the chance that one draw comes from the user's own group
    n_groups: int


@dataclass(frozen=True, eq=False)
class PlantedData:
    """One row per distinct (user, job) pair, in random order: ids as strings (object arrays), the same pairs as
    indexes into the truth arrays, and the count (float64, a whole number in every shape)."""

    user_ids: np.ndarray
    job_ids: np.ndarray
    counts: np.ndarray
    user_index: np.ndarray  # int32
    job_index: np.ndarray  # int32
    truth: PlantedTruth

    def __len__(self) -> int:
        return len(self.counts)


def planted_interactions(
    n_users: int,
    n_jobs: int,
    n_pairs: int,
    *,
    n_groups: int = 20,
    seed: int = 0,
    counts: CountShape = "heavy",
    in_group_share: float = 0.85,
    popularity_exponent: float = 1.0,
) -> PlantedData:
    """`n_pairs` distinct (user, job) pairs over `n_users` users and `n_jobs` jobs in `n_groups` groups.

    Counts: "heavy" are heavy-tailed whole numbers from 1 to 100,000 (like play counts: a per-user scale times a
    Pareto draw, doubled inside the user's group, so only weakly tied to preference); "ratings" are 1-5, mostly 3-5
    inside the group and 1-3 outside; "noise" are 1-10 uniformly, independent of everything (like the seed's
    random click counts); "binary" are all 1. A user has at most half the jobs of the smallest group (at least 2),
    so a user's pairs can stay mostly inside the group; ValueError when `n_pairs` does not fit."""
    if counts not in COUNT_SHAPES:
        raise ValueError(f"counts {counts!r}: expected one of {', '.join(COUNT_SHAPES)}")
    if not 1 <= n_groups <= n_jobs:
        raise ValueError(f"n_groups {n_groups}: expected 1 to n_jobs ({n_jobs})")
    if not 0.0 <= in_group_share <= 1.0:
        raise ValueError(f"in_group_share {in_group_share}: expected a share from 0 to 1")
    cap = max(2, min(n_jobs // 2, (n_jobs // n_groups) // 2))
    if n_jobs < 2 or n_users < 1 or not 2 * n_users <= n_pairs <= cap * n_users:
        raise ValueError(
            f"{n_pairs} pairs for {n_users} users and {n_jobs} jobs in {n_groups} groups: every user needs at least 2 "
            f"and at most {cap} pairs (half the smallest group), so expected {2 * n_users} to {cap * n_users} pairs"
        )
    # separate streams: the pairs stay the same whichever count shape is asked for
    structure_rng, pairs_rng, counts_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    truth = _plant_groups(n_users, n_jobs, n_groups, in_group_share, popularity_exponent, structure_rng)
    degree = _heavy_tailed_degrees(n_users, n_pairs, cap, structure_rng)
    users, jobs = _draw_pairs(truth, degree, pairs_rng)
    order = pairs_rng.permutation(len(users))
    users, jobs = users[order], jobs[order]
    in_group = truth.user_group[users] == truth.job_group[jobs]
    values = _draw_counts(counts, users, in_group, n_users, counts_rng)
    return PlantedData(
        user_ids=_names("u", n_users)[users],
        job_ids=_names("j", n_jobs)[jobs],
        counts=values,
        user_index=users,
        job_index=jobs,
        truth=truth,
    )


def planted_neighbours(truth: PlantedTruth, job_index: int) -> np.ndarray:
    """The other jobs of the job's group (sorted job indexes): what a model should call similar to it."""
    same = np.flatnonzero(truth.job_group == truth.job_group[job_index])
    return same[same != job_index]


def planted_jobs_for_user(truth: PlantedTruth, user_index: int) -> np.ndarray:
    """The jobs of the user's group (sorted job indexes): where that user's recommendations should come from."""
    return np.flatnonzero(truth.job_group == truth.user_group[user_index])


def index_from_id(name: str) -> int:
    """The index of an id in the truth arrays: "u123" -> 123, "j45" -> 45."""
    return int(name[1:])


def write_counts_csv(path: str | Path, data: PlantedData, layout: CsvLayout | None = None) -> None:
    """The pairs as a header and one row per pair: user id, job id, count (a whole number), in `layout`'s column
    names and separator (by default userId,jobId,Clicks, the seed's layout)."""
    layout = layout or CsvLayout()
    # dictionary-encoded ids: Arrow turns pointers into strings in C, not one Python object at a time
    users = pa.DictionaryArray.from_arrays(data.user_index, _names("u", len(data.truth.user_group)))
    jobs = pa.DictionaryArray.from_arrays(data.job_index, _names("j", len(data.truth.job_group)))
    whole = bool(np.all(np.mod(data.counts, 1.0) == 0.0))
    table = pa.table(
        {
            layout.user_col: users.cast(pa.string()),
            layout.job_col: jobs.cast(pa.string()),
            layout.count_col: data.counts.astype(np.int64) if whole else data.counts,
        }
    )
    # the header through the csv module, which quotes a name only when it must (Arrow's writer quotes every one)
    with open(path, "w", newline="") as header:
        csv.writer(header, delimiter=layout.sep, lineterminator="\n").writerow(table.column_names)
    # ids are letters and digits: no field needs quotes
    with open(path, "ab") as rows:
        pacsv.write_csv(
            table, rows, pacsv.WriteOptions(include_header=False, delimiter=layout.sep, quoting_style="none")
        )


def _names(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}{i}" for i in range(n)], dtype=object)


def _plant_groups(
    n_users: int, n_jobs: int, n_groups: int, in_group_share: float, exponent: float, rng: np.random.Generator
) -> PlantedTruth:
    # balanced groups in random positions, so neither an id's number nor its position tells its group
    user_group = rng.permutation(np.arange(n_users) % n_groups).astype(np.int32)
    job_group = rng.permutation(np.arange(n_jobs) % n_groups).astype(np.int32)
    rank_in_group = np.empty(n_jobs, dtype=np.int64)
    for g in range(n_groups):
        members = np.flatnonzero(job_group == g)
        rank_in_group[members] = rng.permutation(len(members))
    popularity = 1.0 / (rank_in_group + 1.0) ** exponent
    return PlantedTruth(user_group, job_group, popularity, in_group_share, n_groups)


def _heavy_tailed_degrees(n_users: int, n_pairs: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Pairs per user: 2 each, the rest shared out in proportion to Pareto weights, none above `cap`."""
    weights = rng.pareto(1.5, n_users) + 1.0
    degree = np.full(n_users, 2, dtype=np.int64)
    left = n_pairs - 2 * n_users
    while left > 0:
        open_ = degree < cap
        w = np.where(open_, weights, 0.0)
        degree += rng.multinomial(left, w / w.sum())
        # what a capped user would have had goes back to the others on the next pass
        left = int(np.clip(degree - cap, 0, None).sum())
        np.minimum(degree, cap, out=degree)
    return degree


def _draw_pairs(truth: PlantedTruth, degree: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`degree[u]` distinct jobs for every user u, each draw from the user's group with chance in_group_share,
    otherwise from all jobs, both by popularity; draws that repeat a pair are drawn again."""
    n_jobs = len(truth.job_group)
    n_groups = truth.n_groups
    # one sorted array of cumulative weights with group g's in [g, g + 1]: a single searchsorted draws in any group
    by_group = np.argsort(truth.job_group, kind="stable")
    groups_sorted = truth.job_group[by_group]
    weights_sorted = truth.job_popularity[by_group]
    totals = np.bincount(groups_sorted, weights=weights_sorted, minlength=n_groups)
    cum = np.cumsum(weights_sorted)
    ends = np.cumsum(totals)
    group_cdf = groups_sorted + (cum - (ends - totals)[groups_sorted]) / totals[groups_sorted]
    group_first = np.searchsorted(groups_sorted, np.arange(n_groups), side="left")
    group_last = np.searchsorted(groups_sorted, np.arange(n_groups), side="right") - 1
    all_cdf = np.cumsum(truth.job_popularity) / truth.job_popularity.sum()

    chosen: list[np.ndarray] = []
    chosen_keys = np.empty(0, dtype=np.int64)
    need = degree.copy()
    oversample = 1.3
    while need.any():
        users = np.flatnonzero(need)
        draws = np.ceil(need[users] * oversample).astype(np.int64) + 1
        user = np.repeat(users, draws)
        group = truth.user_group[user]
        in_group = rng.random(len(user)) < truth.in_group_share
        u = rng.random(len(user))
        # clipped to the group's own span: rounding at a group's edge must not hand out a neighbour's job
        pos = np.clip(np.searchsorted(group_cdf, group + u, side="right"), group_first[group], group_last[group])
        job = np.where(in_group, by_group[pos], np.minimum(np.searchsorted(all_cdf, u, side="right"), n_jobs - 1))
        keys = user.astype(np.int64) * n_jobs + job
        # Arrow's unique keeps first appearances in order: the pairs already chosen come first, so what is left is
        # the new distinct pairs in draw order (still grouped by user, as np.repeat laid them out)
        fresh = pc.unique(pa.array(np.concatenate([chosen_keys, keys]))).to_numpy()[len(chosen_keys) :]
        fresh_user = fresh // n_jobs
        starts = np.flatnonzero(np.r_[True, fresh_user[1:] != fresh_user[:-1]])
        rank = np.arange(len(fresh)) - np.repeat(starts, np.diff(np.r_[starts, len(fresh)]))
        taken = fresh[rank < need[fresh_user]]
        chosen.append(taken)
        chosen_keys = np.concatenate([chosen_keys, taken])
        need -= np.bincount(taken // n_jobs, minlength=len(need))
        oversample = min(oversample * 2.0, 64.0)  # the users still short are the heavy ones, whose draws repeat
    keys = np.concatenate(chosen)
    return (keys // n_jobs).astype(np.int32), (keys % n_jobs).astype(np.int32)


def _draw_counts(
    shape: CountShape, users: np.ndarray, in_group: np.ndarray, n_users: int, rng: np.random.Generator
) -> np.ndarray:
    n = len(users)
    if shape == "binary":
        return np.ones(n)
    if shape == "noise":
        return rng.integers(1, 11, n).astype(np.float64)
    if shape == "ratings":
        liked = rng.choice([3.0, 4.0, 5.0], n, p=[0.2, 0.4, 0.4])
        other = rng.choice([1.0, 2.0, 3.0], n, p=[0.4, 0.4, 0.2])
        return np.where(in_group, liked, other)
    # heavy: how much a user plays at all varies more than what they prefer
    user_scale = rng.lognormal(0.0, 1.0, n_users)[users]
    plays = (rng.pareto(1.0, n) + 1.0) * user_scale * np.where(in_group, 2.0, 1.0)
    return np.clip(np.ceil(plays), 1.0, HEAVY_COUNT_MAX)
