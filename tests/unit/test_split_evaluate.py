"""Splits keep validation apart from test; evaluation of a tiny model and of popularity worked out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from jobrec.batch.core.evaluate import evaluate_model, evaluate_popularity
from jobrec.batch.core.split import random_holdout, time_holdout, train_validation_test

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def rows(n: int) -> list[tuple[str, float, datetime]]:
    return [(f"j{i}", 1.0, T0 + timedelta(days=i)) for i in range(n)]


def test_random_holdout_is_per_user_reproducible_and_disjoint() -> None:
    by_user = {"a": rows(10), "b": rows(5), "c": rows(1)}
    kept, held = random_holdout(by_user, 0.2, seed=42)
    assert [len(held.get(u, [])) for u in "abc"] == [2, 1, 0]  # round(0.2 n), at least 1; c keeps its only row
    for u in by_user:
        assert sorted(kept[u] + held.get(u, [])) == sorted(by_user[u])
    assert random_holdout(by_user, 0.2, seed=42) == (kept, held)
    assert random_holdout(by_user, 0.2, seed=43) != (kept, held)


def test_time_holdout_takes_the_newest() -> None:
    kept, held = time_holdout({"a": rows(10)}, 0.3)
    assert [r[0] for r in held["a"]] == ["j7", "j8", "j9"]


def test_validation_is_carved_from_train_never_from_test() -> None:
    by_user = {f"u{i}": rows(20) for i in range(30)}
    train, validation, test = train_validation_test(by_user, 0.2, 0.2, seed=42)
    for u in by_user:
        t, v, s = ({r[0] for r in x.get(u, [])} for x in (train, validation, test))
        assert not (t & v) and not (t & s) and not (v & s) and len(t | v | s) == 20
        assert len(s) == 4 and len(v) == 4  # 0.2 of 20 each


def test_evaluate_tiny_model_and_popularity() -> None:
    jobs = ["j0", "j1", "j2", "j3"]
    y = np.eye(4)
    # user a prefers j1 > j2 > j3 > j0 and has seen j1; held out: j2
    users = {"a": np.array([0.0, 0.9, 0.5, 0.2])}
    train = {"a": {"j1"}, "b": {"j3"}, "c": {"j3"}, "d": {"j0"}}
    held = {"a": {"j2": 1.0}}
    m = evaluate_model(users, jobs, y, train, held, k=2)
    # ranking without seen: j2, j3 -> hit at rank 1
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == 1.0 and m["ndcg"] == 1.0 and m["map"] == 1.0
    assert m["auc"] == 1.0  # j2 outscores both other unseen jobs
    assert m["mpr"] == 0.0  # j2 is at the top of the 3 candidates
    assert m["coverage"] == pytest.approx(2 / 4)
    # popularity: j3 (2 users), j0 (1), j1 seen by a; j2 (0) -> ranking j3, j0 -> no hit
    p = evaluate_popularity(jobs, train, held, k=2)
    assert p["ndcg"] == 0.0 and p["recall"] == 0.0
    assert p["mpr"] == 1.0  # j2 is last of the 3 candidates
