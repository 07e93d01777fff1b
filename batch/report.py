"""`jobrec evaluate`: an honest evaluation report on a file (the seed data by default).

Split per user (random or newest) into train, validation and test with a fixed seed; choose the parameters on
validation only (with --tune); train on train + validation; report precision, recall, MAP, NDCG, AUC, expected
percentile rank and coverage at several k on test, beside popularity on the same split; write Markdown with PNG
plots: metrics against k, the tuning surface, the score distribution.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from jobrec.batch.core.evaluate import evaluate_model, evaluate_rankings, popularity_scores
from jobrec.batch.core.split import train_validation_test
from jobrec.batch.train import AlsParams, train_on
from jobrec.batch.tune import Grid, format_table, grid_search
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
    grid: Grid | None = None,
) -> dict[str, object]:
    by_user: dict[str, list] = {}
    for r in interactions.select(t.USER_ID, t.JOB_ID, t.STRENGTH, t.LAST_AT).collect():
        by_user.setdefault(r[0], []).append((r[1], float(r[2]), r[3]))
    train, validation, test = train_validation_test(by_user, 0.2, 0.2, seed, by_time)
    params, table = base, []
    if tune:
        train_df = _frame(spark, train)
        train_sets = {u: {j for j, _, _ in rs} for u, rs in train.items()}
        val_map = {u: {j: s for j, s, _ in rs} for u, rs in validation.items()}

        def score(p: AlsParams) -> dict[str, float]:
            users, job_ids, y = _factors(train_on(train_df, -1, p))
            return evaluate_model(users, job_ids, y, train_sets, val_map, k)

        table = grid_search((grid or Grid()).points(base), score)
        params = AlsParams(**{f: table[0][f] for f in asdict(base)})  # type: ignore[arg-type]
    fit_rows = {u: train.get(u, []) + validation.get(u, []) for u in by_user}
    model = train_on(_frame(spark, fit_rows), -1, params)
    users, job_ids, y = _factors(model)
    seen = {u: {j for j, _, _ in rs} for u, rs in fit_rows.items()}
    test_map = {u: {j: s for j, s, _ in rs} for u, rs in test.items()}
    pop = popularity_scores(seen, job_ids)
    results = {
        kk: {
            "model": evaluate_model(users, job_ids, y, seen, test_map, kk),
            "popularity": evaluate_rankings(lambda u: pop, job_ids, seen, test_map, kk, sorted(test_map)),
        }
        for kk in KS
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _plots(out_dir, results, table, users, y, seen, job_ids)
    report = _markdown(results, table, params, model.timings, by_time, k)
    (out_dir / "report.md").write_text(report)
    (out_dir / "results.json").write_text(
        json.dumps(
            {"params": asdict(params), "test": {str(kk): v for kk, v in results.items()}, "tuning": table},
            indent=2,
            default=str,
        )
    )
    return {"params": asdict(params), "results": results, "tuning": table}


def _markdown(results, table, params: AlsParams, timings, by_time: bool, k: int) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"Split: per user {'newest' if by_time else 'random'} 20 % test, 20 % validation carved from the rest, "
        "seed 42. Parameters chosen on validation only; the model is trained on train + validation and "
        "measured on test, beside popularity on the same split.",
        "",
        f"Chosen parameters: rank {params.rank}, iterations {params.max_iter}, lambda {params.reg_param}, "
        f"alpha {params.alpha}. Train time {timings.get('fit_s')} s.",
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
        lines += [
            f"## Tuning (validation NDCG@{k})",
            "",
            format_table(
                table, ("rank", "max_iter", "reg_param", "alpha", "val_ndcg", "val_precision", "val_recall", "seconds")
            ),
            "",
            "![tuning surface](tuning.png)",
            "",
        ]
    return "\n".join(lines)


def _plots(out_dir: Path, results, table, users, y, seen, job_ids) -> None:
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

    if table:
        ranks = sorted({r["rank"] for r in table})
        alphas = sorted({r["alpha"] for r in table})
        grid = np.full((len(ranks), len(alphas)), np.nan)
        for r in table:  # best over the other parameters
            i, j = ranks.index(r["rank"]), alphas.index(r["alpha"])
            grid[i, j] = np.nanmax([grid[i, j], r["val_ndcg"]])
        fig, ax = plt.subplots(figsize=(5, 3.6))
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(alphas)), [str(a) for a in alphas])
        ax.set_yticks(range(len(ranks)), [str(r) for r in ranks])
        ax.set_xlabel("alpha")
        ax.set_ylabel("rank")
        for i in range(len(ranks)):
            for j in range(len(alphas)):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im, label="validation NDCG@10 (best over lambda, iterations)")
        fig.tight_layout()
        fig.savefig(out_dir / "tuning.png", dpi=110)
        plt.close(fig)
