"""AutoML for the ALS model: a budgeted search over the confidence form, alpha, lambda, rank and iterations,
choosing on a validation split only.

The search is Optuna's TPE sampler with a median pruner: each trial trains the single-machine engine in steps of
PRUNE_STEP sweeps, reports validation NDCG@k after each step, and a trial running below the median of earlier
trials at the same step stops there. The scales:
- alpha and lambda are searched on log scales; for the linear form alpha is per unit of the data's median
  strength (a play-count log whose median is 40 needs an alpha 40 times smaller than a click log whose median is
  1), and the log form's epsilon is a multiple of that median;
- the first trials are a midpoint of the binary and the log form (they hold up on any count shape, so a budget
  that ends after a few trials on a large file has tried them), then the configured parameters (so the search
  never chooses worse than what a user set, on validation), then a midpoint of the other forms.
The caller splits the data; this module never sees the test split.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import numpy as np

from jobrec.batch.core.als_implicit import ImplicitAls
from jobrec.batch.core.interaction_matrix import InteractionMatrix, confidence_matrix
from jobrec.batch.core.params import CONFIDENCE_FORMS, AlsParams
from jobrec.batch.core.ranking import evaluate_factors, evaluate_popularity

log = logging.getLogger(__name__)

PRUNE_STEP = 5
# a search stops early after this many trials in a row that did not improve the best by MIN_GAIN: on small data
# the space is explored long before the budget ends
PATIENCE = 60
MIN_GAIN = 5e-4
RANKS = (16, 32, 64, 128)
TABLE_COLUMNS = (
    "trial",
    "state",
    "confidence",
    "alpha",
    "epsilon",
    "reg_param",
    "rank",
    "max_iter",
    "val_ndcg",
    "seconds",
)


@dataclass(frozen=True)
class SearchSpace:
    forms: tuple[str, ...] = CONFIDENCE_FORMS
    ranks: tuple[int, ...] = RANKS
    max_iter: tuple[int, int] = (5, 30)
    # alpha per unit of median strength (linear) or as it is (log, binary)
    alpha: tuple[float, float] = (0.05, 200.0)
    # the implicit engine's lambda (not scaled by the number of pairs)
    reg_param: tuple[float, float] = (1e-3, 100.0)
    # the log form's epsilon as a multiple of the median strength
    epsilon: tuple[float, float] = (0.01, 100.0)


@dataclass
class SearchResult:
    best: AlsParams
    best_ndcg: float
    popularity_ndcg: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_complete(self) -> int:
        return sum(1 for t in self.trials if t["state"] == "complete")

    @property
    def n_pruned(self) -> int:
        return sum(1 for t in self.trials if t["state"] == "pruned")

    def record(self, budget_seconds: float, keep: int = 10) -> dict[str, Any]:
        """What the models table keeps of the search: its size, the winner and the best few trials."""
        ranked = sorted(self.trials, key=lambda t: -(t["val_ndcg"] if t["val_ndcg"] is not None else -1))
        return {
            "trials": len(self.trials),
            "complete": self.n_complete,
            "pruned": self.n_pruned,
            "seconds": round(self.seconds, 1),
            "budget_seconds": budget_seconds,
            "best_validation_ndcg": round(self.best_ndcg, 6),
            "popularity_ndcg": round(self.popularity_ndcg, 6),
            "top": ranked[:keep],
        }


def _median_strength(train: InteractionMatrix) -> float:
    data = train.strength.data
    return float(np.median(data)) if len(data) else 1.0


def _suggest(trial, space: SearchSpace, base: AlsParams, median: float) -> AlsParams:
    form = trial.suggest_categorical("confidence", list(space.forms))
    a = trial.suggest_float("alpha", *space.alpha, log=True)
    lam = trial.suggest_float("reg_param", *space.reg_param, log=True)
    rank = trial.suggest_categorical("rank", list(space.ranks))
    iters = trial.suggest_int("max_iter", space.max_iter[0], space.max_iter[1], step=PRUNE_STEP)
    eps = trial.suggest_float("epsilon", *space.epsilon, log=True) if form == "log" else 1.0
    return replace(
        base,
        confidence=form,
        alpha=a / median if form == "linear" else a,
        epsilon=eps * median if form == "log" else base.epsilon,
        reg_param=lam,
        rank=int(rank),
        max_iter=int(iters),
    )


def _starting_points(base: AlsParams, space: SearchSpace, median: float) -> list[dict[str, Any]]:
    """Trial values for the configured params (clipped into the space) and a midpoint per form."""

    def clip(v: float, lo_hi: tuple[float, float]) -> float:
        return float(min(max(v, lo_hi[0]), lo_hi[1]))

    step = PRUNE_STEP
    iters = int(min(max(round(base.max_iter / step) * step, space.max_iter[0]), space.max_iter[1]))
    rank = min(space.ranks, key=lambda r: abs(r - base.rank))
    configured = {
        "confidence": base.confidence if base.confidence in space.forms else space.forms[0],
        "alpha": clip(base.alpha * median if base.confidence == "linear" else base.alpha, space.alpha),
        "reg_param": clip(base.reg_param, space.reg_param),
        "rank": rank,
        "max_iter": iters,
    }
    if configured["confidence"] == "log":
        configured["epsilon"] = clip(base.epsilon / median, space.epsilon)
    midpoints: dict[str, dict[str, Any]] = {}
    for form in space.forms:
        point: dict[str, Any] = {"confidence": form, "alpha": 5.0, "reg_param": 1.0, "rank": rank, "max_iter": 15}
        if form == "log":
            point["epsilon"] = 1.0
        midpoints[form] = point
    # the forms that hold up on any count shape first, so that a budget that ends after a few trials on a large
    # file has tried them; then the configured params; then the rest
    first = [midpoints[f] for f in ("binary", "log") if f in midpoints]
    rest = [p for f, p in midpoints.items() if f not in ("binary", "log")]
    return [*first, configured, *rest]


def search_params(
    train: InteractionMatrix,
    validation: InteractionMatrix,
    base: AlsParams,
    k: int,
    budget_seconds: float,
    *,
    max_trials: int = 200,
    space: SearchSpace | None = None,
    out: TextIO | None = sys.stderr,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Search within `budget_seconds` (a trial that has started finishes its current step) and return the best
    params by validation NDCG@k. `train` and `validation` share one index space (`InteractionMatrix.select`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space or SearchSpace()
    started = time.monotonic()
    deadline = started + budget_seconds
    median = _median_strength(train)
    seen, held = train.strength, validation.strength
    eval_rows = np.flatnonzero(np.diff(held.indptr) > 0)
    pop = evaluate_popularity(train.users_per_job(), seen, held, k)["ndcg"]
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=8),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )
    for point in _starting_points(base, space, median):
        study.enqueue_trial(point, skip_if_exists=True)
    rows: list[dict[str, Any]] = []
    best: tuple[float, AlsParams] = (-math.inf, base)
    last_gain = 0

    def objective(trial) -> float:
        nonlocal best, last_gain
        t0 = time.monotonic()
        params = _suggest(trial, space, base, median)
        model = ImplicitAls(params, confidence_matrix(train, params))
        ndcg = float("nan")
        state = "complete"
        while model.iterations_done < params.max_iter:
            model.fit_more(min(PRUNE_STEP, params.max_iter - model.iterations_done))
            users = model.user_factors(eval_rows)
            full = np.zeros((train.n_users, params.rank), dtype=users.dtype)
            full[eval_rows] = users
            ndcg = evaluate_factors(full, model.job_factors(), seen, held, k)["ndcg"]
            trial.report(ndcg, model.iterations_done)
            if model.iterations_done < params.max_iter and (trial.should_prune() or time.monotonic() > deadline):
                state = "pruned" if trial.should_prune() else "stopped"
                break
        row = _row(trial.number, state, model.params, ndcg if state == "complete" else None, time.monotonic() - t0)
        row["reached_iter"], row["ndcg_at_stop"] = model.iterations_done, round(ndcg, 6)
        rows.append(row)
        improved = state == "complete" and ndcg > best[0]
        if improved:
            if ndcg > best[0] + MIN_GAIN:
                last_gain = trial.number
            best = (ndcg, model.params)
        # a line for each new best and every tenth trial: progress without a line per trial
        if improved or trial.number % 10 == 0:
            _print_progress(out, row, best[0], pop, time.monotonic() - started, budget_seconds)
        if on_trial:
            on_trial(row)
        if state != "complete":
            raise optuna.TrialPruned()
        return ndcg

    def out_of_time(study, trial) -> None:
        if time.monotonic() > deadline:
            study.stop()
        elif trial.number - last_gain >= PATIENCE:
            if out is not None:
                print(f"search: no gain of {MIN_GAIN} in the last {PATIENCE} trials; stopping early", file=out)
            study.stop()

    study.optimize(objective, n_trials=max_trials, timeout=budget_seconds, callbacks=[out_of_time])
    result = SearchResult(best[1], best[0], pop, rows, time.monotonic() - started)
    if out is not None:
        print(
            f"search: {len(rows)} trials ({result.n_complete} complete, {result.n_pruned} pruned) in "
            f"{result.seconds:.1f} s; best validation NDCG@{k} {best[0]:.4f} (popularity {pop:.4f}): "
            f"{describe(best[1])}",
            file=out,
            flush=True,
        )
    return result


def describe(p: AlsParams) -> str:
    eps = f" epsilon={p.epsilon:.3g}" if p.confidence == "log" else ""
    return f"{p.confidence} alpha={p.alpha:.3g}{eps} reg={p.reg_param:.3g} rank={p.rank} iter={p.max_iter}"


def _row(number: int, state: str, p: AlsParams, ndcg: float | None, seconds: float) -> dict[str, Any]:
    return {
        "trial": number,
        "state": state,
        "confidence": p.confidence,
        "alpha": round(p.alpha, 6),
        "epsilon": round(p.epsilon, 6) if p.confidence == "log" else None,
        "reg_param": round(p.reg_param, 6),
        "rank": p.rank,
        "max_iter": p.max_iter,
        "val_ndcg": round(ndcg, 6) if ndcg is not None else None,
        "seconds": round(seconds, 2),
    }


def _print_progress(
    out: TextIO | None, row: dict[str, Any], best: float, pop: float, elapsed: float, budget: float
) -> None:
    if out is None:
        return
    result = (
        f"NDCG {row['val_ndcg']:.4f}"
        if row["state"] == "complete"
        else f"{row['state']} at iteration {row['reached_iter']} (NDCG {row['ndcg_at_stop']:.4f})"
    )
    print(
        f"[{elapsed:5.1f}/{budget:.0f} s] trial {row['trial']:3d}: {row['confidence']} alpha={row['alpha']:.3g} "
        f"reg={row['reg_param']:.3g} rank={row['rank']} iter={row['max_iter']}: {result}; best {best:.4f}, "
        f"popularity {pop:.4f}",
        file=out,
        flush=True,
    )
