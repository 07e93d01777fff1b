"""`jobrec demo`: the whole pipeline on one machine, narrated.

A real local Kafka broker, Spark in local mode, Delta tables on local disk: backfill the seed clicks, stream
live clicks (with a few repeats and malformed records) through the ingest, retrain ALS, publish, and print the
lists a consumer of the recommendations topic sees for a few users; then a click refreshes one user's list
within seconds, and a closed job leaves it. It exits non-zero, its last line saying what was missing, when a step
showed nothing: no list on the topic, no refreshed list after a click, a closed job still listed.
"""

from __future__ import annotations

import csv
import logging
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jobrec.schemas import tables as t
from jobrec.schemas.config import Config
from jobrec.schemas.recommendation import NEW_USER_KEY

log = logging.getLogger("jobrec.demo")

DEMO_USERS = ("1", "15", "73")


def read_job_categories(spark, tables_root: str) -> dict[str, str]:
    """job -> category from the Delta jobs table (normalised, unlike the raw jobs.csv)."""
    from jobrec.batch.jobs_table import read_catalog_rows

    return {row[0]: row[1] for row in read_catalog_rows(spark, tables_root) if row[1]}


def print_lists(lists: dict[str, dict], users: list[str], categories: dict[str, str] | None) -> None:
    for user in users:
        msg = lists.get(user)
        if not msg:
            print(f"\nuser {user}: no list on the topic")
            continue
        print(f"\nuser {user}  (model {msg['model_version']}, source {msg['source']}, generated {msg['generated_at']})")
        for item in msg["items"]:
            cat = f"  {categories.get(item['job_id'], '?'):<24}" if categories is not None else ""
            print(f"  {item['rank']:>3}. job {item['job_id']:<10}{cat} score {item['score']:.4f}")


def _live_events(seed_clicks: Path, n: int, rng: random.Random) -> list[dict]:
    """n click events: the demo users click a few more jobs, the rest replays random seed pairs as live clicks."""
    from jobrec.streaming.producer import make_click_event

    with seed_clicks.open(newline="") as f:
        pairs = [(r["userId"], r["jobId"]) for r in csv.DictReader(f) if r["Clicks"] != "0"]
    now = datetime.now(timezone.utc)
    types = ["view"] * 6 + ["click"] * 3 + ["save", "apply"]
    events = []
    for i in range(n):
        user, job = pairs[rng.randrange(len(pairs))]
        if i < 30:
            user = DEMO_USERS[i % len(DEMO_USERS)]
        events.append(make_click_event(user, job, rng.choice(types), now - timedelta(seconds=rng.randrange(600))))
    return events


def run_demo(cfg: Config, seed_dir: Path, live_events: int, keep_kafka: bool) -> int:
    from jobrec.batch.connections import ensure_topics
    from jobrec.streaming.local.embedded_kafka import running_broker, start_broker, stop_broker

    seed_clicks = seed_dir / "job_clicks.csv"
    if not seed_clicks.exists():
        raise FileNotFoundError(f"{seed_clicks} not found: pass --seed-dir")
    started_all = time.monotonic()
    print("== 1/7 Kafka")
    we_started = False
    if cfg.kafka.bootstrap_servers:
        bootstrap = cfg.kafka.bootstrap_servers
    else:
        we_started = running_broker(cfg.embedded_kafka) is None
        bootstrap = start_broker(cfg.embedded_kafka).bootstrap
    ensure_topics(cfg.kafka, bootstrap)
    print(
        f"   broker at {bootstrap}; topics {cfg.kafka.clicks_topic}, {cfg.kafka.recommendations_topic}, "
        f"{cfg.kafka.jobs_topic}"
    )
    try:
        # returns with every Kafka client it opened closed, Spark's JVM ones too: none is left to warn about
        # the broker going away
        missing = _run_pipeline(cfg, bootstrap, seed_dir, live_events)
    finally:
        if we_started and not keep_kafka:
            stop_broker(cfg.embedded_kafka)
            print("Kafka broker stopped.")
    print(f"Demo took {time.monotonic() - started_all:.0f} s.", flush=True)
    return demo_verdict(missing)


