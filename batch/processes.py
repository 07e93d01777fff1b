"""The batch processes' composition roots: each function is one periodic or one-off process (`jobrec retrain`,
`publish`, `load`, `jobs load`, `jobs show`, `offline`, `evaluate`). Each builds the SparkSession it needs from the
validated config, hands it and plain settings to the code below, and stops it. The command line only parses.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession

from jobrec.batch.backfill import CsvLayout, LoadReport, load_counts_csv
from jobrec.batch.connections import build_spark_session, spark_kafka_options
from jobrec.batch.core.catalog import CategoryNormaliser
from jobrec.batch.core.params import AlsParams
from jobrec.batch.delta_tables import read_delta_table
from jobrec.batch.jobs_table import JobsLoadReport, count_jobs_by_state, load_jobs_csv, read_catalog_rows
from jobrec.batch.publish import publish_recommendations, recommend_top_n
from jobrec.batch.retrain import gated_retrain, resolve_engine
from jobrec.batch.table_writers import INGEST, RETRAIN, hold_writer_lock
from jobrec.batch.train import NotEnoughData, TrainedModel, read_factors, serving_model_version
from jobrec.schemas import tables as t
from jobrec.schemas.config import Config

log = logging.getLogger(__name__)


@contextmanager
def spark_session(cfg: Config, name: str) -> Iterator[SparkSession]:
    """A SparkSession for one process, stopped when the process's work is done, with the RDD checkpoints it
    wrote (they only cut ALS's lineage within this session; nothing reads them afterwards)."""
    spark = build_spark_session(cfg, f"jobrec-{name}")
    checkpoints = spark.sparkContext.getCheckpointDir()
    try:
        yield spark
    finally:
        spark.stop()
        if checkpoints and checkpoints.startswith("file:"):
            shutil.rmtree(urlparse(checkpoints).path, ignore_errors=True)


def als_params(cfg: Config) -> AlsParams:
    a = cfg.als
    return AlsParams(
        rank=a.rank,
        max_iter=a.max_iter,
        reg_param=a.reg_param,
        alpha=a.alpha,
        seed=a.seed,
        checkpoint_interval=a.checkpoint_interval,
        confidence=a.confidence,
        epsilon=a.epsilon,
        half_life_days=a.half_life_days,
    )


def retrain_and_publish(spark: SparkSession, cfg: Config, bootstrap: str | None, publish: bool = True) -> TrainedModel:
    """Train on the newest interactions behind the quality gate, record the model, and publish its top-N lists
    if it passed (and `publish`). If it was rejected and no model has ever passed, publish popularity lists
    (source fallback) instead: until a model passes, every known user and new users still get a list."""
    engine = resolve_engine(spark, cfg.storage.tables_root, cfg.als.engine, cfg.als.single_node_max_pairs)
    model, decision = gated_retrain(
        spark,
        cfg.storage.tables_root,
        als_params(cfg),
        cfg.gate,
        cfg.retrain.min_interactions,
        engine=engine,
        retrain=cfg.retrain,
    )
    log.info("model %s: %s; timings %s", model.model_version, decision.reason, model.timings)
    if not (publish and bootstrap):
        return model
    if decision.publish:
        # a model the single-machine engine trained is scored where it was trained: its data fits the driver
        publish_model(spark, cfg, bootstrap, model.model_version, on_driver=engine == "implicit")
    elif serving_model_version(spark, cfg.storage.tables_root) is None:
        publish_model(spark, cfg, bootstrap, None)
    return model


def publish_model(
    spark: SparkSession, cfg: Config, bootstrap: str, model_version: str | None, on_driver: bool = False
) -> int:
    """Every user's top-N of `model_version` (and the list for new users) to the table and the topic; with
    `model_version` None (no model has passed the gate), every user of the interactions table gets a popularity
    list instead (source fallback, model_version "popularity"). Returns the number of users sent a list; 0, and
    nothing sent, when there is no interaction at all.

    `on_driver`: score the lists on the driver (`jobrec.batch.driver_publish`, for data the single-machine engine
    trains on) rather than in Spark's Python workers; the same lists either way."""
    from jobrec.batch.fallback import recommend_popular
    from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION

    generated_at = datetime.now(timezone.utc)
    interactions = read_delta_table(spark, cfg.storage.tables_root, t.INTERACTIONS)
    catalog = read_catalog_rows(spark, cfg.storage.tables_root)
    if model_version is None:
        if interactions.isEmpty():
            return 0
        recs = recommend_popular(
            spark,
            interactions,
            cfg.publish.top_n,
            generated_at=generated_at,
            catalog=catalog,
            max_per_category=cfg.publish.max_per_category,
        )
        version, source = POPULARITY_MODEL_VERSION, t.SOURCE_FALLBACK
    else:
        user_factors, job_factors = read_factors(spark, cfg.storage.tables_root, model_version)
        # imported here: the HTTP API imports this module, and the driver publisher loads pandas
        from jobrec.batch.driver_publish import recommend_top_n_on_driver

        recommend: Callable[..., DataFrame] = (
            recommend_top_n_on_driver if on_driver else partial(recommend_top_n, new_user_list=True)
        )
        recs = recommend(
            spark,
            user_factors,
            job_factors,
            interactions,
            cfg.publish.top_n,
            model_version=model_version,
            generated_at=generated_at,
            catalog=catalog,
            max_per_category=cfg.publish.max_per_category,
        )
        version, source = model_version, t.SOURCE_BATCH
    n = publish_recommendations(
        spark,
        recs,
        cfg.storage.tables_root,
        spark_kafka_options(cfg.kafka, bootstrap),
        cfg.kafka.recommendations_topic,
        version,
        generated_at,
        source=source,
        cache=not on_driver,
    )
    if model_version is None:
        log.warning(
            "published popularity lists (source fallback) to %d users and for new users: no model has passed the "
            "quality gate yet",
            n,
        )
    return n


def run_retrain(
    cfg: Config,
    bootstrap: str | None,
    loop: bool,
    on_model: Callable[[TrainedModel], None],
    on_skip: Callable[[str], None],
) -> TrainedModel | None:
    """`jobrec retrain`: one gated retrain (published when `bootstrap` is given), or one every
    retrain.interval_seconds with `loop`; `on_model` hears of each model. A run with fewer interactions than
    retrain.min_interactions trains nothing and writes nothing: `on_skip` hears why, and the run returns None. A
    fresh installation's scheduled runs land there until data arrives, which is not a failure."""
    with hold_writer_lock(cfg.storage.checkpoints_root, RETRAIN, "retrain"), spark_session(cfg, "retrain") as spark:
        while True:
            model: TrainedModel | None = None
            try:
                model = retrain_and_publish(spark, cfg, bootstrap, publish=bootstrap is not None)
            except NotEnoughData as e:
                on_skip(str(e))
            else:
                on_model(model)
            if not loop:
                return model
            log.info("next retrain in %.0f s", cfg.retrain.interval_seconds)
            time.sleep(cfg.retrain.interval_seconds)


def run_publish(cfg: Config, bootstrap: str, model_version: str | None) -> tuple[str | None, int]:
    """`jobrec publish`: (the version published, lists sent). Before the first model passes the gate, popularity
    lists ("popularity", lists sent); (None, 0) when there is not even an interaction to rank jobs by."""
    from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION

    with hold_writer_lock(cfg.storage.checkpoints_root, RETRAIN, "publish"), spark_session(cfg, "publish") as spark:
        version = model_version or serving_model_version(spark, cfg.storage.tables_root)
        if version:
            engine = resolve_engine(spark, cfg.storage.tables_root, cfg.als.engine, cfg.als.single_node_max_pairs)
            return version, publish_model(spark, cfg, bootstrap, version, on_driver=engine == "implicit")
        n = publish_model(spark, cfg, bootstrap, None)
        return (POPULARITY_MODEL_VERSION, n) if n else (None, 0)


def run_load(cfg: Config, csv: str, layout: CsvLayout, event_type: str, binary: bool) -> LoadReport:
    """`jobrec load`: a (user, job, count) CSV merged into the interactions table, once per file content."""
    with hold_writer_lock(cfg.storage.checkpoints_root, INGEST, "load"), spark_session(cfg, "load") as spark:
        return load_counts_csv(
            spark, csv, layout, cfg.storage.tables_root, event_type, cfg.ingest.weights, binary=binary
        )


def run_jobs_load(cfg: Config, csv: str, job_col: str, category_col: str) -> JobsLoadReport:
    """`jobrec jobs load`: a jobs.csv-style file into the jobs table as open jobs, categories normalised."""
    normaliser = CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases)
    with hold_writer_lock(cfg.storage.checkpoints_root, INGEST, "jobs load"), spark_session(cfg, "jobs") as spark:
        return load_jobs_csv(spark, csv, cfg.storage.tables_root, normaliser, job_col, category_col)


