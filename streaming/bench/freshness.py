"""`jobrec bench freshness`: how long from a user's click to that user's new list on the recommendations topic.

It starts the embedded stack in a temporary folder (a real broker, the seed data backfilled, a retrain), runs
the speed layer, and sends a sustained load of R click events per second from a separate process (its own
interpreter, so the load does not compete with the speed layer for Python's lock). Every 200 ms one probe
click goes out for one of 50 probe users; a consumer of the recommendations topic times the arrival of the list
whose newest_event_at is that click. Prints one JSON object.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jobrec.schemas.config import Config

if TYPE_CHECKING:
    from jobrec.streaming.speed import SpeedStats

PROBE_USERS = 50
PROBE_EVERY_S = 0.2


def _generate_load(bootstrap: str, client: dict, topic: str, pairs: list, rate: int, seconds: float, sent) -> None:
    """Send `rate` events per second for `seconds`, paced every 10 ms; count them in `sent`."""
    from kafka import KafkaProducer

    from jobrec.streaming.producer import encode_event, make_click_event

    producer = KafkaProducer(**client, acks="all", linger_ms=5, batch_size=1 << 17)
    rng = random.Random(11)
    start = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(rate * elapsed)
        while n < due:
            user, job = pairs[rng.randrange(len(pairs))]
            e = make_click_event(user, job, "view")
            producer.send(topic, key=user.encode(), value=encode_event(e))
            n += 1
        sent.value = n
        time.sleep(0.01)
    producer.flush()
    sent.value = n
    producer.close()


def _speed_processes(config: Path, processes: int, folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`jobrec speed --processes N` as an operator starts it; its log goes to a file beside the stats."""
    stats_dir = folder / "speed-stats"
    log_file = (folder / "speed.log").open("wb")
    command = [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), "speed"]
    command += ["--processes", str(processes), "--stats-dir", str(stats_dir)]
    return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT), stats_dir


def _summed_stats(stats_dir: Path) -> SpeedStats:
    from jobrec.streaming.speed import SpeedStats

    total = SpeedStats()
    for path in sorted(stats_dir.glob("speed-*.json")):
        for key, value in json.loads(path.read_text()).items():
            setattr(total, key, getattr(total, key) + value)
    return total


