"""`jobrec bench ingest|retrain`: figures for speed, each beside a reference measured in the same run.

These machines are noisy, so a figure alone says little; the ratio to a reference on the same machine, in the
same minute, says more.
- ingest: events/s through the whole ingest (parse, dedup, three Delta writes) against a plain Spark batch read
  of the same records from the same topic (the ceiling the Kafka source allows here), and the pure-Python parse
  rate against json.loads alone.
- retrain: ALS fit time on the seed data against the time of one ALS iteration (the fixed overhead).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from jobrec.schemas.click_event import EventLimits, parse_click_event
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
    return {
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
            t0 = time.perf_counter()
            for i in range(n_events):
                e = {
                    "event_id": f"e{i}",
                    "user_id": f"u{rng.randrange(5000)}",
                    "job_id": f"j{rng.randrange(9000)}",
                    "event_type": rng.choice(["view", "click", "save", "apply"]),
                    "occurred_at": now,
                }
                producer.send(cfg.kafka.clicks_topic, key=e["user_id"].encode(), value=json.dumps(e).encode())
            producer.flush()
            producer.close()
            figures["produce_events_per_s"] = round(n_events / (time.perf_counter() - t0))
            figures.update(_bench_ingest(spark, cfg, n_events))
            rests_on = {"events_ingested": figures["events_ingested"], "micro_batches": figures["micro_batches"]}
        else:
            figures = _bench_retrain(spark, cfg, seed_dir)
            rests_on = {"interactions": figures["interactions"], "retrain_seconds": figures["retrain_seconds"]}
    print(json.dumps(figures, indent=2))
    return measured_something(what, rests_on)


def _bench_ingest(spark, cfg: Config, n_events: int) -> dict[str, float]:
    from jobrec.batch.connections import spark_kafka_options
    from jobrec.batch.delta_tables import table_path
    from jobrec.schemas import tables as t
    from jobrec.streaming.ingest import start_ingest
    from jobrec.streaming.processes import ingest_settings

    opts = spark_kafka_options(cfg.kafka, cfg.kafka.bootstrap_servers)
    t0 = time.perf_counter()
    raw = spark.read.format("kafka").options(**opts).option("subscribe", cfg.kafka.clicks_topic).load()
    assert raw.selectExpr("sum(length(value))").collect()[0][0] > 0
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    query = start_ingest(spark, ingest_settings(cfg, cfg.kafka.bootstrap_servers), once=True)
    query.awaitTermination()
    ingest_s = time.perf_counter() - t0
    batches = len(query.recentProgress)
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
    }


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
