"""`jobrec bench engines`: the single-machine engine's gated retrain + publish and `jobrec offline`, each beside the
`implicit` library doing the same work in the same run, on the seed and on a planted synthetic file (issue 12's
goal: at most 2x the reference).

- retrain + publish, ours: the file loaded into a fresh Delta interactions table (`jobrec load`, timed apart), then
  `retrain_and_publish`'s two steps with the search off: the gated retrain on the implicit engine (read the
  snapshot, validate a candidate, refit on all, write factors and the models row) and the publish of every user's
  top-N to the recommendations table and a topic on a local broker.
- the reference: pandas reads the CSV, a CSR of c = 1 + alpha per pair (binary), the same validation (hold out
  validation_share of up to eval_users users' pairs, fit on the rest, NDCG@k with implicit's own evaluation),
  refit on all, `recommend` for every user (seen jobs filtered, in blocks), the lists written as CSV.
- offline: `run_offline_single_node` (read, validation, fit, top-k CSV) against the reference without the
  validation (read, fit, recommend, write), and against the reference with it (the figure above).
Both sides train rank 32, 15 iterations, binary confidence, the config's lambda and alpha.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobrec.batch.backfill import CsvLayout
from jobrec.batch.core.params import AlsParams
from jobrec.schemas.config import Config

# the same fixed parameters on both sides (no search): what the comparison names
RANK, ITERATIONS, CONFIDENCE = 32, 15, "binary"
USERS_PER_BLOCK = 2048


@dataclass(frozen=True)
class EnginesBench:
    pairs: int = 2_000_000
    users: int = 100_000
    jobs: int = 20_000
    seed_csv: Path | None = None  # the seed's job_clicks.csv; None: not measured
    synthetic: bool = True


def bench_params(cfg: Config) -> AlsParams:
    from jobrec.batch.processes import als_params

    return replace(als_params(cfg), rank=RANK, max_iter=ITERATIONS, confidence=CONFIDENCE)


def reference_run(path: str, params: AlsParams, cfg: Config, out: str, validate: bool) -> dict[str, Any]:
    """The implicit library doing what a retrain + publish (or, without `validate`, `offline`) does, with pandas and
    a CSV in place of Delta and Kafka. Seconds per stage, the validation NDCG@k and the users listed."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.evaluation import ndcg_at_k
    from threadpoolctl import threadpool_limits

    layout, k, stages = CsvLayout(), cfg.gate.k, {}
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = round(now - clock, 3)
        clock = now

    frame = pd.read_csv(
        path,
        usecols=[layout.user_col, layout.job_col, layout.count_col],
        dtype={layout.user_col: str, layout.job_col: str},
    )
    frame = frame[frame[layout.count_col] > 0]
    users, user_ids = pd.factorize(frame[layout.user_col])
    jobs, job_ids = pd.factorize(frame[layout.job_col])
    shape = (len(user_ids), len(job_ids))
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, jobs)), shape=shape)
    matrix.data[:] = 1.0 + params.alpha  # binary confidence: a repeated pair still counts once
    lap("read_s")

    def fit(data: sp.csr_matrix) -> AlternatingLeastSquares:
        model = AlternatingLeastSquares(
            factors=params.rank,
            regularization=params.reg_param,
            alpha=1.0,
            iterations=params.max_iter,
            calculate_training_loss=False,
            random_state=params.seed,
        )
        model.fit(data, show_progress=False)
        return model

    figures: dict[str, Any] = {}
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS threads inside them only fight
        if validate:
            rng = np.random.default_rng(cfg.gate.seed)
            sampled = np.zeros(shape[0], bool)
            sampled[rng.choice(shape[0], min(cfg.gate.eval_users, shape[0]), replace=False)] = True
            counts = np.diff(matrix.indptr)
            rows = np.repeat(np.arange(shape[0]), counts)
            order = np.lexsort((rng.random(matrix.nnz), rows))
            position = np.empty(matrix.nnz, np.int64)
            position[order] = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
            n_held = np.where(
                sampled & (counts > 1), np.clip(np.rint(cfg.gate.validation_share * counts), 1, counts - 1), 0
            )
            held = position < n_held[rows]
            train, test = matrix.copy(), matrix.copy()
            train.data[held], test.data[~held] = 0, 0
            train.eliminate_zeros()
            test.eliminate_zeros()
            figures["validation_ndcg"] = round(float(ndcg_at_k(fit(train), train, test, K=k, show_progress=False)), 4)
            lap("validate_s")
        model = fit(matrix)
        lap("fit_s")
        ids, scores = [], []
        for lo in range(0, shape[0], USERS_PER_BLOCK):
            block = np.arange(lo, min(shape[0], lo + USERS_PER_BLOCK))
            i, s = model.recommend(block, matrix[block], N=k, filter_already_liked_items=True)
            ids.append(i)
            scores.append(s)
        top, score = np.vstack(ids), np.vstack(scores)
        lap("recommend_s")
    keep = (top >= 0) & np.isfinite(score)
    pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(user_ids, object), keep.sum(axis=1)),
            "job_id": np.asarray(job_ids, object)[top[keep]],
            "rank": np.nonzero(keep)[1] + 1,
            "score": score[keep],
        }
    ).to_csv(out, index=False, float_format="%.6f")
    lap("write_s")
    return {
        **figures,
        "seconds": round(time.perf_counter() - started, 3),
        **stages,
        "users": int(keep.any(axis=1).sum()),
    }


