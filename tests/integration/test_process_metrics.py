"""The Prometheus endpoints of `jobrec ingest` and `jobrec speed --processes 2`, run as an operator runs them, on
the real broker, Spark and Delta, scraped over HTTP while they run.

What was sent is known here: valid clicks, repeats of some of them, and malformed records whose reason codes follow
from how they were made. The scraped counters must equal those counts; the speed instances' list counters must
equal the lists found on the recommendations topic with each instance's header; both instances serve their own
endpoint (metrics.speed_port + instance index) and between them report lag for every clicks partition.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from jobrec.batch.backfill import CsvLayout, load_counts_csv
from jobrec.batch.connections import ensure_topics, python_client_args
from jobrec.batch.delta_tables import table_path
from jobrec.batch.processes import retrain_and_publish
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from jobrec.streaming.producer import encode_event, make_click_event
from jobrec.streaming.speed import INSTANCE_HEADER
from tests.integration.conftest import SEED_DIR, make_producer, unique_name, write_config

PARTITIONS = 4


def _two_free_ports() -> int:
    """A port P with P + 1 also free (the second speed instance serves on P + 1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def test_ingest_and_speed_endpoints_count_what_was_sent(tmp_path: Path, broker, spark, request) -> None:
    name = unique_name(request)
    ingest_port, speed_port = _two_free_ports(), None
    speed_port = _two_free_ports()
    while speed_port in (ingest_port - 1, ingest_port, ingest_port + 1):
        speed_port = _two_free_ports()
    path = write_config(
        tmp_path,
        broker.bootstrap,
        name,
        kafka={"clicks_partitions": PARTITIONS},
        metrics={"ingest_port": ingest_port, "speed_port": speed_port},
    )
    cfg = load_config(path, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)
    seed = SEED_DIR / "job_clicks.csv"
    load_counts_csv(spark, str(seed), CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights, binary=True)
    model = retrain_and_publish(spark, cfg, None, publish=False)
    assert model.status == "published", "the seed model must pass the gate for fold-in lists"
    with seed.open(newline="") as f:
        users = sorted({row["userId"] for row in csv.DictReader(f) if row["Clicks"] != "0"}, key=int)[:12]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(path)]
    logs = {what: (tmp_path / f"{what}.log").open("w") for what in ("ingest", "speed")}
    ingest = subprocess.Popen([*base, "ingest"], stderr=logs["ingest"], stdout=subprocess.DEVNULL, env=env)
    speed = subprocess.Popen(
        [*base, "speed", "--processes", "2"], stderr=logs["speed"], stdout=subprocess.DEVNULL, env=env
    )
    try:
        # both speed instances up, and between them owning every clicks partition, two each
        def partitions_owned():
            seen = [scrape(speed_port), scrape(speed_port + 1)]
            if None in seen:
                return None
            owned = [
                sorted(int(dict(labels)["partition"]) for (n, labels) in s if n == "jobrec_speed_partition_lag")
                for s in seen
            ]
            return owned if sorted(owned[0] + owned[1]) == list(range(PARTITIONS)) and all(owned) else None

        try:
            owned = wait_until(partitions_owned, 300, "two speed instances owning all clicks partitions")
        except AssertionError as e:
            # what each instance scrapes and says: the failure names its cause
            seen = [scrape(speed_port), scrape(speed_port + 1)]
            lag = [s and sorted(dict(b)["partition"] for n, b in s if n == "jobrec_speed_partition_lag") for s in seen]
            logs["speed"].flush()
            tail = (tmp_path / "speed.log").read_text(errors="replace")[-6000:]
            raise AssertionError(f"{e}; lag series per instance {lag}; speed log:\n{tail}") from None
        assert sorted(len(o) for o in owned) == [2, 2], owned
        wait_until(lambda: scrape(ingest_port), 300, "the ingest's endpoint")

        producer = make_producer(cfg)
        valid = [make_click_event(u, f"job-{i}", "click") for u in users for i in range(2)]
        for event in valid:
            producer.send(cfg.kafka.clicks_topic, key=event["user_id"].encode(), value=encode_event(event))
        for event in valid[:5]:  # the same records again: dropped by both as repeats
            producer.send(cfg.kafka.clicks_topic, key=event["user_id"].encode(), value=encode_event(event))
        malformed = {
            "invalid_json": [b"{not json", b'{"event_id": "x"'],
            "missing_field": [json.dumps({k: v for k, v in valid[0].items() if k != "job_id"}).encode()],
            "unknown_event_type": [
                json.dumps({**valid[1], "event_id": str(uuid.uuid4()), "event_type": "like"}).encode()
            ],
        }
        for records in malformed.values():
            for raw in records:
                producer.send(cfg.kafka.clicks_topic, key=users[0].encode(), value=raw)
        producer.flush()
        producer.close()
        n_malformed = sum(len(r) for r in malformed.values())

        def ingest_done():
            s = scrape(ingest_port)
            ok = s and value(s, "jobrec_ingest_rows_total", table="events") == len(valid)
            ok = ok and value(s, "jobrec_ingest_rows_total", table="dead_letters") == n_malformed
            return s if ok else None

        got = wait_until(ingest_done, 180, f"the ingest's metrics counting {len(valid)} events")
        for reason, records in malformed.items():
            assert value(got, "jobrec_ingest_dead_letters_total", reason=reason) == len(records), reason
        assert time.time() - value(got, "jobrec_ingest_last_batch_completed_timestamp_seconds") < 120
        assert value(got, "jobrec_ingest_batches_total") >= 1
        # the tables agree with the metrics
        events = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.EVENTS)).count()
        dead = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.DEAD_LETTERS))
        assert events == len(valid)
        assert Counter(r[0] for r in dead.select(t.REASON_CODE).collect()) == {k: len(v) for k, v in malformed.items()}
        # caught up: nothing behind on any partition, once a progress report after the last batch came
        wait_until(
            lambda: (
                (s := scrape(ingest_port))
                and all(v == 0 for (n, _), v in s.items() if n == "jobrec_ingest_offsets_behind")
                and any(n == "jobrec_ingest_offsets_behind" for (n, _) in s)
            ),
            60,
            "the ingest reporting nothing behind",
        )

        # the speed instances: what each read and published, summed, against what was sent and what arrived
        def speed_done():
            seen = [scrape(speed_port), scrape(speed_port + 1)]
            if None in seen:
                return None
            applied = sum(value(s, "jobrec_speed_click_records_total", outcome="applied") for s in seen)
            rejected = sum(value(s, "jobrec_speed_click_records_total", outcome="rejected") for s in seen)
            return seen if applied == len(valid) and rejected == n_malformed else None

        seen = wait_until(speed_done, 120, "the speed instances counting every record")
        assert sum(value(s, "jobrec_speed_click_records_total", outcome="repeated") for s in seen) == 5
        total_records = len(valid) + 5 + n_malformed
        assert sum(value(s, "jobrec_speed_click_to_list_seconds_count") for s in seen) == total_records
        assert sum(value(s, "jobrec_speed_internal_errors_total") for s in seen) == 0

        client = python_client_args(cfg.kafka, broker.bootstrap)
        lists = KafkaConsumer(**client, enable_auto_commit=False, consumer_timeout_ms=3000)
        parts = [
            TopicPartition(cfg.kafka.recommendations_topic, p)
            for p in lists.partitions_for_topic(cfg.kafka.recommendations_topic)
        ]
        lists.assign(parts)
        lists.seek_to_beginning(*parts)
        by_instance: dict[str, Counter] = defaultdict(Counter)
        for record in lists:
            header = dict(record.headers or []).get(INSTANCE_HEADER)
            if header is not None:
                by_instance[header.decode()][json.loads(record.value)["source"]] += 1
        lists.close()
        for s in seen:
            instance = next(dict(labels)["instance"] for (n, labels) in s if n == "jobrec_speed_instance_info")
            for source in ("fold-in", "fallback"):
                assert value(s, "jobrec_speed_lists_total", source=source) == by_instance[instance][source], (
                    instance,
                    source,
                )
        assert sum(sum(c.values()) for c in by_instance.values()) >= len(users)
        # freshness as the layer itself measured it: every click's list within seconds
        assert all(
            value(s, "jobrec_speed_click_to_list_seconds_bucket", le="30.0")
            == value(s, "jobrec_speed_click_to_list_seconds_count")
            for s in seen
        )
    finally:
        for process in (speed, ingest):
            process.send_signal(signal.SIGTERM)
        for process in (speed, ingest):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for f in logs.values():
            f.close()
