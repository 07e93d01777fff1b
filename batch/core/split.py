"""Held-out splits for evaluation: per-user random or per-user newest, with validation kept apart from test.

Pure Python over {user: [(job, strength, time)]}; fixed seeds make a split reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime

Row = tuple[str, float, datetime | None]  # (job_id, strength, last time)
Split = tuple[dict[str, list[Row]], dict[str, list[Row]]]  # (kept, held out), per user


def random_holdout(by_user: Mapping[str, Sequence[Row]], share: float, seed: int, min_kept: int = 1) -> Split:
    """Hold out round(share * n) of each user's rows at random (at least one, if the user keeps `min_kept`)."""
    rng = random.Random(seed)
    kept: dict[str, list[Row]] = {}
    held: dict[str, list[Row]] = {}
    for user in sorted(by_user):
        rows = sorted(by_user[user], key=lambda r: r[0])
        rng.shuffle(rows)
        n_held = max(1, round(share * len(rows))) if len(rows) > min_kept else 0
        held[user], kept[user] = rows[:n_held], rows[n_held:]
    return kept, {u: h for u, h in held.items() if h}


def time_holdout(by_user: Mapping[str, Sequence[Row]], share: float, min_kept: int = 1) -> Split:
    """Hold out each user's newest round(share * n) rows (rows without a time count as oldest)."""
    kept: dict[str, list[Row]] = {}
    held: dict[str, list[Row]] = {}
    for user in sorted(by_user):
        rows = sorted(by_user[user], key=lambda r: (r[2] is not None, r[2] or datetime.min, r[0]))
        n_held = max(1, round(share * len(rows))) if len(rows) > min_kept else 0
        kept[user], held[user] = rows[: len(rows) - n_held], rows[len(rows) - n_held :]
    return kept, {u: h for u, h in held.items() if h}


def train_validation_test(
    by_user: Mapping[str, Sequence[Row]], test_share: float, validation_share: float, seed: int, by_time: bool = False
) -> tuple[dict[str, list[Row]], dict[str, list[Row]], dict[str, list[Row]]]:
    """(train, validation, test): test is held out first; validation is carved from what remains, so that
    choosing parameters on validation never sees test."""
    if by_time:
        rest, test = time_holdout(by_user, test_share)
        train, validation = time_holdout(rest, validation_share / (1 - test_share))
    else:
        rest, test = random_holdout(by_user, test_share, seed)
        train, validation = random_holdout(rest, validation_share / (1 - test_share), seed + 1)
    return train, validation, test
