"""AutoML for the ALS model: a budgeted search over the confidence form, alpha, lambda, rank and iterations,
choosing on a validation split only.

Which confidence form fits is the first question about a data set (random click counts want binary, play counts
in the hundred thousands log, ratings linear), and a single sampler that finds one form good early keeps sampling
it. So each form has its own study (Optuna's TPE sampler and a median pruner), and a schedule shares the trials:
ROUND_ROBIN rounds give every form the same number, then the form with the best validation NDCG gets two trials
in three and the others take turns with the third. A trial trains the single-machine engine in steps of
PRUNE_STEP sweeps, reports validation NDCG@k after each, and stops when it runs below the median of its form's
earlier trials at that step. The scales:
- alpha and lambda are searched on log scales; for the linear form alpha is per unit of the data's median
  strength (a play-count log whose median is 40 needs an alpha 40 times smaller than a click log whose median is
  1), and the log form's epsilon is a multiple of that median;
- the first trial is the configured parameters (so the search never chooses worse than what a user set, on
  validation, once that trial completes), then a midpoint of each other form.
The caller splits the data; this module never sees the test split.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TextIO

import numpy as np

from jobrec.batch.core.als_implicit import ImplicitAls
from jobrec.batch.core.interaction_matrix import InteractionMatrix, confidence_matrix
from jobrec.batch.core.params import CONFIDENCE_FORMS, AlsParams
from jobrec.batch.core.ranking import evaluate_factors, evaluate_popularity

log = logging.getLogger(__name__)

PRUNE_STEP = 5
# rounds in which every confidence form gets a trial in turn, before the best form gets most of them
ROUND_ROBIN = 5
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


class Fitting(Protocol):
    """One trial's model in training. The single-machine engine resumes in steps (and so can be pruned between
    them); Spark's ALS cannot resume, and its `fit_more` runs every iteration at once."""

    params: AlsParams
    iterations_done: int

    def fit_more(self, iterations: int) -> None: ...

    def user_factors(self, users: np.ndarray | None = None) -> np.ndarray: ...

    def job_factors(self) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchSpace:
    forms: tuple[str, ...] = CONFIDENCE_FORMS
    ranks: tuple[int, ...] = RANKS
    max_iter: tuple[int, int] = (5, 30)
    # alpha per unit of median strength (linear) or as it is (log, binary)
    alpha: tuple[float, float] = (0.01, 1000.0)
    # the implicit engine's lambda (not scaled by the number of pairs): the best one measured sits between 10 (the
    # seed: 150 pairs per user) and 100 (planted data, 10 pairs per user)
    reg_param: tuple[float, float] = (1e-2, 1e3)
    # the log form's epsilon as a multiple of the median strength
    epsilon: tuple[float, float] = (0.01, 100.0)
    # lambda of each form's first trial (after the configured params)
    reg_start: float = 10.0


@dataclass
class SearchResult:
    best: AlsParams
    best_ndcg: float
    popularity_ndcg: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # the winning trial's model, trained on the search's train split: a caller that needs that model (the
    # retrain's candidate) takes it instead of training it again
    best_model: Fitting | None = None

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


def _suggest(trial, form: str, space: SearchSpace, base: AlsParams, median: float) -> AlsParams:
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


def _starting_points(base: AlsParams, space: SearchSpace, median: float) -> dict[str, list[dict[str, Any]]]:
    """Per form, the trial values to try first: the configured params (clipped into the space) for their form,
    and a midpoint for every form."""

    def clip(v: float, lo_hi: tuple[float, float]) -> float:
        return float(min(max(v, lo_hi[0]), lo_hi[1]))

    iters = int(min(max(round(base.max_iter / PRUNE_STEP) * PRUNE_STEP, space.max_iter[0]), space.max_iter[1]))
    rank = min(space.ranks, key=lambda r: abs(r - base.rank))
    points: dict[str, list[dict[str, Any]]] = {form: [] for form in space.forms}
    if base.confidence in points:
        configured: dict[str, Any] = {
            "alpha": clip(base.alpha * median if base.confidence == "linear" else base.alpha, space.alpha),
            "reg_param": clip(base.reg_param, space.reg_param),
            "rank": rank,
            "max_iter": iters,
        }
        if base.confidence == "log":
            configured["epsilon"] = clip(base.epsilon / median, space.epsilon)
        points[base.confidence].append(configured)
    for form, form_points in points.items():
        midpoint: dict[str, Any] = {"alpha": 5.0, "reg_param": space.reg_start, "rank": rank, "max_iter": 15}
        if form == "log":
            midpoint["epsilon"] = 1.0
        form_points.append(midpoint)
    return points