def run_jobs_show(cfg: Config) -> list[tuple[str, int, int, int]]:
    """`jobrec jobs show`: (category, open, expired, closed) per category of the jobs table."""
    with spark_session(cfg, "jobs") as spark:
        return count_jobs_by_state(spark, cfg.storage.tables_root)


def run_offline_process(
    cfg: Config,
    path: str,
    out: str,
    k: int,
    layout: CsvLayout,
    tune: bool,
    binary: bool,
    budget_seconds: float | None = None,
    max_trials: int | None = None,
) -> dict[str, Any]:
    """`jobrec offline`: train on a CSV file and write every user's top K as CSV; no Kafka, no tables. The
    single-machine engine (als.engine implicit or auto) starts no JVM at all; the spark engine runs on Spark."""
    budget = cfg.retrain.tune_budget_seconds if budget_seconds is None else budget_seconds
    trials = cfg.retrain.tune_max_trials if max_trials is None else max_trials
    if cfg.als.engine != "spark":
        from jobrec.batch.offline_single_node import OfflineSettings, run_offline_single_node

        settings = OfflineSettings(
            k=k,
            tune=tune,
            budget_seconds=budget,
            max_trials=trials,
            binary=binary,
            validation_share=cfg.gate.validation_share,
            eval_users=cfg.gate.eval_users,
            seed=cfg.gate.seed,
            weight=cfg.ingest.weights["click"],
        )
        return run_offline_single_node(path, out, layout, als_params(cfg), settings)
    from jobrec.batch.offline import run_offline

    with spark_session(cfg, "offline") as spark:
        return run_offline(
            spark,
            path,
            out,
            k,
            layout,
            als_params(cfg),
            cfg.ingest.weights,
            tune=tune,
            budget_seconds=budget,
            max_trials=trials,
            binary=binary,
        )


