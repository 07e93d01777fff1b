"""Ingest on the real broker, Spark and Delta: a known mix of valid events, repeats and malformed records.

The expected counts are computed here from what the test sent, not by the pipeline's code.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone

from delta.tables import DeltaTable
from pyspark.sql import functions as F

from jobrec.batch.delta_tables import AUTO_COMPACT, ensure_delta_table, table_path
from jobrec.schemas import tables as t
from jobrec.streaming.ingest import ingest_once
from jobrec.streaming.processes import ingest_settings
from tests.integration.conftest import make_producer
from tests.unit.test_click_event import BAD_RECORDS

(AUTO_COMPACT_KEY,) = AUTO_COMPACT


def valid_events(n: int, rng: random.Random, prefix: str) -> list[dict]:
    now = datetime.now(timezone.utc)
    return [
        {
            "event_id": f"{prefix}-{i}",
            "user_id": f"user-{rng.randrange(20)}",
            "job_id": f"job-{rng.randrange(15)}",
            "event_type": rng.choice(["view", "click", "save", "apply"]),
            "occurred_at": (now - timedelta(minutes=rng.randrange(600))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        for i in range(n)
    ]


def expected_counts(events: list[dict]) -> dict[tuple[str, str, str], int]:
    """(user, job, event type) -> count, over distinct event ids."""
    unique = {e["event_id"]: e for e in events}
    return dict(Counter((e["user_id"], e["job_id"], e["event_type"]) for e in unique.values()))


def send(producer, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    futures = [producer.send(topic, key=k, value=v) for k, v in records]
    producer.flush()
    return [(m.partition, m.offset) for m in (f.get(timeout=60) for f in futures)]


def interactions_by_type(spark, tables_root: str) -> dict[tuple[str, str, str], int]:
    """(user, job, event type) -> count, read from the interactions table."""
    rows = spark.read.format("delta").load(table_path(tables_root, t.INTERACTIONS)).collect()
    out = {}
    for r in rows:
        for event_type in ("view", "click", "save", "apply"):
            if r[t.count_column(event_type)]:
                out[(r[t.USER_ID], r[t.JOB_ID], event_type)] = r[t.count_column(event_type)]
    return out


def test_known_mix_gives_exact_counts_and_every_bad_record_a_reason(spark, pipeline) -> None:
    cfg, _ = pipeline
    rng = random.Random(1)
    first, second = valid_events(400, rng, "a"), valid_events(200, rng, "b")
    repeats = rng.sample(first, 80)  # a producer retrying: same event_id, same bytes
    # the unit tests' oversized record is sized for their 4 KiB limit; here the limit is the default 64 KiB
    bad = [(label, raw, code) for label, raw, code in BAD_RECORDS if label != "oversized record"]
    bad.append(("record over max_record_bytes", b'{"event_id":"' + b"x" * 70_000 + b'"}', "too_large"))

    def enc(e: dict) -> tuple[bytes, bytes]:
        return e["user_id"].encode(), json.dumps(e).encode()

    mixed: list[tuple[str | None, tuple[bytes | None, bytes | None]]] = [(None, enc(e)) for e in first + repeats]
    mixed += [(code, (b"bad", raw)) for _, raw, code in bad]
    rng.shuffle(mixed)
    producer = make_producer(cfg)
    positions = send(producer, cfg.kafka.clicks_topic, [rec for _, rec in mixed])
    # more valid events after all the bad ones: the stream must go on past them
    send(producer, cfg.kafka.clicks_topic, [enc(e) for e in second])
    producer.close()

    ingest_once(spark, ingest_settings(cfg, cfg.kafka.bootstrap_servers))

    assert interactions_by_type(spark, cfg.storage.tables_root) == expected_counts(first + repeats + second)
    events = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.EVENTS))
    assert events.count() == 600 and events.select(t.EVENT_ID).distinct().count() == 600

    dead = {
        (r[t.KAFKA_PARTITION], r[t.KAFKA_OFFSET]): r
        for r in spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.DEAD_LETTERS)).collect()
    }
    sent_bad = {pos: (code, rec[1]) for pos, (code, rec) in zip(positions, mixed, strict=True) if code}
    assert len(sent_bad) == len(bad) and set(dead) == set(sent_bad)
    for pos, (code, raw) in sent_bad.items():
        row = dead[pos]
        assert row[t.REASON_CODE] == code, (raw[:80] if raw else raw, row[t.REASON])
        assert row[t.REASON].startswith(code + ": ")
        assert (bytes(row[t.RAW]) if row[t.RAW] is not None else None) == raw
        assert row[t.KAFKA_TOPIC] == cfg.kafka.clicks_topic

    # weighted strength, computed here from the config's weights
    w = cfg.ingest.weights
    expected_strength: Counter = Counter()
    for (user, job, event_type), n in expected_counts(first + second).items():
        expected_strength[(user, job)] += w[event_type] * n
    got = {
        (r[t.USER_ID], r[t.JOB_ID]): r[t.STRENGTH]
        for r in spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.INTERACTIONS)).collect()
    }
    assert got.keys() == expected_strength.keys()
    assert all(abs(got[k] - expected_strength[k]) < 1e-9 for k in got)


def test_running_again_adds_nothing_and_late_repeats_are_dropped(spark, pipeline) -> None:
    cfg, _ = pipeline
    events = valid_events(50, random.Random(2), "c")
    producer = make_producer(cfg)
    send(producer, cfg.kafka.clicks_topic, [(None, json.dumps(e).encode()) for e in events])
    settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
    ingest_once(spark, settings)
    # the same events sent again a little later (a producer's retry after a timeout), in a later micro-batch
    send(producer, cfg.kafka.clicks_topic, [(None, json.dumps(e).encode()) for e in events[:10]])
    producer.close()
    ingest_once(spark, settings)
    ingest_once(spark, settings)
    assert interactions_by_type(spark, cfg.storage.tables_root) == expected_counts(events)
    total = (
        spark.read.format("delta")
        .load(table_path(cfg.storage.tables_root, t.INTERACTIONS))
        .agg(
            F.sum(t.count_column("view"))
            + F.sum(t.count_column("click"))
            + F.sum(t.count_column("save"))
            + F.sum(t.count_column("apply"))
        )
        .collect()[0][0]
    )
    assert total == 50


def test_small_batches_are_compacted_and_still_counted_once(spark, pipeline) -> None:
    """Tables created without auto compaction (as by an older release) get it at the ingest's start, and a
    compaction between micro-batches loses and repeats nothing. Compaction is made to start at 3 small files
    instead of Delta's 50, so that a few batches reach it."""
    cfg, _ = pipeline
    settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
    root = cfg.storage.tables_root
    for name in (t.EVENTS, t.INTERACTIONS):
        path = ensure_delta_table(spark, root, name)
        spark.sql(f"ALTER TABLE delta.`{path}` UNSET TBLPROPERTIES ('{AUTO_COMPACT_KEY}')")
    rng = random.Random(3)
    sent: list[dict] = []
    producer = make_producer(cfg)
    spark.conf.set("spark.databricks.delta.autoCompact.minNumFiles", "3")
    try:
        for round_ in range(3):
            batch = valid_events(40, rng, f"r{round_}")
            repeats = rng.sample(sent, 5) if sent else []  # retried sends of earlier events, in a later batch
            send(producer, cfg.kafka.clicks_topic, [(None, json.dumps(e).encode()) for e in batch + repeats])
            sent += batch
            ingest_once(spark, settings)
    finally:
        spark.conf.unset("spark.databricks.delta.autoCompact.minNumFiles")
        producer.close()
    for name in (t.EVENTS, t.INTERACTIONS):
        table = DeltaTable.forPath(spark, table_path(root, name))
        assert table.detail().collect()[0]["properties"].get(AUTO_COMPACT_KEY) == "true", name
        operations = [r["operation"] for r in table.history().collect()]
        assert "OPTIMIZE" in operations, (name, operations)
        # fewer files than the batches wrote: the compaction's files replaced theirs
        assert table.detail().collect()[0]["numFiles"] < operations.count("WRITE") + operations.count("MERGE")
    assert interactions_by_type(spark, root) == expected_counts(sent)
    events = spark.read.format("delta").load(table_path(root, t.EVENTS))
    assert events.count() == len(sent) == events.select(t.EVENT_ID).distinct().count()
