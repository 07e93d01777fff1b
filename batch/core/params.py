"""The hyper-parameters of one ALS model, recorded with it in the models table (so fold-in solves the same problem).

Both engines minimise Hu, Koren and Volinsky's implicit-feedback loss over all user-job pairs,
  sum c_ui (p_ui - x_u . y_i)^2 + regularisation,   p_ui = [r_ui > 0],  c_ui = 1 + alpha r_ui,
and differ in one convention, kept here as `reg_scaling`:
- "count": Spark MLlib's ALS scales lambda by each user's (and job's) number of positive pairs (ALS-WR);
- "none":  the implicit library uses lambda as it is.
A lambda tuned under one convention means something else under the other, so it travels with the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

ENGINES = ("implicit", "spark")
CONFIDENCE_FORMS = ("linear", "log", "binary")
REG_SCALING = {"implicit": "none", "spark": "count"}


@dataclass(frozen=True)
class AlsParams:
    rank: int
    max_iter: int
    reg_param: float
    alpha: float
    seed: int
    checkpoint_interval: int = 5
    # the confidence input: "linear" r = s, "log" r = log(1 + s / epsilon), "binary" r = 1, after a decay of
    # half-life days (jobrec.batch.core.confidence)
    confidence: str = "linear"
    epsilon: float = 1.0
    half_life_days: float = 0.0
    # the time ages are measured from (epoch seconds); set at training, kept with the model for fold-in
    reference_time: float = 0.0
    # which engine trained the model, and so how lambda is scaled (see the module docstring)
    engine: str = "spark"
    reg_scaling: str = "count"

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AlsParams:
        """Read back a models-table record; a record written before a field existed gets the field's default
        (models trained before `engine` were all Spark's, with its count-scaled lambda)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})
