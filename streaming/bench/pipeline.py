"""`jobrec bench ingest|retrain`: figures for speed, each beside a reference measured in the same run.

These machines are noisy, so a figure alone says little; the ratio to a reference on the same machine, in the
same minute, says more.
- ingest: events/s through the whole ingest query (start, parse, dedup, the events and dead-letters appends)
  against a plain Spark batch read of the same records from the same topic (the ceiling the Kafka source allows
  here), then the fold of those events into interactions timed apart (and both added up), and the pure-Python
  parse rate against json.loads alone; then the time of one micro-batch of 1,000 events into the tables the run
  filled (the median of three), split into the query's phases (StreamingQueryProgress.durationMs) and the phases
  of the batch's own writes (as write_ingest_batch logs them), and the fold after it; last, a running ingest's
  micro-batches of N events each against a plain read of each batch's own offset range (steady state, without
  the first run's one-off costs), and its micro-batches of 1,000 events (a trigger every second) as a live
  ingest has them.
- retrain: ALS fit time on the seed data against the time of one ALS iteration (the fixed overhead).
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from jobrec.schemas.click_event import EventLimits, parse_click_event, parse_click_events
from jobrec.schemas.config import Config


def bench_parse(n: int = 100_000) -> dict[str, float]:
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raws = [
        json.dumps(
            {
                "event_id": f"e{i}",
                "user_id": f"u{i % 997}",
                "job_id": f"j{i % 9066}",
                "event_type": "click",
                "occurred_at": stamp,
            }
        ).encode()
        for i in range(n)
    ]
    received = int(now.timestamp() * 1000)
    t0 = time.perf_counter()
    for r in raws:
        json.loads(r)
    ref = time.perf_counter() - t0
    limits = EventLimits()
    t0 = time.perf_counter()
    for r in raws:
        parse_click_event(r, received, limits)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, n, 3200):  # in polls, as the speed layer and the ingest's Arrow batches call it
        parse_click_events([(r, received) for r in raws[start : start + 3200]], limits)
    batched = time.perf_counter() - t0
    return {
        "batch_parse_events_per_s": round(n / batched),
        "batch_parse_vs_json_loads_time_ratio": round(batched / ref, 2),
        "parse_events_per_s": round(n / ours),
        "json_loads_per_s": round(n / ref),
        "parse_vs_json_loads_time_ratio": round(ours / ref, 2),
    }


def run_bench(cfg: Config, what: str, n_events: int, seed_dir: Path) -> int:
    from kafka import KafkaProducer

    from jobrec.batch.bench.verdict import measured_something
    from jobrec.batch.connections import python_client_args
    from jobrec.batch.processes import spark_session
    from jobrec.streaming.bench.stack import temporary_stack

    with temporary_stack(cfg, "jobrec-bench-") as stack, spark_session(stack.cfg, "bench") as spark:
        cfg = stack.cfg
        if what == "ingest":
            figures = bench_parse()
            rng = random.Random(0)
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            producer = KafkaProducer(
                **python_client_args(cfg.kafka, stack.broker.bootstrap), acks="all", linger_ms=20, batch_size=1 << 18
            )

            def send(first: int, n: int) -> None:
                for i in range(first, first + n):
                    e = {
                        "event_id": f"e{i}",
                        "user_id": f"u{rng.randrange(5000)}",
                        "job_id": f"j{rng.randrange(9000)}",
                        "event_type": rng.choice(["view", "click", "save", "apply"]),
                        "occurred_at": now,
                    }
                    producer.send(cfg.kafka.clicks_topic, key=e["user_id"].encode(), value=json.dumps(e).encode())
                producer.flush()

            t0 = time.perf_counter()
            send(0, n_events)
            figures["produce_events_per_s"] = round(n_events / (time.perf_counter() - t0))
            figures.update(_bench_ingest(spark, cfg, n_events))
            small = _bench_small_batch(spark, cfg, lambda i: send(n_events + i * SMALL_BATCH, SMALL_BATCH))
            send(n_events + SMALL_BATCH_ROUNDS * SMALL_BATCH, n_events * STEADY_BATCHES)
            small.update(_bench_steady_batches(spark, cfg, n_events))
            first = n_events * (1 + STEADY_BATCHES) + SMALL_BATCH_ROUNDS * SMALL_BATCH
            small.update(_bench_running_small_batches(spark, cfg, lambda i: send(first + i * SMALL_BATCH, SMALL_BATCH)))
            producer.close()
            rests_on = {"events_ingested": figures["events_ingested"], "micro_batches": figures["micro_batches"]}
        else:
            figures = _bench_retrain(spark, cfg, seed_dir)
            rests_on = {"interactions": figures["interactions"], "retrain_seconds": figures["retrain_seconds"]}
            small = {}
    print(json.dumps({**figures, **small}, indent=2))
    return measured_something(what, rests_on)


def _bench_ingest(spark, cfg: Config, n_events: int) -> dict[str, float]:
    from jobrec.batch.connections import spark_kafka_options
    from jobrec.batch.delta_tables import table_path
    from jobrec.schemas import tables as t
    from jobrec.streaming.ingest import start_ingest
    from jobrec.streaming.interactions_fold import fold_events
    from jobrec.streaming.processes import ingest_settings

    opts = spark_kafka_options(cfg.kafka, cfg.kafka.bootstrap_servers)
    t0 = time.perf_counter()
    raw = spark.read.format("kafka").options(**opts).option("subscribe", cfg.kafka.clicks_topic).load()
    assert raw.selectExpr("sum(length(value))").collect()[0][0] > 0
    read_s = time.perf_counter() - t0
    settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
    t0 = time.perf_counter()
    query = start_ingest(spark, settings, once=True)
    # the tables made, the checkpoint judged, the query started: the one-off part of the run
    start_s = time.perf_counter() - t0
    query.awaitTermination()
    ingest_s = time.perf_counter() - t0
    batches = len(query.recentProgress)
    batches_s = sum(p["durationMs"]["triggerExecution"] for p in query.recentProgress) / 1000
    # the fold of those events into interactions, which `jobrec ingest` runs every ingest.fold_seconds beside
    # the micro-batches (and once at the end of an --once run)
    t0 = time.perf_counter()
    fold = fold_events(spark, settings.tables_root, settings.weights)
    fold_s = time.perf_counter() - t0
    pairs = 0 if fold is None else fold.pairs_inserted + fold.pairs_updated
    # what reached the events table, counted there: a run that ingested nothing must not read as a fast one
    ingested = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.EVENTS)).count()
    return {
        "events": n_events,
        "events_ingested": ingested,
        "micro_batches": batches,
        "ingest_seconds": round(ingest_s, 2),
        "ingest_events_per_s": round(n_events / ingest_s),
        "reference_spark_read_events_per_s": round(n_events / read_s),
        "ingest_vs_plain_read_time_ratio": round(ingest_s / read_s, 2),
        # where the run's time went: the start (tables, checkpoint, query) and the micro-batches themselves
        "ingest_start_seconds": round(start_s, 2),
        "ingest_batches_seconds": round(batches_s, 2),
        "fold_seconds": round(fold_s, 2),
        "fold_pairs": pairs,
        "ingest_and_fold_vs_plain_read_time_ratio": round((ingest_s + fold_s) / read_s, 2),
    }


SMALL_BATCH = 1_000
SMALL_BATCH_ROUNDS = 3


def _bench_small_batch(spark, cfg: Config, send: Callable[[int], None]) -> dict[str, object]:
    """The time of one micro-batch of SMALL_BATCH events, on the checkpoint and tables `_bench_ingest` left: send
    them, run the ingest until caught up, and take the batch's own progress (query start-up is not in it). The
    median of SMALL_BATCH_ROUNDS rounds, with that round's phases."""
    from jobrec.streaming.ingest import BATCH_TIMINGS_LOG, start_ingest
    from jobrec.streaming.interactions_fold import fold_events
    from jobrec.streaming.processes import ingest_settings

    timings = _BatchTimingsRecorder()
    logger = logging.getLogger(BATCH_TIMINGS_LOG)
    level = logger.level
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    logger.addHandler(timings)
    rounds = []
    try:
        for i in range(SMALL_BATCH_ROUNDS):
            send(i)
            timings.seen.clear()
            settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
            query = start_ingest(spark, settings, once=True)
            query.awaitTermination()
            batch = next(p for p in query.recentProgress if p["numInputRows"] > 0)
            inside = next((t for t in timings.seen if t.get("batch_id") == batch["batchId"]), {})
            fold = fold_events(spark, settings.tables_root, settings.weights)
            fold_ms = 0 if fold is None else round(fold.seconds * 1000)
            rounds.append((batch["durationMs"]["triggerExecution"], batch, {**inside, "fold_ms": fold_ms}))
    finally:
        logger.removeHandler(timings)
        logger.setLevel(level)
    rounds.sort(key=lambda r: r[0])
    total_ms, batch, inside = rounds[len(rounds) // 2]
    return {
        "small_batch_events": batch["numInputRows"],
        "small_batch_seconds": round(total_ms / 1000, 2),
        "small_batch_seconds_each_round": [round(r[0] / 1000, 2) for r in rounds],
        # the query's phases: addBatch is the foreachBatch (the writes below), the rest is Spark's bookkeeping
        "small_batch_query_phases_ms": dict(sorted(batch["durationMs"].items(), key=lambda kv: -kv[1])),
        # inside addBatch: the batch's writes, as write_ingest_batch timed them
        "small_batch_write_phases_ms": {k: v for k, v in inside.items() if k not in ("batch_id", "fold_ms")},
        # the fold of that batch's events into interactions after it (one MERGE; in `jobrec ingest` one fold
        # serves every batch of ingest.fold_seconds)
        "small_batch_fold_seconds": round(inside.get("fold_ms", 0) / 1000, 2),
        "small_batch_dedup_state_ms": {
            k: op.get(k) for op in batch.get("stateOperators", [])[:1] for k in ("allUpdatesTimeMs", "commitTimeMs")
        },
    }


STEADY_BATCHES = 3


def _bench_steady_batches(spark, cfg: Config, batch_size: int) -> dict[str, object]:
    """A running ingest's micro-batches of `batch_size` events (the query and the JVM warm, the tables made),
    each against a plain Spark read of exactly its own Kafka offset range (the faster of two): the ratio a live
    ingest keeps up at, without the one-off costs of the first run (creating the tables, the first compaction,
    cold code). The median batch against the median read."""
    from jobrec.batch.connections import spark_kafka_options
    from jobrec.streaming.ingest import start_ingest
    from jobrec.streaming.interactions_fold import fold_events
    from jobrec.streaming.processes import ingest_settings

    settings = replace(ingest_settings(cfg, cfg.kafka.bootstrap_servers), max_offsets_per_trigger=batch_size)
    query = start_ingest(spark, settings, once=True)
    query.awaitTermination()
    # full batches only: a tail of a few records left over by the broker's split is all fixed cost
    batches = [p for p in query.recentProgress if p["numInputRows"] >= batch_size // 2]
    t0 = time.perf_counter()
    fold = fold_events(spark, settings.tables_root, settings.weights)
    fold_s = time.perf_counter() - t0
    opts = spark_kafka_options(cfg.kafka, cfg.kafka.bootstrap_servers)
    rows = []
    for p in batches:
        source = p["sources"][0]
        start, end = (v if isinstance(v, str) else json.dumps(v) for v in (source["startOffset"], source["endOffset"]))
        reads = []
        for _ in range(2):  # the faster of two: the reference at its best
            t0 = time.perf_counter()
            raw = (
                spark.read.format("kafka")
                .options(**opts)
                .option("subscribe", cfg.kafka.clicks_topic)
                .option("startingOffsets", start)
                .option("endingOffsets", end)
                .load()
            )
            assert raw.selectExpr("sum(length(value))").collect()[0][0] > 0
            reads.append(time.perf_counter() - t0)
        rows.append((p["durationMs"]["triggerExecution"] / 1000, min(reads), p["numInputRows"]))
    if not rows:
        return {"steady_batches": 0}
    # the median batch against the median read: the batches are of one size, and one slow read (the first range
    # read back is at times 1.3 s where the others take 0.3) must not swing the ratio as it did when the median
    # batch was set against its own read (7x or 12x from one run to the next)
    batch_s = statistics.median(r[0] for r in rows)
    read_s = statistics.median(r[1] for r in rows)
    return {
        "steady_batches": len(rows),
        "steady_batch_events": statistics.median_low(r[2] for r in rows),
        "steady_batch_seconds_each": [round(r[0], 2) for r in rows],
        "steady_read_seconds_each": [round(r[1], 2) for r in rows],
        "steady_batch_vs_plain_read_time_ratio": round(batch_s / read_s, 2),
        "steady_fold_seconds": round(fold_s, 2),
        "steady_fold_pairs": 0 if fold is None else fold.pairs_inserted + fold.pairs_updated,
    }


RUNNING_ATTEMPTS = 8


def _bench_running_small_batches(spark, cfg: Config, send: Callable[[int], None]) -> dict[str, object]:
    """Micro-batches of SMALL_BATCH events on a running query (a trigger every second), as a live ingest has them:
    its tables' snapshots move with every batch, where `_bench_small_batch`'s new query starts from snapshots its
    start has just read. Each round sends SMALL_BATCH events and times the batch that takes them; a batch that took
    only part of them (the trigger fell inside the send) is not counted. The median of up to SMALL_BATCH_ROUNDS
    whole batches in RUNNING_ATTEMPTS rounds."""
    from jobrec.streaming.ingest import start_ingest
    from jobrec.streaming.interactions_fold import fold_events
    from jobrec.streaming.processes import ingest_settings

    settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
    query = start_ingest(spark, settings, trigger_seconds=1)
    seconds: list[float] = []
    try:
        for attempt in range(RUNNING_ATTEMPTS):
            if len(seconds) == SMALL_BATCH_ROUNDS:
                break
            done = max((p["batchId"] for p in query.recentProgress), default=-1)
            send(attempt)
            deadline, batch = time.monotonic() + 60, None
            while batch is None and time.monotonic() < deadline:
                failure = query.exception()
                if failure is not None:
                    raise failure
                batch = next((p for p in query.recentProgress if p["batchId"] > done and p["numInputRows"]), None)
                time.sleep(0.05)
            if batch is not None and batch["numInputRows"] == SMALL_BATCH:
                seconds.append(batch["durationMs"]["triggerExecution"] / 1000)
            time.sleep(1.5)  # the rest of a split send lands before the next round
    finally:
        query.stop()
    fold_events(spark, settings.tables_root, settings.weights)
    return {
        "running_small_batches": len(seconds),
        "running_small_batch_seconds": round(statistics.median(seconds), 2) if seconds else 0,
        "running_small_batch_seconds_each": [round(x, 2) for x in seconds],
    }


class _BatchTimingsRecorder(logging.Handler):
    """Keeps the phase timings write_ingest_batch logs with each batch."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[dict[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        phases = getattr(record, "phases", None)
        if isinstance(phases, dict):
            self.seen.append(phases)


def _bench_retrain(spark, cfg: Config, seed_dir: Path) -> dict[str, float]:
    from jobrec.batch.backfill import CsvLayout, load_counts_csv
    from jobrec.batch.processes import als_params
    from jobrec.batch.train import train_model

    load_counts_csv(
        spark, str(seed_dir / "job_clicks.csv"), CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights
    )
    params = als_params(cfg)
    train_model(spark, cfg.storage.tables_root, replace(params, max_iter=1))  # warm-up: JIT, caches
    t0 = time.perf_counter()
    train_model(spark, cfg.storage.tables_root, replace(params, max_iter=1))
    one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = train_model(spark, cfg.storage.tables_root, params)
    full_s = time.perf_counter() - t0
    return {
        "interactions": full.n_interactions,
        "rank": params.rank,
        "iterations": params.max_iter,
        "retrain_seconds": round(full_s, 2),
        "fit_seconds": full.timings["fit_s"],
        "reference_one_iteration_seconds": round(one_s, 2),
        "retrain_vs_one_iteration_ratio": round(full_s / one_s, 2),
    }
