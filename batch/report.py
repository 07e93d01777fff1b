"""`jobrec evaluate`: an honest evaluation report on a file (the seed data by default).

Two runners share the report: `run_evaluation` trains with Spark (als.engine spark, or --split time, which needs
the interactions' times), `run_evaluation_single_node` with the implicit engine and the search (no JVM).

Split per user (random or newest) into train, validation and test with a fixed seed; choose the parameters on
validation only (with --tune); train on train + validation; report precision, recall, MAP, NDCG, AUC, expected
percentile rank and coverage at several k on test, beside popularity on the same split; write Markdown with PNG
plots: metrics against k, the tuning surface, the score distribution.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from jobrec.batch.core.als_implicit import train_implicit
from jobrec.batch.core.evaluate import evaluate_model, evaluate_rankings, popularity_from_counts, popularity_scores
from jobrec.batch.core.interaction_matrix import (
    InteractionMatrix,
    build_matrix,
    confidence_matrix,
    holdout_mask,
    sample_users,
)
from jobrec.batch.core.params import AlsParams
from jobrec.batch.core.split import train_validation_test
from jobrec.batch.search import TABLE_COLUMNS as SEARCH_COLUMNS
from jobrec.batch.search import describe, format_table, search_params
from jobrec.batch.train import train_on
from jobrec.schemas import tables as t

log = logging.getLogger(__name__)

KS = (1, 5, 10, 20)
SHOWN = ("precision", "recall", "map", "ndcg", "auc", "mpr", "coverage")


def _factors(model) -> tuple[dict[str, np.ndarray], list[str], np.ndarray]:
    users = {
        r[0]: np.asarray(r[1], dtype=np.float64) for r in model.user_factors.select(t.USER_ID, t.FEATURES).collect()
    }
    jobs = model.job_factors.select(t.JOB_ID, t.FEATURES).orderBy(t.JOB_ID).collect()
    return users, [j[0] for j in jobs], np.asarray([j[1] for j in jobs], dtype=np.float64)


def _frame(spark: SparkSession, rows: dict[str, list]) -> DataFrame:
    data = [(u, j, s) for u, rs in rows.items() for j, s, _ in rs]
    frame = spark.createDataFrame(data, f"{t.USER_ID} STRING, {t.JOB_ID} STRING, {t.STRENGTH} DOUBLE")
    return frame.cache()


def run_evaluation(
    spark: SparkSession,
    interactions: DataFrame,
    base: AlsParams,
    out_dir: Path,
    *,
    tune: bool,
    by_time: bool,
    k: int = 10,
    seed: int = 42,
    budget_seconds: float = 40.0,
    max_trials: int = 200,
) -> dict[str, object]:
    by_user: dict[str, list] = {}
    for r in interactions.select(t.USER_ID, t.JOB_ID, t.STRENGTH, t.LAST_AT).collect():
        by_user.setdefault(r[0], []).append((r[1], float(r[2]), r[3]))
    train, validation, test = train_validation_test(by_user, 0.2, 0.2, seed, by_time)
    params, table = base, []
    if tune:
        from jobrec.batch.spark_search import search_spark_split

        fit, held = _split_matrices(train, validation)
        result = search_spark_split(spark, fit, held, base, k, budget_seconds, max_trials)
        params, table = result.best, result.trials
    fit_rows = {u: train.get(u, []) + validation.get(u, []) for u in by_user}
    model = train_on(_frame(spark, fit_rows), -1, params)
    users, job_ids, y = _factors(model)
    seen = {u: {j for j, _, _ in rs} for u, rs in fit_rows.items()}
    test_map = {u: {j: s for j, s, _ in rs} for u, rs in test.items()}
    pop = popularity_scores(seen, job_ids)
    return _write_report(out_dir, users, job_ids, y, seen, test_map, pop, table, params, model.timings, by_time, k)


def _split_matrices(train: dict[str, list], validation: dict[str, list]) -> tuple[InteractionMatrix, InteractionMatrix]:
    """The train and validation rows (user -> [(job, strength, last_at)]) as two matrices of one index space."""
    rows = [(u, job, s, 1.0) for u, rs in train.items() for job, s, _ in rs]
    rows += [(u, job, s, 0.0) for u, rs in validation.items() for job, s, _ in rs]
    users, jobs, strengths, held = (np.array(col, dtype=object) for col in zip(*rows, strict=True))
    data = build_matrix(users, jobs, strengths.astype(np.float64))
    # which stored entries are validation pairs: the pairs' keys looked up in the matrix's index
    user_pos = pd.Index(data.user_ids).get_indexer(users)
    job_pos = pd.Index(data.job_ids).get_indexer(jobs)
    is_held = (held.astype(np.float64) == 0.0) & (user_pos >= 0) & (job_pos >= 0)
    held_keys = user_pos[is_held].astype(np.int64) * data.n_jobs + job_pos[is_held]
    entry_keys = data.entry_rows().astype(np.int64) * data.n_jobs + data.strength.indices
    mask = np.isin(entry_keys, held_keys)
    return data.select(~mask), data.select(mask)


def _write_report(
    out_dir: Path,
    users: dict[str, np.ndarray],
    job_ids: list[str],
    y: np.ndarray,
    seen: dict[str, set[str]],
    test_map: dict[str, dict[str, float]],
    pop: np.ndarray,
    table: list[dict[str, Any]],
    params: AlsParams,
    timings: dict[str, float],
    by_time: bool,
    k: int,
) -> dict[str, object]:
    """Test metrics at every k for the model and popularity, the plots, report.md and results.json."""
    results = {
        kk: {
            "model": evaluate_model(users, job_ids, y, seen, test_map, kk),
            "popularity": evaluate_rankings(lambda u: pop, job_ids, seen, test_map, kk, sorted(test_map)),
        }
        for kk in KS
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _plots(out_dir, results, users, y, seen, job_ids)
    if table:
        _search_plot(out_dir / "tuning.png", table, k)
    (out_dir / "report.md").write_text(_markdown(results, table, params, timings, by_time, k))
    (out_dir / "results.json").write_text(
        json.dumps(
            {"params": params.to_record(), "test": {str(kk): v for kk, v in results.items()}, "tuning": table},
            indent=2,
            default=str,
        )
    )
    return {"params": params.to_record(), "results": results, "tuning": table}


def run_evaluation_single_node(
    data: InteractionMatrix,
    base: AlsParams,
    out_dir: Path,
    *,
    tune: bool,
    budget_seconds: float,
    max_trials: int,
    k: int = 10,
    seed: int = 42,
    eval_users: int = 5000,
) -> dict[str, object]:
    """The same report from the implicit engine: per user (of at most `eval_users` sampled users) a random 20 %
    test split, 20 % of the pairs for validation carved from the rest, the search on train/validation only, the
    model trained on train + validation and measured on test beside popularity."""
    import time

    sampled = sample_users(data.user_ids, eval_users, seed)
    test_mask = holdout_mask(data, 0.2, seed, sampled)
    rest, test = data.select(~test_mask), data.select(test_mask)
    validation_mask = holdout_mask(rest, 0.2 / 0.8, seed + 1, sampled)
    train, validation = rest.select(~validation_mask), rest.select(validation_mask)
    params, table = base, list[dict[str, object]]()
    if tune:
        result = search_params(train, validation, base, k, budget_seconds, max_trials=max_trials)
        table = result.trials
        if result.n_complete:
            params = result.best
    started = time.monotonic()
    user_matrix, y, params = train_implicit(params, confidence_matrix(rest, params))
    y = y.astype(np.float64)
    timings = {"fit_s": round(time.monotonic() - started, 3)}
    test_rows = np.flatnonzero(np.diff(test.strength.indptr) > 0)
    job_ids = data.job_ids.tolist()
    users = {data.user_ids[u]: user_matrix[u].astype(np.float64) for u in test_rows}
    seen = {
        data.user_ids[u]: {
            job_ids[j] for j in rest.strength.indices[rest.strength.indptr[u] : rest.strength.indptr[u + 1]]
        }
        for u in test_rows
    }
    test_map = {
        data.user_ids[u]: {
            job_ids[j]: float(r)
            for j, r in zip(
                test.strength.indices[test.strength.indptr[u] : test.strength.indptr[u + 1]],
                test.strength.data[test.strength.indptr[u] : test.strength.indptr[u + 1]],
                strict=True,
            )
        }
        for u in test_rows
    }
    pop = popularity_from_counts(rest.users_per_job())
    return _write_report(out_dir, users, job_ids, y, seen, test_map, pop, table, params, timings, False, k)


def _search_plot(path: Path, trials: list[dict[str, Any]], k: int) -> None:
    """Validation NDCG@k per trial, by confidence form, with the best so far: where the search went and when it
    stopped finding better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    for form, marker in (("linear", "o"), ("log", "s"), ("binary", "^")):
        done = [r for r in trials if r["confidence"] == form and r["val_ndcg"] is not None]
        stopped = [r for r in trials if r["confidence"] == form and r["val_ndcg"] is None]
        if done:
            ax.scatter([r["trial"] for r in done], [r["val_ndcg"] for r in done], marker=marker, label=form)
        if stopped:
            ax.scatter(
                [r["trial"] for r in stopped],
                [r["ndcg_at_stop"] for r in stopped],
                marker=marker,
                facecolors="none",
                edgecolors="grey",
                alpha=0.5,
            )
    best, line = -1.0, []
    for r in sorted(trials, key=lambda r: int(r["trial"])):
        if r["val_ndcg"] is not None:
            best = max(best, float(r["val_ndcg"]))
        line.append((r["trial"], best if best >= 0 else np.nan))
    if line:
        ax.plot([x for x, _ in line], [y for _, y in line], "k-", lw=1, label="best so far")
    ax.set_xlabel("trial (hollow: stopped early by the pruner, at the NDCG it had then)")
    ax.set_ylabel(f"validation NDCG@{k}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(results, table, params: AlsParams, timings, by_time: bool, k: int) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"Split: per user {'newest' if by_time else 'random'} 20 % test, 20 % validation carved from the rest, "
        "seed 42. Parameters chosen on validation only; the model is trained on train + validation and "
        "measured on test, beside popularity on the same split.",
        "",
        f"Chosen parameters ({params.engine} engine): {describe(params)}. Train time {timings.get('fit_s')} s.",
        "",
        "## Test metrics",
        "",
        "| k | " + " | ".join(f"{m} (ALS)" for m in SHOWN) + " | " + " | ".join(f"{m} (pop)" for m in SHOWN) + " |",
        "|---|" + "---|" * (2 * len(SHOWN)),
    ]
    for kk, r in results.items():
        cells = [f"{r['model'][m]:.4f}" for m in SHOWN] + [f"{r['popularity'][m]:.4f}" for m in SHOWN]
        lines.append(f"| {kk} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "MPR is the expected percentile rank (0.5 is random, lower is better).",
        "",
        "![metrics against k](metrics_at_k.png)",
        "",
        "![score distribution](scores.png)",
        "",
    ]
    if table:
        best = sorted(table, key=lambda r: -(r["val_ndcg"] if r["val_ndcg"] is not None else -1.0))
        lines += [
            f"## Search (validation NDCG@{k})",
            "",
            f"{len(table)} trials ({sum(r['state'] == 'complete' for r in table)} complete, the others stopped early "
            "by the pruner or the budget); the best 20:",
            "",
            format_table(best[:20], SEARCH_COLUMNS),
            "",
            "![the search, trial by trial](tuning.png)",
            "",
        ]
    return "\n".join(lines)


