"""The confidence input worked by hand, and fold-in with the log form against an independent solve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobrec.batch.core.confidence import rating_values
from jobrec.streaming.speed import Histories, ServingModel, recommend_for_users
from tests.unit.test_fold_in import normal_equations_solution


def test_linear_log_and_decay() -> None:
    s = np.array([4.0, 4.0, 4.0, 3.0])
    ages = np.array([10.0, 0.0, -5.0, np.nan])  # 10 days old, new, in the future, unknown
    assert rating_values(s, ages, "linear", 1.0, 0.0).tolist() == [4.0, 4.0, 4.0, 3.0]  # no half-life: no decay
    # half-life 10 days: 4 -> 2 after 10 days; a future or unknown time does not decay
    assert rating_values(s, ages, "linear", 1.0, 10.0) == pytest.approx([2.0, 4.0, 4.0, 3.0])
    # log form, epsilon 2: log(1 + 4/2) = log 3
    assert rating_values(s, ages, "log", 2.0, 0.0)[0] == pytest.approx(math.log(3.0))
    assert rating_values(s, ages, "log", 1.0, 10.0)[0] == pytest.approx(math.log(3.0))  # 4 -> 2 -> log(1 + 2)


def test_fold_in_uses_the_models_confidence_form() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(scale=0.4, size=(25, 5))
    model = ServingModel("v", [f"j{i}" for i in range(25)], y, 4.0, 0.1, list(range(25)), confidence="log", epsilon=2.0)
    h = Histories({"view": 1, "click": 1, "save": 1, "apply": 1})
    h.load([("u", "j1", 6.0, None), ("u", "j4", 2.0, None)])
    [(source, items)] = recommend_for_users(model, [h.users["u"]], 3)
    r_row = np.zeros(25)
    r_row[[1, 4]] = [math.log(1 + 6 / 2), math.log(1 + 2 / 2)]
    x = normal_equations_solution(y, r_row, 4.0, 0.1 * 2)
    expected = [f"j{i}" for i in np.argsort(-(y @ x)) if i not in (1, 4)][:3]
    assert source == "fold-in" and [it["job_id"] for it in items] == expected
