"""The ingest's liveness signal follows finished work, not the loop: a healthy query beats, a query that fails
every batch and is restarted forever (a crash loop) never does, so the chart's liveness probe restarts the pod.
Real broker, Spark and Delta."""

from __future__ import annotations

import json
import random
import time

from jobrec.batch.delta_tables import table_path
from jobrec.schemas import tables as t
from jobrec.streaming.ingest import run_ingest, start_ingest
from jobrec.streaming.processes import ingest_settings
from tests.integration.conftest import make_producer
from tests.integration.test_ingest import send, valid_events


def _run_for(spark, settings, seconds: float, until_beat: bool) -> tuple[list[float], int]:
    """Run the ingest loop for at most `seconds` (or until the first beat); (beat times, queries started)."""
    beats: list[float] = []
    started: list[int] = []
    deadline = time.monotonic() + seconds

    def start():
        started.append(1)
        return [start_ingest(spark, settings, trigger_seconds=0)]

    run_ingest(
        start,
        backoff_seconds=1,
        should_stop=lambda: time.monotonic() > deadline or (until_beat and bool(beats)),
        heartbeat=lambda: beats.append(time.monotonic()),
    )
    return beats, len(started)


def _records(events: list[dict]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e["user_id"].encode(), json.dumps(e).encode()) for e in events]


def test_a_healthy_query_beats(spark, pipeline) -> None:
    cfg, _ = pipeline
    bad: list[tuple[bytes | None, bytes | None]] = [(None, b'{"not": "an event"}')]
    send(make_producer(cfg), cfg.kafka.clicks_topic, bad + _records(valid_events(5, random.Random(1), "live")))
    beats, _ = _run_for(spark, ingest_settings(cfg, cfg.kafka.bootstrap_servers), 120, until_beat=True)
    assert beats, "no heartbeat in 120 s from a healthy ingest"


def test_a_crash_looping_query_never_beats(spark, pipeline) -> None:
    cfg, _ = pipeline
    # an events table of another shape: every batch's append fails, the query dies and is restarted, forever
    spark.createDataFrame([(1,)], "unrelated INT").write.format("delta").save(
        table_path(cfg.storage.tables_root, t.EVENTS)
    )
    send(make_producer(cfg), cfg.kafka.clicks_topic, _records(valid_events(5, random.Random(2), "loop")))
    beats, starts = _run_for(spark, ingest_settings(cfg, cfg.kafka.bootstrap_servers), 25, until_beat=False)
    assert starts >= 2, "the failing query was not restarted: the test did not create a crash loop"
    assert beats == []
