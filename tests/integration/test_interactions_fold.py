"""The fold of events into interactions (streaming.interactions_fold), on real Delta tables and a real broker.

- Micro-batches append events only; folds count them into interactions exactly once, whatever runs between two
  folds (several batches, a compaction of events, a fold with nothing new).
- The ingest killed (SIGKILL) after its micro-batches appended events and before any fold: the restart counts
  every one of them, once.
- Tables an ingest wrote before folds existed (each micro-batch MERGEd its counts with its own transaction pair):
  the fold starts after what is there, so nothing is counted twice; a micro-batch cut short between its events
  and its MERGE is refused with what to do.
"""

from __future__ import annotations

import json
import os
import random
import signal

import pytest
from pyspark.sql import functions as F

from jobrec.batch.connections import ensure_topics
from jobrec.batch.delta_tables import ensure_delta_table, latest_version, table_path
from jobrec.batch.interactions_table import aggregate_interactions
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from jobrec.streaming.checkpoint_guard import CheckpointMismatch
from jobrec.streaming.ingest import ingest_once, start_ingest
from jobrec.streaming.interactions_fold import fold_events, fold_position, set_fold_position
from jobrec.streaming.processes import ingest_settings
from tests.integration.conftest import make_producer, unique_name, write_config
from tests.integration.test_ingest import expected_counts, interactions_by_type, send, valid_events
from tests.integration.test_recovery import events_in_table, start_ingest_process, stop_process, wait_for


def _post(cfg, events: list[dict]) -> None:
    producer = make_producer(cfg)
    send(producer, cfg.kafka.clicks_topic, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    producer.close()


def test_folds_count_every_appended_event_once(spark, pipeline) -> None:
    cfg, _ = pipeline
    settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
    root = cfg.storage.tables_root
    rng = random.Random(11)
    first, second = valid_events(150, rng, "a"), valid_events(90, rng, "b")
    # two ingests without a fold between them: two events versions for one fold
    _post(cfg, first)
    start_ingest(spark, settings, once=True).awaitTermination(600)
    assert interactions_by_type(spark, root) == {}  # the micro-batch did not count them
    _post(cfg, second + first[:10])  # with repeats of events already ingested
    start_ingest(spark, settings, once=True).awaitTermination(600)
    report = fold_events(spark, root, settings.weights)
    assert report is not None and report.last_version == latest_version(spark, table_path(root, t.EVENTS))
    assert interactions_by_type(spark, root) == expected_counts(first + second)
    assert report.pairs_inserted == len({(e["user_id"], e["job_id"]) for e in first + second})

    # nothing new: no fold, no change
    before = latest_version(spark, table_path(root, t.INTERACTIONS))
    assert fold_events(spark, root, settings.weights) is None
    assert latest_version(spark, table_path(root, t.INTERACTIONS)) == before

    # a compaction of events rewrites its rows without changing them: the next fold adds nothing
    spark.sql(f"OPTIMIZE delta.`{table_path(root, t.EVENTS)}`")
    fold_events(spark, root, settings.weights)
    assert fold_position(spark, root) == latest_version(spark, table_path(root, t.EVENTS))
    assert interactions_by_type(spark, root) == expected_counts(first + second)

    # and the next batch after it counts as usual
    third = valid_events(40, rng, "c")
    _post(cfg, third)
    ingest_once(spark, settings)
    assert interactions_by_type(spark, root) == expected_counts(first + second + third)


def test_sigkill_before_any_fold_then_restart_counts_every_event_once(spark, broker, tmp_path, request) -> None:
    # folds far apart: the kill lands after the micro-batches appended events and before any fold counted them
    config = write_config(
        tmp_path, broker.bootstrap, unique_name(request), ingest={"max_offsets_per_trigger": 200, "fold_seconds": 3600}
    )
    cfg = load_config(config, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)
    events = valid_events(400, random.Random(12), "k")
    _post(cfg, events)
    log = tmp_path / "ingest.log"
    proc = start_ingest_process(config, log)
    try:
        wait_for(lambda: events_in_table(spark, cfg.storage.tables_root) == 400, 300, "all 400 events", proc, log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        stop_process(proc)
    assert interactions_by_type(spark, cfg.storage.tables_root) == {}  # nothing folded before the kill

    # the restart (in this process: `jobrec ingest --once` as a process is test_recovery's) reads nothing new from
    # the topic and folds what the killed one appended
    report = ingest_once(spark, ingest_settings(cfg, broker.bootstrap))
    assert report is not None
    assert interactions_by_type(spark, cfg.storage.tables_root) == expected_counts(events)


def _old_style_tables(spark, root: str, app_id: str, events_batch: int, merged_batch: int) -> list[dict]:
    """events and interactions as an ingest before folds left them: every events batch also MERGEd, with the
    same (app id, batch id) pair, up to `merged_batch`. Returns the events."""
    rng = random.Random(13)
    events = valid_events(60, rng, "old")
    rows = spark.createDataFrame(
        [
            (e["event_id"], e["user_id"], e["job_id"], e["event_type"], e["occurred_at"], "clicks", 0, i)
            for i, e in enumerate(events)
        ],
        "event_id string, user_id string, job_id string, event_type string, occurred_at string, "
        "kafka_topic string, kafka_partition int, kafka_offset long",
    ).select(
        t.EVENT_ID,
        t.USER_ID,
        t.JOB_ID,
        t.EVENT_TYPE,
        F.to_timestamp(t.OCCURRED_AT).alias(t.OCCURRED_AT),
        F.current_timestamp().alias(t.RECEIVED_AT),
        t.KAFKA_TOPIC,
        t.KAFKA_PARTITION,
        t.KAFKA_OFFSET,
        F.lit(events_batch).cast("long").alias(t.BATCH_ID),
    )
    events_path = ensure_delta_table(spark, root, t.EVENTS)
    interactions_path = ensure_delta_table(spark, root, t.INTERACTIONS)
    rows.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", events_batch).save(
        events_path
    )
    counts = aggregate_interactions(rows, {"view": 1.0, "click": 1.0, "save": 3.0, "apply": 5.0})
    counts.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", merged_batch).save(
        interactions_path
    )
    return events


def test_tables_from_before_folds_are_not_counted_again(spark, tmp_path) -> None:
    root = str(tmp_path / "tables")
    events = _old_style_tables(spark, root, "jobrec-ingest:old", events_batch=4, merged_batch=4)
    counted = interactions_by_type(spark, root)
    assert counted == expected_counts(events)

    position = set_fold_position(spark, root)
    assert position == latest_version(spark, table_path(root, t.EVENTS))
    assert set_fold_position(spark, root) == position  # once set, it stays
    assert fold_events(spark, root, {"view": 1.0, "click": 1.0, "save": 3.0, "apply": 5.0}) is None
    assert interactions_by_type(spark, root) == counted


def test_a_batch_cut_short_before_its_merge_is_refused(spark, tmp_path) -> None:
    root = str(tmp_path / "tables")
    _old_style_tables(spark, root, "jobrec-ingest:old", events_batch=5, merged_batch=4)
    with pytest.raises(CheckpointMismatch, match="events holds batch 5 of jobrec-ingest:old and interactions only"):
        set_fold_position(spark, root)
    assert fold_position(spark, root) is None
