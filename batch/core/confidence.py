"""The r of ALS's confidence c = 1 + alpha * r, from an interaction's strength and age.

Two forms (Hu, Koren and Volinsky 2008, section 4): linear, r = s; or log, r = log(1 + s / epsilon), which
tames heavy repeaters. With a half-life h (days), the strength first decays with the age of the pair's last
interaction: s * 0.5 ** (age / h); a pair without a time (backfill) does not decay, nor does a future one.
The same formula runs in numpy here (fold-in, evaluation) and in Spark for training
(`jobrec.batch.train.rating_column`); an integration test checks that the two agree.
"""

from __future__ import annotations

import numpy as np


def rating_values(
    strength: np.ndarray, age_days: np.ndarray | None, form: str, epsilon: float, half_life_days: float
) -> np.ndarray:
    s = np.asarray(strength, dtype=np.float64)
    if half_life_days > 0 and age_days is not None:
        age = np.nan_to_num(np.maximum(np.asarray(age_days, dtype=np.float64), 0.0), nan=0.0)
        s = s * np.power(0.5, age / half_life_days)
    return np.log1p(s / epsilon) if form == "log" else s