def demo_verdict(missing: list[str]) -> int:
    """The demo's exit code: 0 if it showed everything it narrates, else 1 with what was missing as the last line
    (on stderr): a demo that showed no list must not pass for a working pipeline."""
    if missing:
        print(f"jobrec demo failed: {'; '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _run_pipeline(cfg: Config, bootstrap: str, seed_dir: Path, live_events: int) -> list[str]:
    """Steps 2 to 7; returns what the demo should have shown and did not (empty: everything)."""
    from kafka import KafkaProducer

    from jobrec.batch.backfill import CsvLayout, load_counts_csv
    from jobrec.batch.connections import build_spark_session, python_client_args
    from jobrec.batch.core.catalog import CategoryNormaliser
    from jobrec.batch.delta_tables import table_path
    from jobrec.batch.jobs_table import load_jobs_csv
    from jobrec.batch.processes import retrain_and_publish
    from jobrec.streaming.ingest import start_ingest
    from jobrec.streaming.interactions_fold import fold_events
    from jobrec.streaming.processes import ingest_settings
    from jobrec.streaming.producer import encode_event, send_raw
    from jobrec.streaming.recommendations_reader import read_latest_lists

    seed_clicks = seed_dir / "job_clicks.csv"
    spark = build_spark_session(cfg, "jobrec-demo")
    try:
        print(f"== 2/7 backfill {seed_clicks.name} into {cfg.storage.tables_root}/{t.INTERACTIONS}")
        report = load_counts_csv(
            # the seed's click counts are random (its README): each clicked pair counts once
            spark,
            str(seed_clicks),
            CsvLayout(),
            cfg.storage.tables_root,
            "click",
            cfg.ingest.weights,
            binary=True,
        )
        print(
            "   already loaded earlier: nothing added"
            if report.skipped_as_already_loaded
            else f"   {report.pairs_loaded} (user, job) pairs from {report.rows_read} rows; "
            f"{report.rows_zero} zero-click rows skipped"
        )
        jobs_csv = seed_dir / "jobs.csv"
        if jobs_csv.exists():
            jobs = load_jobs_csv(
                spark,
                str(jobs_csv),
                cfg.storage.tables_root,
                CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases),
            )
            print(
                f"   job catalog: {jobs.rows_read} rows of {jobs_csv.name} -> {jobs.jobs_inserted} new jobs in "
                f"{t.JOBS}; {jobs.normalisation}"
            )

        print(f"== 3/7 stream {live_events} live click events through Kafka into Delta")
        query = start_ingest(spark, ingest_settings(cfg, bootstrap), trigger_seconds=cfg.ingest.trigger_seconds)
        rng = random.Random(7)
        events = _live_events(seed_clicks, live_events, rng)
        records = [(e["user_id"].encode(), encode_event(e)) for e in events]
        # a producer retry sends the same event twice; a broken producer sends garbage
        records += records[:25]
        records += [(None, b"{not json"), (b"1", b'{"event_id":"x","user_id":"1"}'), (b"1", b"\xff\xfe")]
        producer = KafkaProducer(**python_client_args(cfg.kafka, bootstrap), acks="all", linger_ms=5)
        try:
            chunk = max(1, len(records) // 4)
            for i in range(0, len(records), chunk):
                send_raw(producer, cfg.kafka.clicks_topic, records[i : i + chunk])
                print(f"   sent {min(i + chunk, len(records))}/{len(records)} records (acknowledged by the broker)")
        finally:
            producer.close()
        query.processAllAvailable()
        query.stop()
        # `jobrec ingest` folds every ingest.fold_seconds and when it stops; the demo's query stops here
        fold = fold_events(spark, cfg.storage.tables_root, cfg.ingest.weights)
        if fold is not None:
            print(f"   {fold.describe()}")
        events_df = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.EVENTS))
        dead = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.DEAD_LETTERS))
        reasons = Counter(r[t.REASON_CODE] for r in dead.select(t.REASON_CODE).collect())
        print(f"   events table: {events_df.count()} events; dead letters: {dict(reasons)}")

        print("== 4/7 retrain ALS (implicit) and 5/7 publish top-N to the recommendations topic")
        model = retrain_and_publish(spark, cfg, bootstrap)
        print(
            f"   model {model.model_version}: {model.n_users} users x {model.n_jobs} jobs, "
            f"{model.n_interactions} interactions; fit {model.timings.get('fit_s')} s"
        )
        if model.status == t.STATUS_REJECTED:
            print(
                f"   rejected by the quality gate ({model.metrics.get('gate')}): the serving model's lists stay, or "
                "popularity lists (source fallback) are published if no model has passed yet"
            )

        print(f"== 6/7 what a consumer of {cfg.kafka.recommendations_topic} sees")
        categories = read_job_categories(spark, cfg.storage.tables_root)
        lists = read_latest_lists(python_client_args(cfg.kafka, bootstrap), cfg.kafka.recommendations_topic)
        print_lists(lists, list(DEMO_USERS), categories)
        n_users = len(lists) - (NEW_USER_KEY in lists)
        print(f"\n   {n_users} users have a list on the topic; users with no history get the list under key *:")
        print_lists(lists, [NEW_USER_KEY], categories)
        if n_users == 0:
            return [f"no user has a recommendation list on {cfg.kafka.recommendations_topic} (the publish sent none)"]

        print("== 7/7 near-real-time: a new click refreshes that user's list (fold-in, no retrain); a job closes")
        return _show_fold_in(spark, cfg, bootstrap, lists, categories)
    finally:
        stop_spark_jvm(spark)