def ours_retrain_and_publish(spark: Any, cfg: Config, bootstrap: str, params: AlsParams) -> dict[str, Any]:
    """`retrain_and_publish` on the implicit engine with the search off (tuning not due): gated retrain, then the
    publish. Seconds per stage (the engine's own timings), the gate's verdict and the users sent a list."""
    from jobrec.batch.processes import publish_model
    from jobrec.batch.retrain import gated_retrain

    started = time.perf_counter()
    model, decision = gated_retrain(
        spark, cfg.storage.tables_root, params, cfg.gate, cfg.retrain.min_interactions, engine="implicit", retrain=None
    )
    retrain_s = time.perf_counter() - started
    published, publish_s = 0, None
    if decision.publish:
        clock = time.perf_counter()
        published = publish_model(spark, cfg, bootstrap, model.model_version, on_driver=True)
        publish_s = round(time.perf_counter() - clock, 3)
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "retrain_s": round(retrain_s, 3),
        **model.timings,
        "publish_s": publish_s,
        "validation_ndcg": _round((model.metrics or {}).get("validation", {}).get("ndcg")),
        "gate": decision.reason,
        "users": published,
    }


class _LogTimes(logging.Handler):
    """When each record of one logger was made: the offline run logs after reading, after validating and after
    writing, which splits its time into stages without touching it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.times.append(time.perf_counter())


def ours_offline(path: str, out: str, cfg: Config, params: AlsParams) -> dict[str, Any]:
    """`jobrec offline` without --tune on the implicit engine: seconds, and per stage where its log tells them."""
    from jobrec.batch import offline_single_node as offline

    settings = offline.OfflineSettings(
        k=cfg.gate.k,
        validation_share=cfg.gate.validation_share,
        eval_users=cfg.gate.eval_users,
        seed=cfg.gate.seed,
        weight=cfg.ingest.weights["click"],
    )
    logger, times = logging.getLogger(offline.__name__), _LogTimes()
    saved = logger.level, logger.propagate
    logger.addHandler(times)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # its lines are summed up below
    try:
        started = time.perf_counter()
        result = offline.run_offline_single_node(path, out, CsvLayout(), params, settings)
        seconds = time.perf_counter() - started
    finally:
        logger.removeHandler(times)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    figures = {"seconds": round(seconds, 3), "fit_s": result["fit_s"]}
    if len(times.times) == 3:  # read, verdict, written
        read_at, validated_at, written_at = (t - started for t in times.times)
        figures.update(
            read_s=round(read_at, 3),
            validate_s=round(validated_at - read_at, 3),
            write_s=round(written_at - validated_at - result["fit_s"], 3),
        )
    return {**figures, "validation_ndcg": round(result["validation_ndcg"], 4), "users": result["users"]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ratio(ours: float | None, reference: float | None) -> float | None:
    return round(ours / reference, 2) if ours and reference else None


def measure_dataset(spark: Any, cfg: Config, bootstrap: str, name: str, path: str, folder: Path) -> dict[str, Any]:
    """Every figure of one file: load, both retrain + publish runs, both offline runs, and the ratios."""
    from jobrec.batch.backfill import load_counts_csv

    params = bench_params(cfg)
    cfg = replace(cfg, storage=replace(cfg.storage, tables_root=str(folder / f"tables-{name}")))
    clock = time.perf_counter()
    loaded = load_counts_csv(spark, path, CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights)
    load_s = round(time.perf_counter() - clock, 3)
    ours = ours_retrain_and_publish(spark, cfg, bootstrap, params)
    _emit({"dataset": name, "run": "retrain+publish", "side": "ours", **ours})
    reference = reference_run(path, params, cfg, str(folder / f"{name}-reference-lists.csv"), validate=True)
    _emit({"dataset": name, "run": "retrain+publish", "side": "reference", **reference})
    offline = ours_offline(path, str(folder / f"{name}-offline.csv"), cfg, params)
    _emit({"dataset": name, "run": "offline", "side": "ours", **offline})
    plain = reference_run(path, params, cfg, str(folder / f"{name}-offline-reference.csv"), validate=False)
    _emit({"dataset": name, "run": "offline", "side": "reference", **plain})
    return {
        "pairs": loaded.pairs_loaded,
        "load_s": load_s,
        "retrain_publish_s": ours["seconds"],
        "reference_s": reference["seconds"],
        "retrain_publish_ratio": _ratio(ours["seconds"], reference["seconds"]),
        "offline_s": offline["seconds"],
        "offline_reference_s": plain["seconds"],
        "offline_ratio": _ratio(offline["seconds"], plain["seconds"]),
        "offline_ratio_vs_validating_reference": _ratio(offline["seconds"], reference["seconds"]),
        "lists_published": ours["users"],
        "offline_users": offline["users"],
        "reference_users": reference["users"],
    }


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def run_engines_bench(cfg: Config, bootstrap: str, folder: Path, bench: EnginesBench) -> int:
    """`jobrec bench engines` on a throwaway stack (`cfg` pointed at its broker, tables and topics; scratch files go
    in `folder`): one JSON line per measured run, then the summary (per dataset; ratios are ours / reference).
    Exits 1 when it measured nothing."""
    from jobrec.batch.bench.synthetic import planted_interactions, write_counts_csv
    from jobrec.batch.bench.verdict import measured_something
    from jobrec.batch.processes import spark_session

    # the gated flow is what is measured, whatever the config says about the gate
    cfg = replace(cfg, gate=replace(cfg.gate, enabled=True, refit=True))
    summary: dict[str, Any] = {
        "params": {"rank": RANK, "iterations": ITERATIONS, "confidence": CONFIDENCE, "lambda": cfg.als.reg_param}
        | {"alpha": cfg.als.alpha, "validation_users": cfg.gate.eval_users, "k": cfg.gate.k}
    }
    files: list[tuple[str, str]] = []
    if bench.seed_csv is not None:
        files.append(("seed", str(bench.seed_csv)))
    if bench.synthetic:
        clock = time.perf_counter()
        synthetic = folder / "synthetic.csv"
        write_counts_csv(synthetic, planted_interactions(bench.users, bench.jobs, bench.pairs, counts="heavy"))
        _emit({"dataset": "synthetic", "run": "generate", "seconds": round(time.perf_counter() - clock, 3)})
        files.append(("synthetic", str(synthetic)))
    with spark_session(cfg, "bench-engines") as spark:
        for name, path in files:
            summary[name] = measure_dataset(spark, cfg, bootstrap, name, path, folder)
    print(json.dumps(summary, indent=2))
    rests_on: dict[str, float | int | None] = {"datasets": len(files)}
    for name, _ in files:
        for key in ("pairs", "lists_published", "offline_users", "reference_users", "reference_s"):
            rests_on[f"{name}.{key}"] = summary[name][key]
    return measured_something("engines", rests_on)