def _plots(out_dir: Path, results, users, y, seen, job_ids) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(results)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, m in zip(axes, ("ndcg", "precision", "recall", "map"), strict=True):
        ax.plot(ks, [results[kk]["model"][m] for kk in ks], "o-", label="ALS")
        ax.plot(ks, [results[kk]["popularity"][m] for kk in ks], "s--", label="popularity")
        ax.set_title(f"{m}@k")
        ax.set_xlabel("k")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "metrics_at_k.png", dpi=110)
    plt.close(fig)

    position = {j: i for i, j in enumerate(job_ids)}
    sample = sorted(users)[:200]
    top: list[float] = []
    rest: list[float] = []
    for u in sample:
        s = y @ users[u]
        mask = np.ones(len(s), bool)
        mask[[position[j] for j in seen.get(u, ()) if j in position]] = False
        cand = s[mask]
        order = np.sort(cand)[::-1]
        top.extend(order[:10])
        rest.extend(order[10:])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(rest, bins=80, alpha=0.6, density=True, label="all other unseen jobs")
    ax.hist(top, bins=40, alpha=0.6, density=True, label="top 10")
    ax.set_xlabel("score x_u . y_i")
    ax.set_title(f"score distribution ({len(sample)} users)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "scores.png", dpi=110)
    plt.close(fig)
