"""The r of ALS's confidence c = 1 + alpha * r, from an interaction's strength and age.

Three forms. Linear, r = s; log, r = log(1 + s / epsilon), which tames heavy repeaters (Hu, Koren and Volinsky
2008, section 4); binary, r = 1 for any positive strength, for counts that carry no preference (random click
counts, or play counts where the thousandth play says little more than the tenth). With a half-life h (days), the
strength first decays with the age of the pair's last interaction: s * 0.5 ** (age / h); a pair without a time
(backfill) does not decay, nor does a future one. Binary ignores the decay: r is 1 whatever its age.
The same formula runs in numpy here (fold-in, evaluation, the implicit engine) and in Spark for the Spark engine
(`jobrec.batch.train.rating_column`); an integration test checks that the two agree.
"""

from __future__ import annotations

import numpy as np


def rating_values(
    strength: np.ndarray, age_days: np.ndarray | None, form: str, epsilon: float, half_life_days: float
) -> np.ndarray:
    s = np.asarray(strength, dtype=np.float64)
    if form == "binary":
        return (s > 0).astype(np.float64)
    if half_life_days > 0 and age_days is not None:
        age = np.nan_to_num(np.maximum(np.asarray(age_days, dtype=np.float64), 0.0), nan=0.0)
        s = s * np.power(0.5, age / half_life_days)
    return np.log1p(s / epsilon) if form == "log" else s
