"""Hostile input end to end, on the real broker, Spark, Delta, speed layer and HTTP API: poison records of every
kind (through HTTP and straight to Kafka) between good events, and a non-JSON message on the recommendations
topic. Every good event lands in the events table exactly once, every poison record sent to Kafka is a dead
letter with its reason, every poison body over HTTP is refused with a 4xx naming the reason, no component stops,
and GET still answers the newest list.

What is expected is written here from the inputs, not computed by the pipeline's code.
"""

from __future__ import annotations

import csv
import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobrec.batch.backfill import CsvLayout, load_counts_csv
from jobrec.batch.delta_tables import table_path
from jobrec.batch.processes import retrain_and_publish
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from jobrec.streaming.ingest import ingest_once
from jobrec.streaming.job_events import start_job_events
from jobrec.streaming.processes import build_api, ingest_settings
from jobrec.streaming.speed import SpeedStats
from tests.integration.conftest import make_producer, running_speed_layer, serving, unique_name, write_config

NOW = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_text(event_id: str, user: str = "u1", job: str = "1", occurred_at: str = NOW) -> str:
    """A click event as JSON text; ids and times go in verbatim, so JSON escapes such as \\ud800 stay escapes."""
    return (
        f'{{"event_id": "{event_id}", "user_id": "{user}", "job_id": "{job}", '
        f'"event_type": "click", "occurred_at": "{occurred_at}"}}'
    )


# name -> (record value, the reason code it must be refused with); each a finding of the hostile-input review
POISON: dict[str, tuple[bytes, str]] = {
    "lone surrogate in job_id": (event_text("p1", job="pj\\ud800").encode(), "bad_unicode"),
    "lone surrogate in user_id": (event_text("p2", user="\\ud800").encode(), "bad_unicode"),
    "leap second in year 9999": (
        event_text("p3", occurred_at="9999-12-31T23:59:60Z").encode(),
        "timestamp_out_of_range",
    ),
    "year 1 with an offset": (
        event_text("p4", occurred_at="0001-01-01T00:00:00+00:01").encode(),
        "timestamp_out_of_range",
    ),
    "the reserved user id": (event_text("p5", user="*").encode(), "reserved_id"),
    "a C1 control in an id": (event_text("p6", job="a\\u0085b").encode(), "control_char"),
    "a bidi override in an id": (event_text("p7", job="a\\u202eb").encode(), "format_char"),
    "a zero-width space in an id": (event_text("p8", user="u\\u200b1").encode(), "format_char"),
    "a duplicate key": (
        event_text("p9").replace('"event_id": "p9"', '"event_id": "p9", "event_id": "p10"').encode(),
        "duplicate_key",
    ),
    "deeply nested": (b"[" * 5000 + b"]" * 5000, "too_deep"),
    "not UTF-8": (b'{"event_id": "\xff\xfe"}', "invalid_utf8"),
    "not JSON": (b"hello", "invalid_json"),
}


@pytest.fixture
def stack(spark, broker, tmp_path: Path, request: pytest.FixtureRequest):
    """A config on the session broker with a model trained on two taste groups (gate off: a small set), the
    speed layer running in a thread, and the HTTP API served by uvicorn; everything stopped afterwards."""
    name = unique_name(request)
    cfg = load_config(
        write_config(tmp_path, broker.bootstrap, name, als={"rank": 4, "max_iter": 5}, gate={"enabled": False}),
        env={},
    )
    from jobrec.batch.connections import ensure_topics

    ensure_topics(cfg.kafka, broker.bootstrap)
    seed = tmp_path / "clicks.csv"
    with seed.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "jobId", "Clicks"])
        for u in range(1, 41):
            first = 1 if u <= 20 else 21
            for j in range(first, first + 8):
                w.writerow([u, j + (u % 5), 1])
    load_counts_csv(spark, str(seed), CsvLayout(), cfg.storage.tables_root, "click", cfg.ingest.weights)
    retrain_and_publish(spark, cfg, broker.bootstrap)

    stats = SpeedStats()
    with running_speed_layer(cfg, broker.bootstrap, stats) as speed:
        app, stop_api = build_api(cfg, broker.bootstrap)
        with serving(app) as base:
            yield cfg, base, speed, stats
        stop_api()


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = r.read()
            return r.status, json.loads(body) if body.startswith(b"{") else body.decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def good_events(tag: str, users: range) -> list[str]:
    return [event_text(f"{tag}-{u}-{uuid.uuid4().hex[:6]}", user=str(u), job=str(30 + u % 7)) for u in users]