def run_freshness(cfg: Config, seed_dir: Path, rate: int, seconds: float, as_json: bool, processes: int = 1) -> int:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from jobrec.batch.backfill import CsvLayout, load_counts_csv
    from jobrec.batch.bench.verdict import measured_something
    from jobrec.batch.connections import build_spark_session, python_client_args
    from jobrec.batch.processes import retrain_and_publish
    from jobrec.streaming.bench.stack import temporary_stack
    from jobrec.streaming.processes import run_speed
    from jobrec.streaming.producer import encode_event, make_click_event
    from jobrec.streaming.speed import SpeedStats

    with temporary_stack(cfg, "jobrec-fresh-") as stack:
        cfg, bootstrap = stack.cfg, stack.broker.bootstrap
        client = python_client_args(cfg.kafka, bootstrap)
        spark = build_spark_session(cfg, "jobrec-bench-freshness")
        with (seed_dir / "job_clicks.csv").open(newline="") as f:
            pairs = [(r["userId"], r["jobId"]) for r in csv.DictReader(f) if r["Clicks"] != "0"]
        users = sorted({u for u, _ in pairs}, key=int)
        probe_users = users[:PROBE_USERS]
        load_pairs = [(u, j) for u, j in pairs if u not in set(probe_users)]
        probe_jobs = sorted({j for _, j in pairs})
        load_counts_csv(
            spark, str(seed_dir / "job_clicks.csv"), CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights
        )
        retrain_and_publish(spark, cfg, None, publish=False)

        stats, stop, ready = SpeedStats(), threading.Event(), threading.Event()
        if processes == 1:
            # in this process (as the figures before --processes were measured)
            speed = threading.Thread(
                target=run_speed,
                args=(cfg, bootstrap, stop.is_set),
                kwargs={"stats": stats, "on_ready": ready.set},
                daemon=True,
            )
            speed.start()
            if not ready.wait(300):
                raise RuntimeError("the speed layer did not start")
        else:
            supervisor, stats_dir = _speed_processes(stack.config_file(), processes, stack.folder)

        # the probe consumer: arrival time of each probe's list
        probes: dict[tuple[str, str], float] = {}
        arrivals: dict[tuple[str, str], float] = {}
        consumer = KafkaConsumer(**client, enable_auto_commit=False, fetch_max_wait_ms=10)
        parts = [
            TopicPartition(cfg.kafka.recommendations_topic, p)
            for p in consumer.partitions_for_topic(cfg.kafka.recommendations_topic)
        ]
        consumer.assign(parts)
        consumer.seek_to_end(*parts)

        def watch() -> None:
            while not stop.is_set():
                for batch in consumer.poll(timeout_ms=20).values():
                    now = time.monotonic()
                    for rec in batch:
                        msg = json.loads(rec.value)
                        key = (msg["user_id"], msg["newest_event_at"])
                        if key in probes and key not in arrivals:
                            arrivals[key] = now

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        if processes > 1:
            # ready when every probe user (their partitions spread over the instances) has had a list
            warm_producer = KafkaProducer(**client, acks="all", linger_ms=0)
            deadline = time.monotonic() + 300
            answered: set[str] = set()
            while len(answered) < PROBE_USERS:
                if time.monotonic() > deadline or supervisor.poll() is not None:
                    tail = (stack.folder / "speed.log").read_text(errors="replace").splitlines()[-30:]
                    raise RuntimeError(
                        "the speed instances did not answer every probe user; their log:\n" + "\n".join(tail)
                    )
                for user in probe_users:
                    if user not in answered:
                        e = make_click_event(user, probe_jobs[0], "view")
                        probes[(user, e["occurred_at"])] = time.monotonic()
                        warm_producer.send(cfg.kafka.clicks_topic, key=user.encode(), value=encode_event(e))
                warm_producer.flush()
                time.sleep(1.0)
                answered = {u for u, _ in arrivals}
            warm_producer.close()
            probes.clear()
            arrivals.clear()

        spawn = mp.get_context("spawn")  # a fresh interpreter: no fork of a process that runs a JVM gateway
        sent = spawn.Value("q", 0)
        load = spawn.Process(
            target=_generate_load,
            args=(bootstrap, client, cfg.kafka.clicks_topic, load_pairs, rate, seconds, sent),
        )
        probe_producer = KafkaProducer(**client, acks="all", linger_ms=0)
        load.start()
        started = time.monotonic()
        max_lag, i, ack_times = 0, 0, []
        rng = random.Random(3)
        while time.monotonic() - started < seconds:
            user = probe_users[i % PROBE_USERS]
            e = make_click_event(user, probe_jobs[rng.randrange(len(probe_jobs))], "click")
            t0 = time.monotonic()
            probes[(user, e["occurred_at"])] = t0
            probe_producer.send(cfg.kafka.clicks_topic, key=user.encode(), value=encode_event(e)).get(30)
            ack_times.append(time.monotonic() - t0)
            i += 1
            if processes == 1:
                max_lag = max(max_lag, sent.value + i - stats.records)
            time.sleep(max(0.0, PROBE_EVERY_S - (time.monotonic() - t0)))
        load.join(120)
        elapsed = time.monotonic() - started
        time.sleep(5)  # the last probes' lists
        stop.set()
        if processes == 1:
            speed.join(60)
        else:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(120)
            stats = _summed_stats(stats_dir)
        watcher.join(10)
        consumer.close()
        probe_producer.close()
        spark.stop()

    latencies = np.array([(arrivals[k] - t0) * 1000 for k, t0 in probes.items() if k in arrivals])
    polls = max(1, stats.polls_with_records)
    result = {
        "rate_target": rate,
        "seconds": seconds,
        "achieved_rate": round((sent.value + i) / elapsed, 1),
        "probes": len(probes),
        "probes_answered": int(len(latencies)),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(latencies) else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 1) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 1) if len(latencies) else None,
        "speed_processes": processes,
        "max_lag": int(max_lag) if processes == 1 else None,
        "stages": {
            "probe_send_to_broker_ack_ms_p50": round(float(np.percentile(ack_times, 50)) * 1000, 1),
            "speed_compute_ms_per_poll": round(stats.compute_seconds / polls * 1000, 1),
            "speed_publish_ms_per_poll": round(stats.publish_seconds / polls * 1000, 1),
            "records_per_poll": round(stats.records / polls, 1),
            "lists_per_poll": round(stats.lists / polls, 1),
        },
        "speed_layer": asdict(stats),
    }
    print(json.dumps(result, indent=None if as_json else 2))
    return measured_something("freshness", {"probes_answered": result["probes_answered"]})
