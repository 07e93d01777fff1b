"""`jobrec`: the command line of the pipeline. It parses arguments, reads and validates the config, and calls one
composition function per process (`jobrec.streaming.processes`, `jobrec.batch.processes`, the local tooling in
`jobrec.streaming.local` and the benchmarks); those build the SparkSession and Kafka clients.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from jobrec.schemas.config import DATA_DIR_ENV, Config, ConfigError, load_config
from jobrec.streaming.log_setup import config_secrets, setup_logging

log = logging.getLogger("jobrec")

# exit codes (README, "Commands"): 0 done, 1 failed (one line on stderr says why), 2 bad config or arguments,
# 3 nothing there (kafka status: no broker; spark-cluster status: no cluster; publish: no published model yet), 4 the
# retrained model was rejected
EXIT_FAILED, EXIT_NOTHING, EXIT_REJECTED = 1, 3, 4

# the seed data set beside a checkout (`make demo` runs from the checkout); JOBREC_SEED_DIR or --seed-dir elsewhere
SEED_DIR = os.environ.get("JOBREC_SEED_DIR", "../shared/data/seed")


def _bootstrap(cfg: Config) -> str:
    from jobrec.streaming.local.embedded_kafka import resolve_bootstrap

    return resolve_bootstrap(cfg.kafka, cfg.embedded_kafka)


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def cmd_kafka(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.streaming.local.embedded_kafka import running_broker, start_local_kafka, stop_broker

    if args.action == "start":
        state = start_local_kafka(cfg.kafka, cfg.embedded_kafka)
        print(
            f"Kafka broker running at {state.bootstrap} (pid {state.pid}); topics "
            f"{cfg.kafka.clicks_topic}, {cfg.kafka.recommendations_topic}, {cfg.kafka.jobs_topic}"
        )
    elif args.action == "stop":
        print("Kafka broker stopped" if stop_broker(cfg.embedded_kafka) else "no Kafka broker was running")
    else:
        found = running_broker(cfg.embedded_kafka)
        print(f"running at {found.bootstrap} (pid {found.pid})" if found else "not running")
        return 0 if found else EXIT_NOTHING
    return 0


def cmd_spark_cluster(cfg: Config, args: argparse.Namespace) -> int:
    """A Spark standalone master and worker on this machine: `spark.master` of a config that runs on it."""
    from jobrec.schemas.config import data_dir_of, resolve_path
    from jobrec.streaming.local.spark_cluster import running_cluster, start_cluster, stop_cluster

    folder = Path(resolve_path(args.dir, data_dir_of(args.data_dir)))
    if args.action == "start":
        state = start_cluster(folder, cores=args.cores, memory=args.memory)
        jars = f"local://{cfg.spark.jars_dir}" if cfg.spark.jars_dir and "://" not in cfg.spark.jars_dir else ""
        print(
            f"Spark master at {state.master_url} (web UI {state.ui_url}), one worker with {state.cores} cores and "
            f"{state.memory} for executors; logs and executors' work folders in {folder}. Run the pipeline on it "
            f"with spark.master: {state.master_url}"
            + (f" and spark.jars_dir: {jars} (the jars as production ships them)" if jars else "")
        )
    elif args.action == "stop":
        print("Spark cluster stopped" if stop_cluster(folder) else "no Spark cluster was running")
    else:
        found = running_cluster(folder)
        print(
            f"running at {found.master_url} (web UI {found.ui_url}; master pid {found.master_pid}, worker pid "
            f"{found.worker_pid})"
            if found
            else "not running"
        )
        return 0 if found else EXIT_NOTHING
    return 0


def cmd_ingest(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.streaming.processes import run_ingest_process

    try:
        run_ingest_process(cfg, _bootstrap(cfg), args.once, _stop_on_sigterm(), args.recover_checkpoint)
    except KeyboardInterrupt:
        log.info("interrupted")
    print(
        f"ingest {'caught up with' if args.once else 'stopped reading'} {cfg.kafka.clicks_topic} and "
        f"{cfg.kafka.jobs_topic}; `jobrec status` counts the tables and dead letters, `jobrec retrain` trains on them"
    )
    return 0


def cmd_speed(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.streaming.processes import run_speed_process, supervise_speed_processes

    if args.processes > 1:
        command = [sys.executable, "-m", "jobrec.streaming.cli", "--log-level", args.log_level]
        command += ["--config", os.path.abspath(args.config)] if args.config else []
        command += ["--data-dir", os.path.abspath(args.data_dir)] if args.data_dir else []
        command += ["speed"] + (["--stats-dir", os.path.abspath(args.stats_dir)] if args.stats_dir else [])
        restarts = supervise_speed_processes(command, args.processes, _stop_on_sigterm())
        print(f"speed instances stopped ({args.processes}, {restarts} restarts)")
        return 0
    try:
        stats = run_speed_process(cfg, _bootstrap(cfg), _stop_on_sigterm())
    except KeyboardInterrupt:
        stats = None
    print(f"speed layer stopped: {stats}")
    if stats is not None and args.stats_dir:
        import dataclasses
        import json

        folder = Path(args.stats_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"speed-{os.getpid()}.json").write_text(json.dumps(dataclasses.asdict(stats)))
    return 0


def cmd_api(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.streaming.processes import serve_api

    serve_api(cfg, _bootstrap(cfg), args.host or cfg.api.host, args.port or cfg.api.port)
    print("API stopped")
    return 0


def cmd_load(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.batch.processes import run_load

    report = run_load(cfg, args.csv, _layout(args), args.event_type, args.binary)
    print(
        "already loaded (same file content): nothing added"
        if report.skipped_as_already_loaded
        else f"loaded {report.pairs_loaded} (user, job) pairs from {report.rows_read} rows "
        f"({report.rows_zero} zero-count rows and {report.rows_bad} bad rows skipped); `jobrec retrain` trains on them"
    )
    return 0


def cmd_jobs(cfg: Config, args: argparse.Namespace) -> int:
    """The job catalog: load a jobs.csv, post or close a job (an event on the jobs topic), or print the table."""
    from jobrec.batch.processes import run_jobs_load, run_jobs_show

    if args.action in ("post", "close"):
        return _send_job_event(cfg, args)
    if args.action == "load" and args.to_topic:
        return _send_jobs_csv(cfg, args)
    if args.action == "load":
        report = run_jobs_load(cfg, args.csv, args.job_col, args.category_col)
        print(
            f"{report.rows_read} rows read ({report.rows_bad} without a job id): {report.jobs_inserted} jobs "
            f"inserted, {report.categories_updated} categories updated; {report.normalisation}"
        )
        return 0
    rows = run_jobs_show(cfg)
    print(f"{'category':<24}{'open':>8}{'expired':>9}{'closed':>8}")
    for category, n_open, n_expired, n_closed in rows:
        print(f"{category:<24}{n_open:>8}{n_expired:>9}{n_closed:>8}")
    totals = [sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows)]
    print(
        f"{sum(totals):,} jobs: {totals[0]:,} open, {totals[1]:,} expired, {totals[2]:,} closed"
        if rows
        else "no jobs in the catalog yet: `jobrec jobs load jobs.csv` or `jobrec jobs post JOB`"
    )
    return 0


def _send_jobs_csv(cfg: Config, args: argparse.Namespace) -> int:
    """`jobs load --to-topic`: the file's jobs as posted events on the jobs topic, for the running ingest to write
    (the jobs table has one writer, the ingest; see batch/table_writers.py)."""
    from jobrec.batch.core.catalog import CategoryNormaliser
    from jobrec.batch.jobs_table import read_jobs_csv
    from jobrec.streaming.processes import send_job_event_batch
    from jobrec.streaming.producer import make_job_event

    normaliser = CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases)
    rows, n_read, n_bad = read_jobs_csv(args.csv, normaliser, args.job_col, args.category_col)
    # the raw category: the ingest normalises it, with the aliases of its own config
    events = [make_job_event(job, "posted", raw) for job, _, raw in rows]
    n = send_job_event_batch(cfg, _bootstrap(cfg), events)
    print(
        f"{n_read} rows read ({n_bad} without a job id): {n} posted events acknowledged on {cfg.kafka.jobs_topic}; "
        "the running `jobrec ingest` writes them to the jobs table"
    )
    return 0


def _send_job_event(cfg: Config, args: argparse.Namespace) -> int:
    from datetime import datetime

    from jobrec.streaming.processes import send_job_event_batch
    from jobrec.streaming.producer import make_job_event

    if args.action == "post":
        expires = datetime.fromisoformat(args.expires_at) if args.expires_at else None
        if expires is not None and expires.tzinfo is None:
            raise ValueError(f"--expires-at {args.expires_at}: give a time zone offset, e.g. 2027-01-31T00:00:00Z")
        events = [make_job_event(job, "posted", args.category, expires) for job in args.job_id]
    else:
        events = [make_job_event(job, "closed") for job in args.job_id]
    n = send_job_event_batch(cfg, _bootstrap(cfg), events)
    print(f"{n} {args.action} event(s) acknowledged on {cfg.kafka.jobs_topic}; `jobrec ingest` applies them")
    return 0


def cmd_retrain(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.batch.processes import run_retrain
    from jobrec.batch.train import TrainedModel
    from jobrec.schemas import tables as t

    bootstrap = None if args.no_publish else _bootstrap(cfg)
    run_started = [time.monotonic()]

    def push(outcome: str, model: TrainedModel | None = None) -> None:
        # each run's outcome to the Pushgateway (a scheduled Job exits before anything could scrape it)
        if cfg.metrics.pushgateway_url:
            from jobrec.streaming.process_metrics import push_retrain_metrics, retrain_registry

            seconds = time.monotonic() - run_started[0]
            push_retrain_metrics(cfg.metrics.pushgateway_url, retrain_registry(outcome, seconds, model))
        run_started[0] = time.monotonic()

    def report(model: TrainedModel) -> None:
        rejected, published = model.status == t.STATUS_REJECTED, bootstrap is not None
        push("rejected" if rejected else "published" if published else "passed", model)
        size = f"{model.n_users:,} users x {model.n_jobs:,} jobs, {model.n_interactions:,} interactions"
        verdict = model.metrics.get("gate", "quality gate disabled")
        if model.status == t.STATUS_REJECTED:
            print(
                f"model {model.model_version} rejected by the quality gate: {verdict}. A serving model stays; "
                "before any model has passed, users get popularity lists (source fallback). `jobrec status` shows "
                "which; the next retrain searches for better parameters."
            )
        elif bootstrap is None:
            print(f"model {model.model_version} passed ({size}): {verdict}; not published (--no-publish)")
        else:
            print(
                f"model {model.model_version} published ({size}): {verdict}; its lists are on "
                f"{cfg.kafka.recommendations_topic}: `jobrec show` prints some."
            )

    def skipped(reason: str) -> None:
        push("skipped")
        # exit 0: a scheduled retrain on a fresh installation has nothing to train yet, and that is no failure
        print(
            f"retrain skipped, nothing trained or published: {reason}. A serving model stays; the next run tries again"
        )

    try:
        model = run_retrain(cfg, bootstrap, args.loop, report, skipped)
    except Exception:
        push("failed")
        raise
    return EXIT_REJECTED if model is not None and model.status == t.STATUS_REJECTED else 0


def cmd_offline(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.batch.processes import run_offline_process

    result = run_offline_process(
        cfg,
        args.interactions,
        args.out,
        args.k,
        _layout(args),
        args.tune,
        args.binary,
        budget_seconds=args.budget,
        max_trials=args.max_trials,
    )
    if result.get("table_markdown"):
        print(result["table_markdown"])
    p = result["params"]
    chosen = (
        f"{p['confidence']} alpha={p['alpha']:.4g} lambda={p['reg_param']:.4g} rank={p['rank']} "
        f"iterations={p['max_iter']}"
    )
    against = ""
    if "validation_ndcg" in result:
        better = "beats" if result["beats_popularity"] else "does NOT beat"
        against = (
            f"; validation NDCG@{args.k} {result['validation_ndcg']:.4f} {better} popularity's "
            f"{result['popularity_ndcg']:.4f}"
        )
    print(f"top {args.k} of {result['users']:,} users written to {args.out} ({chosen}{against})")
    return 0


def _layout(args: argparse.Namespace):
    from jobrec.batch.backfill import CsvLayout

    return CsvLayout(args.sep, args.user_col, args.job_col, args.count_col)


def _add_layout_options(p: argparse.ArgumentParser) -> None:
    """How a (user, job, count) CSV is laid out; the defaults read the seed's job_clicks.csv."""
    p.add_argument("--binary", action="store_true", help="a pair with count > 0 counts once (noisy counts)")
    p.add_argument("--sep", default=",", help="field separator (default ,)")
    p.add_argument("--user-col", default="userId", help="user id column (default userId)")
    p.add_argument("--job-col", default="jobId", help="job id column (default jobId)")
    p.add_argument("--count-col", default="Clicks", help="count column (default Clicks)")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {text})")
    return value


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        type=_positive_float,
        metavar="SECONDS",
        help="time the search may take (default retrain.tune_budget_seconds of the config, 40)",
    )
    p.add_argument(
        "--max-trials", type=_positive_int, help="most trials of the search (default retrain.tune_max_trials, 200)"
    )


