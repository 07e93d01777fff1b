"""Interactions as a sparse users x jobs matrix, in one index space shared by every split of it.

The single-machine engine, the search and the gate work on this: ids are indexed once (sorted, so the same data
gives the same index), a (user, job) pair appears once (repeats add up; the newest time wins), and a split keeps
the index space, so a training split's factors line up with its validation split's rows.
Pure numpy, scipy and pandas (for a fast factorize of millions of string ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobrec.batch.core.confidence import rating_values
from jobrec.batch.core.params import AlsParams


@dataclass(frozen=True)
class InteractionMatrix:
    """users x jobs: the pair's strength (> 0 only) and the age in days of its last interaction (NaN: unknown),
    both aligned with `strength.data`."""

    user_ids: np.ndarray  # index -> id
    job_ids: np.ndarray
    strength: sp.csr_matrix
    age_days: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_jobs(self) -> int:
        return len(self.job_ids)

    @property
    def nnz(self) -> int:
        return int(self.strength.nnz)

    def entry_rows(self) -> np.ndarray:
        """The user index of every stored entry."""
        return np.repeat(np.arange(self.n_users), np.diff(self.strength.indptr))

    def select(self, keep: np.ndarray) -> InteractionMatrix:
        """The entries where `keep` (a mask over stored entries) is true, in the same index space."""
        rows = self.entry_rows()[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=self.n_users))])
        matrix = sp.csr_matrix(
            (self.strength.data[keep], self.strength.indices[keep], indptr), shape=self.strength.shape
        )
        return InteractionMatrix(self.user_ids, self.job_ids, matrix, self.age_days[keep])

    def users_per_job(self) -> np.ndarray:
        """How many users have a positive pair with each job (the popularity baseline's score)."""
        return np.bincount(self.strength.indices, minlength=self.n_jobs)


def build_matrix(
    user_ids: np.ndarray, job_ids: np.ndarray, strength: np.ndarray, age_days: np.ndarray | None = None
) -> InteractionMatrix:
    """Rows of (user, job, strength[, age]) -> the matrix; rows without a positive finite strength are left out."""
    strength = np.asarray(strength, dtype=np.float64)
    keep = np.isfinite(strength) & (strength > 0)
    users, user_index = pd.factorize(pd.Series(np.asarray(user_ids, dtype=object)[keep]), sort=True)
    jobs, job_index = pd.factorize(pd.Series(np.asarray(job_ids, dtype=object)[keep]), sort=True)
    s = strength[keep]
    ages = np.full(len(s), np.nan) if age_days is None else np.asarray(age_days, dtype=np.float64)[keep]
    order = np.lexsort((jobs, users))
    users, jobs, s, ages = users[order], jobs[order], s[order], ages[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = (users[1:] != users[:-1]) | (jobs[1:] != jobs[:-1])
    starts = np.flatnonzero(first)
    if len(s):
        s = np.add.reduceat(s, starts)
        # the newest interaction of a repeated pair is its last: the smallest age (NaN only when all are unknown)
        with np.errstate(invalid="ignore"):
            ages = np.fmin.reduceat(ages, starts)
    users, jobs = users[starts], jobs[starts]
    n_users, n_jobs = len(user_index), len(job_index)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
    matrix = sp.csr_matrix((s, jobs.astype(np.int32), indptr), shape=(n_users, n_jobs))
    return InteractionMatrix(np.asarray(user_index, dtype=object), np.asarray(job_index, dtype=object), matrix, ages)


def rating_matrix(m: InteractionMatrix, params: AlsParams) -> sp.csr_matrix:
    """The r of every pair under the params' confidence form (jobrec.batch.core.confidence)."""
    r = rating_values(m.strength.data, m.age_days, params.confidence, params.epsilon, params.half_life_days)
    return sp.csr_matrix((r, m.strength.indices, m.strength.indptr), shape=m.strength.shape)


def confidence_matrix(m: InteractionMatrix, params: AlsParams) -> sp.csr_matrix:
    """c = 1 + alpha * r of every positive pair, as float32: the implicit library's input, where a stored value
    is the pair's confidence itself (its own alpha left at 1)."""
    r = rating_matrix(m, params)
    r.data = (1.0 + params.alpha * r.data).astype(np.float32)
    return r.astype(np.float32)


def holdout_mask(m: InteractionMatrix, share: float, seed: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """A mask over stored entries: round(share * n) of each eligible user's n pairs, at random, at least one and
    never all of them (a user with one pair keeps it). `eligible` is a boolean per user (default: everyone)."""
    n = np.diff(m.strength.indptr)
    rows = m.entry_rows()
    key = np.random.default_rng(seed).random(m.nnz)
    order = np.lexsort((key, rows))
    position = np.empty(m.nnz, dtype=np.int64)
    position[order] = np.arange(m.nnz) - m.strength.indptr[rows[order]]
    n_held = np.where(n > 1, np.minimum(np.maximum(1, np.rint(share * n)), n - 1), 0).astype(np.int64)
    if eligible is not None:
        n_held[~eligible] = 0
    return position < n_held[rows]


def sample_users(user_ids: np.ndarray, max_users: int, seed: int) -> np.ndarray:
    """A boolean per user: the `max_users` users with the smallest seeded hash of their id. A user's hash does not
    depend on who else is in the data, so the sample stays stable as the data grows."""
    if len(user_ids) <= max_users:
        return np.ones(len(user_ids), dtype=bool)
    hashes = pd.util.hash_array(np.asarray(user_ids, dtype=object), hash_key=f"jobrec{seed:010d}"[-16:])
    chosen = np.argpartition(hashes, max_users - 1)[:max_users]
    out = np.zeros(len(user_ids), dtype=bool)
    out[chosen] = True
    return out