def test_poison_never_stops_the_pipeline(spark, stack) -> None:
    cfg, base, speed, stats = stack
    producer = make_producer(cfg)
    topic = cfg.kafka.clicks_topic

    def to_kafka(values: list[bytes]) -> list[tuple[int, int]]:
        futures = [producer.send(topic, key=b"k", value=v) for v in values]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.get(timeout=60) for f in futures)]

    # good events before the poison: over HTTP and straight to Kafka
    good_http = good_events("before-http", range(1, 6))
    good_kafka = good_events("before-kafka", range(6, 11))
    status, body = post(f"{base}/v1/events", ("[" + ",".join(good_http) + "]").encode())
    assert status == 200 and body["accepted"] == 5, body
    to_kafka([e.encode() for e in good_kafka])

    # the poison, straight to Kafka: each must become a dead letter with its reason
    poison_offsets = dict(zip(POISON, to_kafka([v for v, _ in POISON.values()]), strict=True))

    # the poison over HTTP: each a 4xx naming its reason, never a 5xx; nothing of it reaches the topic
    for name, (value, reason) in POISON.items():
        status, body = post(f"{base}/v1/events", value)
        assert 400 <= status < 500, (name, status, body)
        if name != "deeply nested" and status == 400:  # a body that is one event: its verdict names the reason
            assert body["results"][0]["reason"].startswith(reason), (name, body)
    # a good event beside a bad one in one batch: the good one is kept, the bad one refused, no 503
    mixed_good = good_events("mixed", range(11, 12))[0]
    status, body = post(
        f"{base}/v1/events", f"[{mixed_good}, {POISON['lone surrogate in user_id'][0].decode()}]".encode()
    )
    assert status == 200 and body["accepted"] == 1 and body["results"][1]["status"] == "rejected", body
    # a non-JSON message on the recommendations topic: the read API's follower must step over it
    producer.send(cfg.kafka.recommendations_topic, key=b"mallory", value=b"\x00 not a list").get(timeout=60)

    # good events after the poison, and one click of a modelled user whose fresh list must reach GET
    after_http = good_events("after-http", range(12, 17))
    status, body = post(f"{base}/v1/events", "\n".join(after_http).encode(), "application/x-ndjson")
    assert status == 200 and body["accepted"] == 5, body
    after_kafka = good_events("after-kafka", range(17, 22))
    to_kafka([e.encode() for e in after_kafka])
    probe = json.loads(event_text(f"probe-{uuid.uuid4().hex[:6]}", user="3", job="25", occurred_at=NOW))
    to_kafka([json.dumps(probe).encode()])

    deadline, fresh = time.monotonic() + 60, None
    while time.monotonic() < deadline and fresh is None:
        status, body = get(f"{base}/v1/recommendations/3")
        # the list computed from the probe click carries its time (RFC 3339 with milliseconds)
        if isinstance(body, dict) and body.get("newest_event_at") == probe["occurred_at"].replace("Z", ".000Z"):
            fresh = body
        time.sleep(0.5)
    assert fresh is not None and fresh["source"] == "fold-in", f"GET never answered user 3's fresh list: {body}"
    assert get(f"{base}/readyz")[0] == 200
    assert speed.is_alive(), "the speed layer stopped"

    # the ingest, once over what is on the topics: exactly the good events, every poison record a dead letter
    settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
    ingest_once(spark, settings)
    start_job_events(spark, settings, once=True).awaitTermination(300)
    events = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.EVENTS))
    ids = [r[0] for r in events.select(t.EVENT_ID).collect()]
    expected = {json.loads(e)["event_id"] for e in good_http + good_kafka + [mixed_good] + after_http + after_kafka}
    expected.add(probe["event_id"])
    assert sorted(ids) == sorted(expected)  # each exactly once, nothing else
    letters = {
        (r[t.KAFKA_PARTITION], r[t.KAFKA_OFFSET]): r[t.REASON_CODE]
        for r in spark.read.format("delta")
        .load(table_path(cfg.storage.tables_root, t.DEAD_LETTERS))
        .where(F.col(t.KAFKA_TOPIC) == topic)
        .collect()
    }
    for name, where in poison_offsets.items():
        assert letters.get(where) == POISON[name][1], (name, letters.get(where))
    assert len(letters) == len(POISON)
    producer.close()
