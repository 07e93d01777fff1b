"""The r of ALS's confidence c = 1 + alpha * r, from an interaction's strength and age.

Two forms (Hu, Koren and Volinsky 2008, section 4): linear, r = s; or log, r = log(1 + s / epsilon), which
tames heavy repeaters. With a half-life h (days), the strength first decays with the age of the pair's last
interaction: s * 0.5 ** (age / h); a pair without a time (backfill) does not decay, nor does a future one.
The same formula runs in Spark for training (`rating_column`) and in numpy for fold-in (`rating_values`); a test
checks that the two agree.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F

FORMS = ("linear", "log")


def rating_values(
    strength: np.ndarray, age_days: np.ndarray | None, form: str, epsilon: float, half_life_days: float
) -> np.ndarray:
    s = np.asarray(strength, dtype=np.float64)
    if half_life_days > 0 and age_days is not None:
        age = np.nan_to_num(np.maximum(np.asarray(age_days, dtype=np.float64), 0.0), nan=0.0)
        s = s * np.power(0.5, age / half_life_days)
    return np.log1p(s / epsilon) if form == "log" else s


def rating_column(strength: Column, age_days: Column, form: str, epsilon: float, half_life_days: float) -> Column:
    s = strength.cast("double")
    if half_life_days > 0:
        age = F.greatest(F.coalesce(age_days, F.lit(0.0)), F.lit(0.0))
        s = s * F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))
    return F.log1p(s / F.lit(float(epsilon))) if form == "log" else s