def run_evaluate(
    cfg: Config,
    path: str,
    out: Path,
    layout: CsvLayout,
    tune: bool,
    by_time: bool,
    binary: bool,
    budget_seconds: float | None = None,
    max_trials: int | None = None,
) -> dict[str, Any]:
    """`jobrec evaluate`: ranking metrics on a held-out split beside popularity, written as a report in `out`.
    The implicit engine (no JVM) unless als.engine is spark or the split is by time (a counts file's pairs have
    no times; the Spark path reads them from the file's rows)."""
    budget = cfg.retrain.tune_budget_seconds if budget_seconds is None else budget_seconds
    trials = cfg.retrain.tune_max_trials if max_trials is None else max_trials
    if cfg.als.engine != "spark" and not by_time:
        from jobrec.batch.offline_single_node import read_matrix
        from jobrec.batch.report import run_evaluation_single_node

        data, _ = read_matrix(path, layout, binary, cfg.ingest.weights["click"])
        return run_evaluation_single_node(
            data,
            als_params(cfg),
            out,
            tune=tune,
            budget_seconds=budget,
            max_trials=trials,
            seed=cfg.gate.seed,
            eval_users=cfg.gate.eval_users,
        )
    from jobrec.batch.offline import read_interactions_file
    from jobrec.batch.report import run_evaluation

    with spark_session(cfg, "evaluate") as spark:
        interactions = read_interactions_file(spark, path, layout, cfg.ingest.weights, binary=binary)
        return run_evaluation(
            spark,
            interactions,
            als_params(cfg),
            out,
            tune=tune,
            by_time=by_time,
            budget_seconds=budget,
            max_trials=trials,
        )