def _schedule(forms: tuple[str, ...], first: str, n: int, best_form: str | None) -> str:
    """The form of the n-th trial (0-based): round robin from `first`, then two in three for the best form."""
    order = [first, *[f for f in forms if f != first]]
    if n < ROUND_ROBIN * len(order) or best_form is None or len(order) == 1:
        return order[n % len(order)]
    others = [f for f in order if f != best_form]
    m = n - ROUND_ROBIN * len(order)
    return best_form if m % 3 != 2 else others[(m // 3) % len(others)]


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
    start: Callable[[AlsParams], Fitting] | None = None,
) -> SearchResult:
    """Search within `budget_seconds` (a trial that has started finishes its current step) and return the best
    params by validation NDCG@k. `train` and `validation` share one index space (`InteractionMatrix.select`).
    `start` makes a trial's model on `train` (default: the single-machine engine's)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space or SearchSpace()
    started = time.monotonic()
    deadline = started + budget_seconds
    median = _median_strength(train)
    seen, held = train.strength, validation.strength
    eval_rows = np.flatnonzero(np.diff(held.indptr) > 0)
    pop = evaluate_popularity(train.users_per_job(), seen, held, k)["ndcg"]
    studies = {
        form: optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=base.seed + n, n_startup_trials=5),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        )
        for n, form in enumerate(space.forms)
    }
    for form, points in _starting_points(base, space, median).items():
        for point in points:
            studies[form].enqueue_trial(point, skip_if_exists=True)
    first = base.confidence if base.confidence in studies else space.forms[0]
    rows: list[dict[str, Any]] = []
    best: tuple[float, AlsParams] = (-math.inf, base)
    best_model: Fitting | None = None
    best_by_form: dict[str, float] = {}
    last_gain = 0

    def run_trial(number: int, form: str) -> None:
        nonlocal best, best_model, last_gain
        study = studies[form]
        trial = study.ask()
        t0 = time.monotonic()
        params = _suggest(trial, form, space, base, median)
        model = start(params) if start else ImplicitAls(params, confidence_matrix(train, params))
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
        if state == "complete":
            study.tell(trial, ndcg)
            best_by_form[form] = max(best_by_form.get(form, -math.inf), ndcg)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        row = _row(number, state, model.params, ndcg if state == "complete" else None, time.monotonic() - t0)
        row["reached_iter"], row["ndcg_at_stop"] = model.iterations_done, round(ndcg, 6)
        rows.append(row)
        improved = state == "complete" and ndcg > best[0]
        if improved:
            if ndcg > best[0] + MIN_GAIN:
                last_gain = number
            best, best_model = (ndcg, model.params), model
        # a line for each new best and every tenth trial: progress without a line per trial
        if improved or number % 10 == 0:
            _print_progress(out, row, best[0], pop, time.monotonic() - started, budget_seconds)
        if on_trial:
            on_trial(row)

    for number in range(max_trials):
        if time.monotonic() >= deadline:
            break
        if number - last_gain >= PATIENCE:
            if out is not None:
                print(f"search: no gain of {MIN_GAIN} in the last {PATIENCE} trials; stopping early", file=out)
            break
        best_form = max(best_by_form, key=lambda f: best_by_form[f]) if best_by_form else None
        run_trial(number, _schedule(space.forms, first, number, best_form))
    result = SearchResult(best[1], best[0], pop, rows, time.monotonic() - started, best_model)
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


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of the rows (the trials tables)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + " |")
    return "\n".join(lines)
