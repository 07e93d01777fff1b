"""The single-machine ALS engine: the implicit library's CPU ALS (conjugate gradient), on the same objective as
Spark MLlib's `ALS(implicitPrefs=True)`.

- Confidence: implicit reads a stored value as the pair's confidence c itself (and multiplies it by its own alpha,
  left at 1 here), so it is given c = 1 + alpha * r (`confidence_matrix`): the same c as Spark's.
- Regularisation: implicit's lambda is not scaled by the number of pairs (reg_scaling "none"); the model records
  that, and fold-in follows it.
- The last step: each implicit iteration solves users, then jobs, so its user vectors lag one job step and
  conjugate gradient solves them only approximately. After the sweeps every user is solved once more, exactly
  (Cholesky) against the final job factors: the model then is what fold-in computes for the same history, to
  float32 precision, which is what makes a fold-in list and a batch list agree.
Training can continue in steps (`fit_more`) so that a search can score a model on the way and stop a poor one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from jobrec.batch.core.interaction_matrix import InteractionMatrix, confidence_matrix
from jobrec.batch.core.params import REG_SCALING, AlsParams

ENGINE = "implicit"


def for_implicit(params: AlsParams) -> AlsParams:
    """The params as the implicit engine trains them: engine and regularisation convention recorded."""
    return replace(params, engine=ENGINE, reg_scaling=REG_SCALING[ENGINE])


class ImplicitAls:
    """One model in training. `confidence` is the users x jobs matrix of c = 1 + alpha * r (float32 csr)."""

    def __init__(self, params: AlsParams, confidence: sp.csr_matrix, num_threads: int = 0):
        from implicit.cpu.als import AlternatingLeastSquares

        self.params = for_implicit(params)
        self.confidence = confidence
        self.iterations_done = 0
        # (the constructor checks the BLAS thread count and warns unless it is limited)
        with threadpool_limits(1, "blas"):
            self._model = self._new_model(AlternatingLeastSquares, params, num_threads)

    @staticmethod
    def _new_model(cls, params: AlsParams, num_threads: int):
        return cls(
            factors=params.rank,
            regularization=params.reg_param,
            alpha=1.0,
            iterations=0,
            use_cg=True,
            calculate_training_loss=False,
            random_state=params.seed,
            num_threads=num_threads,
        )

    def fit_more(self, iterations: int) -> None:
        """Run `iterations` more ALS sweeps from where training stands."""
        if iterations <= 0:
            return
        self._model.iterations = iterations
        # implicit parallelises with its own threads; BLAS threads inside them would only fight over the cores
        with threadpool_limits(1, "blas"):
            self._model.fit(self.confidence, show_progress=False)
        self.iterations_done += iterations

    def job_factors(self) -> np.ndarray:
        return np.asarray(self._model.item_factors)

    def user_factors(self, users: np.ndarray | None = None) -> np.ndarray:
        """The exact solve of the given users (default: all) against the current job factors."""
        rows = np.arange(self.confidence.shape[0]) if users is None else np.asarray(users)
        self._model._YtY = None  # the job factors moved since it was cached
        with threadpool_limits(1, "blas"):
            return np.asarray(self._model.recalculate_user(rows, self.confidence[rows]))


def train_on_matrix(params: AlsParams, data: InteractionMatrix) -> tuple[np.ndarray, np.ndarray, AlsParams]:
    """(user factors, job factors, params as recorded) trained on the matrix's pairs."""
    return train_implicit(params, confidence_matrix(data, params))


def train_implicit(params: AlsParams, confidence: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, AlsParams]:
    """(user factors, job factors, params as recorded) after params.max_iter sweeps."""
    model = ImplicitAls(params, confidence)
    model.fit_more(params.max_iter)
    return model.user_factors(), model.job_factors(), model.params