def cmd_evaluate(cfg: Config, args: argparse.Namespace) -> int:
    if args.online:
        return _evaluate_online(cfg, args)
    from jobrec.batch.processes import run_evaluate

    out = Path(args.out or "reports/evaluation")
    result = run_evaluate(
        cfg,
        args.interactions,
        out,
        _layout(args),
        args.tune,
        args.split == "time",
        args.binary,
        budget_seconds=args.budget,
        max_trials=args.max_trials,
    )
    r10 = result["results"][10]
    print(
        f"test NDCG@10: ALS {r10['model']['ndcg']:.4f}, popularity {r10['popularity']['ndcg']:.4f}; "
        f"parameters {result['params']}; report {out / 'report.md'}"
    )
    return 0


def _evaluate_online(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.batch.core.online_eval import format_counts_table
    from jobrec.batch.online_evaluation import run_online_evaluation

    out = Path(args.out or "reports/online-evaluation")
    run, report, path = run_online_evaluation(cfg, _bootstrap(cfg), out, args.window_hours)
    if cfg.metrics.pushgateway_url:
        from jobrec.streaming.process_metrics import online_evaluation_registry, push_online_evaluation_metrics

        push_online_evaluation_metrics(cfg.metrics.pushgateway_url, online_evaluation_registry(report))
    if not report.per_model_version:
        print(
            f"no list served in the last {cfg.online_evaluation.days:g} days on {cfg.kafka.recommendations_topic} or "
            "in the recommendations table: lists come from `jobrec retrain` and `jobrec speed`"
        )
    else:
        print(format_counts_table(report.per_source, per_model_version=False))
        print()
        print(format_counts_table(report.per_model_version))
    print(
        f"\n{run.decided} list(s) decided by this run, {run.pending} pending (events taken as complete to "
        f"{run.as_of.isoformat(timespec='seconds')}); report {path}"
    )
    return 0


def cmd_publish(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.batch.processes import run_publish

    version, n = run_publish(cfg, _bootstrap(cfg), args.model_version)
    if not version:
        print(
            "no published model yet: run `jobrec retrain` (`jobrec status` says why a model was rejected)",
            file=sys.stderr,
        )
        return EXIT_NOTHING
    from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION

    if version == POPULARITY_MODEL_VERSION:
        print(
            f"published {n} popularity lists (source fallback) to {cfg.kafka.recommendations_topic}: no model has "
            "passed the quality gate yet (`jobrec status` says why)"
        )
        return 0
    print(f"published {n} lists of model {version} to {cfg.kafka.recommendations_topic}")
    return 0


def cmd_show(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.schemas.recommendation import NEW_USER_KEY
    from jobrec.streaming.local.demo import print_lists
    from jobrec.streaming.processes import read_lists

    lists = read_lists(cfg, _bootstrap(cfg))
    users = args.user or sorted(lists)[: args.limit]
    print_lists(lists, users, None)
    n_users = len(lists) - (NEW_USER_KEY in lists)
    if not lists:
        print(
            f"no lists on {cfg.kafka.recommendations_topic} yet: lists come from a model that passed the quality gate "
            "(`jobrec retrain`); `jobrec status` shows the serving model, or why the last one was rejected"
        )
        return EXIT_NOTHING
    new_users = f", and the list for new users (key {NEW_USER_KEY})" if NEW_USER_KEY in lists else ""
    print(f"{n_users:,} users have a list on {cfg.kafka.recommendations_topic}{new_users}")
    return 0


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    import json

    from jobrec.streaming.local.embedded_kafka import KafkaNotConfigured
    from jobrec.streaming.status import collect_status, format_status

    try:
        bootstrap: str | None = _bootstrap(cfg)
    except KafkaNotConfigured:
        bootstrap = None  # the status says so, with how to start one
    status = collect_status(cfg, bootstrap, timeout_seconds=args.timeout)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0  # a report, whatever it found: scripts read "healthy" and "next_step" from --json


def cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.streaming.local.demo import run_demo

    return run_demo(cfg, _seed_dir(args.seed_dir), args.live_events, args.keep_kafka)


def cmd_bench(cfg: Config, args: argparse.Namespace) -> int:
    if args.what == "freshness":
        from jobrec.streaming.bench.freshness import run_freshness

        return run_freshness(cfg, _seed_dir(args.seed_dir), args.rate, args.seconds, args.json, args.processes)
    if args.what == "api" and args.mode == "similar":
        from jobrec.streaming.bench.api_serving import run_api_serving_bench

        return run_api_serving_bench(cfg, args.seconds, args.concurrency, args.model_jobs, args.rank, args.json)
    if args.what == "api":
        from jobrec.streaming.bench.api import run_api_bench

        return run_api_bench(cfg, args.seconds, args.concurrency, args.batch_size, args.json)
    if args.what == "implicit":
        from jobrec.batch.bench.implicit import run_implicit_bench

        return run_implicit_bench(cfg, _seed_dir(args.seed_dir))
    if args.what == "category-cap":
        from jobrec.batch.bench.category_cap import run_category_cap_bench

        caps = [int(c) for c in args.caps.split(",")]
        return run_category_cap_bench(cfg, _seed_dir(args.seed_dir), caps)
    if args.what == "engines":
        return _bench_engines(cfg, args)
    if args.what == "speed-start":
        from jobrec.streaming.bench.speed_start import run_speed_start_bench

        sizes = [int(float(n)) for n in args.interactions.split(",")]
        return run_speed_start_bench(cfg, sizes, args.json)
    from jobrec.streaming.bench.pipeline import run_bench

    return run_bench(cfg, args.what, args.events, _seed_dir(args.seed_dir))


def _bench_engines(cfg: Config, args: argparse.Namespace) -> int:
    from jobrec.batch.bench.engines import EnginesBench, run_engines_bench
    from jobrec.streaming.bench.stack import temporary_stack

    if args.skip_seed and args.skip_synthetic:
        print("jobrec: bench engines: --skip-seed and --skip-synthetic leave nothing to measure", file=sys.stderr)
        return 2
    seed_csv = None if args.skip_seed else _seed_dir(args.seed_dir) / "job_clicks.csv"
    bench = EnginesBench(args.pairs, args.users, args.jobs, seed_csv, synthetic=not args.skip_synthetic)
    with temporary_stack(cfg, "jobrec-bench-engines-") as stack:
        return run_engines_bench(stack.cfg, stack.broker.bootstrap, stack.folder, bench)


def _seed_dir(text: str) -> Path:
    folder = Path(text).expanduser()
    if not (folder / "job_clicks.csv").is_file():
        raise FileNotFoundError(f"no job_clicks.csv in {folder.resolve()}: pass --seed-dir DIR or set JOBREC_SEED_DIR")
    return folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobrec",
        description="The streaming job recommender's command line: one subcommand per process (ingest, speed, api, "
        "retrain, ...), each with --help.",
    )
    p.add_argument(
        "--config",
        help="YAML file overriding the packaged defaults (every key, commented: deploy/config/default.yaml in the "
        "repository, jobrec/schemas/config.default.yaml when installed)",
    )
    p.add_argument(
        "--data-dir",
        help="base of the relative paths in the config (tables, checkpoints, the local broker); "
        f"default ${DATA_DIR_ENV}, else the current folder",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser("kafka", help="start, stop or check the embedded local Kafka broker")
    k.add_argument("action", choices=["start", "stop", "status"])
    k.set_defaults(func=cmd_kafka)

    sc = sub.add_parser(
        "spark-cluster",
        help="start, stop or check a Spark standalone master and worker on this machine (cluster mode, locally)",
    )
    sc.add_argument("action", choices=["start", "stop", "status"])
    sc.add_argument(
        "--dir", default=".local/spark-cluster", help="state, logs and executors' work folders (default %(default)s)"
    )
    sc.add_argument(
        "--cores", type=_positive_int, default=2, help="start: cores the worker offers executors (default 2)"
    )
    sc.add_argument("--memory", default="2g", help="start: memory the worker offers executors (default 2g)")
    sc.set_defaults(func=cmd_spark_cluster)

    i = sub.add_parser(
        "ingest",
        help="stream click events from Kafka into the Delta tables (events and dead_letters each micro-batch, "
        "interactions folded from events every ingest.fold_seconds)",
    )
    i.add_argument(
        "--once", action="store_true", help="read what is on the topic now, fold it into interactions, then stop"
    )
    i.add_argument(
        "--recover-checkpoint",
        action="store_true",
        help="the clicks checkpoint was lost: start a new one after the newest offsets the tables hold (README: "
        "Exactly once); refused while a checkpoint is there",
    )
    i.set_defaults(func=cmd_ingest)

    sp = sub.add_parser(
        "speed",
        help="refresh a user's list within seconds of their clicks (fold-in); instances share the clicks "
        "topic's partitions in one consumer group",
    )
    sp.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="speed instances to run on this machine, each owning some partitions of the clicks topic (at most "
        "kafka.clicks_partitions do work); one that exits is started again",
    )
    sp.add_argument("--stats-dir", help="on stop, write each instance's counters as JSON to DIR/speed-PID.json")
    sp.set_defaults(func=cmd_speed)

    a = sub.add_parser("api", help="the HTTP ingest and read API (POST /v1/events, GET /v1/recommendations/ID)")
    a.add_argument("--host", help="default api.host")
    a.add_argument("--port", type=int, help="default api.port")
    a.set_defaults(func=cmd_api)

    ld = sub.add_parser("load", help="backfill a CSV of (user, job, count) rows into the interactions table")
    ld.add_argument("csv", help="path of the CSV file (with a header row)")
    _add_layout_options(ld)
    ld.add_argument("--event-type", default="click", help="which event type the counts are (default click)")
    ld.set_defaults(func=cmd_load)

    j = sub.add_parser("jobs", help="the job catalog: load a jobs CSV, post or close jobs, show the table")
    jsub = j.add_subparsers(dest="action", required=True, metavar="ACTION")
    jl = jsub.add_parser("load", help="insert a jobs.csv-style file into the jobs table (categories normalised)")
    jl.add_argument("csv", help="CSV with a header row: a job id and a category column")
    jl.add_argument("--job-col", default="jobID", help="job id column (default jobID)")
    jl.add_argument("--category-col", default="job_category", help="category column (default job_category)")
    jl.add_argument(
        "--to-topic",
        action="store_true",
        help="send the jobs as posted events to the jobs topic for the running ingest to write, instead of writing "
        "the table (which is refused while an ingest runs: one process writes the ingest's tables)",
    )
    jp = jsub.add_parser("post", help="send a posted event for jobs (open, or open again)")
    jp.add_argument("job_id", nargs="+")
    jp.add_argument("--category", help="the jobs' category (normalised on ingest)")
    jp.add_argument("--expires-at", help="RFC 3339 time after which the jobs are not recommended")
    jc = jsub.add_parser("close", help="send a closed event for jobs: no list published afterwards contains them")
    jc.add_argument("job_id", nargs="+")
    jsub.add_parser("show", help="count the jobs in the table by category: open, expired, closed")
    j.set_defaults(func=cmd_jobs)

    r = sub.add_parser("retrain", help="train ALS on the interactions, record the model, publish top-N lists")
    r.add_argument("--no-publish", action="store_true", help="train and record only")
    r.add_argument("--loop", action="store_true", help="retrain every retrain.interval_seconds until stopped")
    r.set_defaults(func=cmd_retrain)

    o = sub.add_parser("offline", help="train on a CSV file and write every user's top K as CSV (no Kafka)")
    o.add_argument("--interactions", required=True, help="CSV of (user, job, count) rows with a header")
    o.add_argument("--out", required=True, help="where to write user_id,job_id,rank,score")
    o.add_argument("--k", type=int, default=10, help="jobs per user (default 10)")
    o.add_argument(
        "--tune",
        action="store_true",
        help="search the confidence form, alpha, lambda, rank and iterations on a validation split first",
    )
    _add_search_options(o)
    _add_layout_options(o)
    o.set_defaults(func=cmd_offline)

    ev = sub.add_parser(
        "evaluate",
        help="ranking metrics on a held-out split, beside popularity; with --online, how served lists fared "
        "(hit rate, MRR per source and model version); Markdown + PNG report",
    )
    ev.add_argument(
        "--online",
        action="store_true",
        help="evaluate the lists served (recommendations topic and table) against the events table's interactions "
        "into the online_evaluation table, and report the period's hit rates; the options below --window-hours "
        "are for the offline evaluation",
    )
    ev.add_argument(
        "--window-hours",
        type=_positive_float,
        help="--online: a list counts as shown for at most this many hours (default online_evaluation.window_hours)",
    )
    ev.add_argument("--interactions", default=f"{SEED_DIR}/job_clicks.csv", help="CSV of (user, job, count) rows")
    ev.add_argument(
        "--out",
        help="folder for report.md, results.json and the plots (default reports/evaluation, with --online "
        "reports/online-evaluation)",
    )
    ev.add_argument("--tune", action="store_true", help="search the parameters on the validation split")
    _add_search_options(ev)
    ev.add_argument("--split", choices=["random", "time"], default="random", help="per-user random or newest holdout")
    _add_layout_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    pb = sub.add_parser("publish", help="publish the top-N lists of a model to the table and the topic")
    pb.add_argument("--model-version", help="default: the newest published model")
    pb.set_defaults(func=cmd_publish)

    s = sub.add_parser("show", help="print the newest recommendation lists from the topic")
    s.add_argument("--user", action="append", help="a user id (repeatable); default: the first few")
    s.add_argument("--limit", type=int, default=5, help="how many users when none is named")
    s.set_defaults(func=cmd_show)

    st = sub.add_parser(
        "status",
        help="the pipeline on one screen: broker, topics and the ingest's lag, tables, models, dead letters",
    )
    st.add_argument("--json", action="store_true", help="the same as JSON (shape: jobrec.streaming.status)")
    st.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for Kafka (default 5)")
    st.set_defaults(func=cmd_status)

    d = sub.add_parser("demo", help="the whole pipeline on the seed data with a local Kafka, then shut down")
    d.add_argument("--seed-dir", default=SEED_DIR, help="folder with job_clicks.csv and jobs.csv")
    d.add_argument("--live-events", type=int, default=2000, help="live click events to stream in")
    d.add_argument("--keep-kafka", action="store_true", help="leave the broker running afterwards")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser(
        "bench",
        help="measure ingest rate, retrain time, click-to-list freshness, the speed layer's start time and "
        "memory, Spark ALS against implicit, the HTTP ingest API's throughput and latency, what a category cap "
        "costs in NDCG and buys in coverage, or the "
        "single-machine engine's retrain + publish and offline against implicit doing the same",
    )
    b.add_argument(
        "what", choices=["ingest", "retrain", "freshness", "implicit", "api", "category-cap", "engines", "speed-start"]
    )
    b.add_argument("--caps", default="0,2,3,4,5", help="category-cap: caps to measure (0 = none)")
    b.add_argument("--rate", type=int, default=1000, help="freshness: click events per second of load")
    b.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="freshness: speed instances; 1 runs in the benchmark's process, more run as `jobrec speed --processes N`",
    )
    b.add_argument("--seconds", type=float, default=30, help="freshness, api: how long the load lasts")
    b.add_argument("--json", action="store_true", help="freshness, api: one line of JSON")
    b.add_argument("--concurrency", type=int, default=8, help="api: keep-alive connections sending at once")
    b.add_argument("--batch-size", type=int, default=50, help="api: events per request (batch 1 always runs too)")
    b.add_argument(
        "--mode",
        choices=["events", "similar"],
        default="events",
        help="api: events = POST /v1/events (the ingest); similar = GET /v1/jobs/ID/similar and POST "
        "/v1/recommendations (anonymous lists) against a synthetic model",
    )
    b.add_argument(
        "--model-jobs", type=_positive_int, default=100_000, help="api --mode similar: jobs of the synthetic model"
    )
    b.add_argument("--rank", type=_positive_int, default=32, help="api --mode similar: factors per job")
    b.add_argument("--events", type=int, default=100_000, help="events for the ingest benchmark")
    b.add_argument("--seed-dir", default=SEED_DIR, help="folder with job_clicks.csv")
    b.add_argument("--pairs", type=int, default=2_000_000, help="engines: (user, job) pairs of the synthetic file")
    b.add_argument("--users", type=int, default=100_000, help="engines: users of the synthetic file")
    b.add_argument("--jobs", type=int, default=20_000, help="engines: jobs of the synthetic file")
    b.add_argument("--skip-seed", action="store_true", help="engines: measure the synthetic file only")
    b.add_argument("--skip-synthetic", action="store_true", help="engines: measure the seed only")
    b.add_argument(
        "--interactions",
        default="1e6,3e6,10e6",
        help="speed-start: sizes of the synthetic interactions table, comma-separated",
    )
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formatter = setup_logging(args.log_level)
    try:
        cfg = load_config(args.config, data_dir=args.data_dir)
    except ConfigError as e:
        print(f"jobrec: bad config: {e}", file=sys.stderr)
        return 2
    formatter.set_secrets(config_secrets(cfg))
    try:
        return int(args.func(cfg, args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last word: one clear line, details in the debug log
        from jobrec.batch.connections import KafkaConnectError
        from jobrec.batch.table_writers import WriterBusy
        from jobrec.streaming.checkpoint_guard import CheckpointMismatch
        from jobrec.streaming.local.embedded_kafka import BrokerError, KafkaNotConfigured
        from jobrec.streaming.local.spark_cluster import ClusterError

        known = (
            KafkaNotConfigured,
            KafkaConnectError,
            BrokerError,
            ClusterError,
            CheckpointMismatch,
            WriterBusy,
            FileNotFoundError,
            ValueError,
        )
        if isinstance(e, known):
            print(f"jobrec: {formatter.redact(str(e))}", file=sys.stderr)
            return EXIT_FAILED
        # anything else: the traceback goes through the log, so it is redacted like every other line
        log.exception("jobrec %s failed", args.command)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