def stop_spark_jvm(spark) -> None:
    """Stop the session and then the driver JVM this process started, waiting until it has exited.

    Spark's Kafka sink keeps its producers in a JVM-wide pool for minutes after `spark.stop()` (the publish step
    used them); the JVM closes them only when it exits. Left to the end of the process, they outlive the broker and
    warn that it cannot be reached. The JVM exits when its standard input closes, as it does when Python exits;
    a later session in this process would start a new one.
    """
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)  # the Popen of the JVM that pyspark launched, if it launched one
    if gateway is None or proc is None or proc.stdin is None:
        return
    gateway.shutdown()
    proc.stdin.close()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        log.warning("Spark's JVM (pid %d) did not exit within 60 s of its session's end; killing it", proc.pid)
        proc.kill()
        proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None


def _show_fold_in(spark, cfg: Config, bootstrap: str, lists: dict[str, dict], categories: dict[str, str]) -> list[str]:
    """A click refreshes the user's list (fold-in, or fallback before any model passed the gate); a closed job
    leaves it. Returns what did not happen (empty: everything)."""
    import threading

    from kafka import KafkaProducer

    from jobrec.batch.connections import python_client_args
    from jobrec.streaming.processes import run_speed
    from jobrec.streaming.producer import make_click_event, make_job_event, send_click_events, send_job_events
    from jobrec.streaming.recommendations_reader import read_latest_lists
    from jobrec.streaming.speed import SpeedStats

    stats = SpeedStats()
    stop, ready = threading.Event(), threading.Event()

    def speed_layer() -> None:
        try:
            run_speed(cfg, bootstrap, stop.is_set, on_ready=ready.set, stats=stats)
        except Exception:
            log.exception("the speed layer failed")

    worker = threading.Thread(target=speed_layer, name="speed-layer", daemon=True)
    worker.start()
    producer = KafkaProducer(**python_client_args(cfg.kafka, bootstrap), acks="all")
    try:
        deadline = time.monotonic() + 120
        while not ready.wait(0.2):
            if not worker.is_alive() or time.monotonic() > deadline:
                print("   the speed layer did not start")
                return ["the speed layer did not start, so no click refreshed a list"]
        user = DEMO_USERS[0]

        def click_and_wait(job: str, event_type: str) -> dict | None:
            click = make_click_event(user, job, event_type)
            sent = time.monotonic()
            send_click_events(producer, cfg.kafka.clicks_topic, [click])
            while time.monotonic() - sent < 30:
                fresh = read_latest_lists(
                    python_client_args(cfg.kafka, bootstrap), cfg.kafka.recommendations_topic, timeout_seconds=5
                ).get(user)
                if fresh and fresh["newest_event_at"] == click["occurred_at"]:
                    print(f"   new list on the topic {time.monotonic() - sent:.2f} s after the click:")
                    print_lists({user: fresh}, [user], categories)
                    return fresh
            print("   no refreshed list within 30 s")
            return None

        # the user applies to the job at the top of their list
        listed = (lists.get(user) or {}).get("items") or []
        if not listed:
            return [f"user {user} has no list on the topic, so no click refreshed it"]
        job = listed[0]["job_id"]
        print(f"   user {user} applies to job {job} ({categories.get(job, '?')})")
        fresh = click_and_wait(job, "apply")
        if fresh is None:
            return [f"no refreshed list (fold-in or fallback) arrived within 30 s of user {user}'s click"]
        if not fresh["items"]:
            return [f"user {user}'s refreshed list is empty"]
        # the employer closes the job now at the top: no list computed from now on may contain it
        closed = fresh["items"][0]["job_id"]
        send_job_events(producer, cfg.kafka.jobs_topic, [make_job_event(closed, "closed")])
        deadline = time.monotonic() + 30
        while stats.job_events < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"\n   job {closed} is closed (a job event on {cfg.kafka.jobs_topic}); user {user} views job {job} again")
        after = click_and_wait(job, "view")
        if after is None:
            return [f"no refreshed list arrived within 30 s of user {user}'s click after the close"]
        still = closed in [i["job_id"] for i in after["items"]]
        print(f"   job {closed} in the new list: {'YES (unexpected)' if still else 'no'}")
        return [f"closed job {closed} is still in user {user}'s list"] if still else []
    finally:
        # the speed layer closes its consumer and producer as it returns
        stop.set()
        worker.join(30)
        if worker.is_alive():
            log.warning("the speed layer did not stop within 30 s; its Kafka clients may outlive the broker")
        producer.close()
