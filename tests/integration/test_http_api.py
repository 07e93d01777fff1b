"""The HTTP ingest/read API against a real broker (its own: one test stops it), served by uvicorn."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import uvicorn

from jobrec.batch.connections import ensure_topics, python_client_args
from jobrec.schemas.config import load_config
from jobrec.streaming.local.embedded_kafka import free_port, start_broker, stop_broker
from jobrec.streaming.processes import build_api
from jobrec.streaming.producer import make_click_event, make_job_event
from tests.integration.conftest import broker_config, make_producer, write_config

TOKEN = "test-token"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    kafka = broker_config(folder / "kafka")
    state = start_broker(kafka)
    cfg = load_config(
        write_config(
            folder, state.bootstrap, "api", api={"token": TOKEN, "kafka_timeout_seconds": 5, "max_body_bytes": 200_000}
        ),
        env={},
    )
    ensure_topics(cfg.kafka, state.bootstrap)
    app, stop = build_api(cfg, state.bootstrap)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", cfg, kafka
    server.should_exit = True
    thread.join(10)
    stop()
    stop_broker(kafka)


def call(
    base: str, path: str, body: bytes | None = None, token: str | None = TOKEN, content_type: str = "application/json"
):
    req = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def topic_event_ids(cfg, topic: str | None = None) -> list[str]:
    from kafka import KafkaConsumer, TopicPartition

    topic = topic or cfg.kafka.clicks_topic
    consumer = KafkaConsumer(**python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers), enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    end = consumer.end_offsets(parts)
    ids = []
    while not all(consumer.position(tp) >= end[tp] for tp in parts):
        for records in consumer.poll(timeout_ms=500).values():
            ids += [json.loads(r.value)["event_id"] for r in records]
    consumer.close()
    return ids


def test_bad_requests_get_the_right_4xx_naming_the_field(api) -> None:
    base, _, _ = api
    status, body = call(base, "/v1/events", json.dumps({**make_click_event("u", "j"), "user_id": 7}).encode())
    assert status == 400
    [result] = json.loads(body)["results"]
    assert result["field"] == "user_id" and result["reason"].startswith("wrong_type")
    status, body = call(base, "/v1/events", b"{not json")
    assert status == 400 and json.loads(body)["results"][0]["reason"].startswith("invalid_json")
    status, _ = call(base, "/v1/events", json.dumps([make_click_event("u", "j" * 100)] * 1500).encode())
    assert status == 413  # over max_body_bytes (200 kB here)
    status, _ = call(base, "/v1/events", json.dumps([make_click_event("u", "j")] * 1001).encode())
    assert status == 413  # over max_batch_events (1,000)
    status, _ = call(base, "/v1/events", json.dumps(make_click_event("u", "j")).encode(), token=None)
    assert status == 401


def test_a_batch_with_some_bad_events_keeps_the_good_ones(api) -> None:
    base, cfg, _ = api
    good = [make_click_event(f"u{i}", f"j{i}") for i in range(5)]
    batch = [good[0], {"event_id": "x"}, good[1], {**good[2], "event_type": "purchase"}, *good[2:]]
    status, body = call(base, "/v1/events", json.dumps(batch).encode())
    assert status == 200
    answer = json.loads(body)
    assert (answer["accepted"], answer["rejected"]) == (5, 2)
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "accepted", "rejected"] + [
        "accepted"
    ] * 3
    assert answer["results"][3]["field"] == "event_type"
    ndjson = b"\n".join(json.dumps(make_click_event("nd", f"j{i}")).encode() for i in range(3))
    status, body = call(base, "/v1/events", ndjson, content_type="application/x-ndjson")
    assert status == 200 and json.loads(body)["accepted"] == 3
    on_topic = set(topic_event_ids(cfg))
    assert {e["event_id"] for e in good} <= on_topic and "x" not in on_topic
    status, body = call(base, "/metrics")
    assert status == 200 and b"jobrec_events_accepted_total" in body
    assert call(base, "/healthz", token=None)[0] == 200 and call(base, "/readyz", token=None)[0] == 200


def test_job_events_over_http_go_to_the_jobs_topic(api) -> None:
    base, cfg, _ = api
    close = make_job_event("j-closing", "closed")
    post = make_job_event("j-new", "posted", category="Retial")
    bad = {**make_job_event("j-bad", "closed"), "category": "IT"}  # a close carries no category
    status, body = call(base, "/v1/jobs/events", json.dumps([close, bad, post]).encode())
    answer = json.loads(body)
    assert status == 200 and (answer["accepted"], answer["rejected"]) == (2, 1)
    assert answer["results"][1]["field"] == "category" and "field_not_allowed" in answer["results"][1]["reason"]
    on_topic = topic_event_ids(cfg, cfg.kafka.jobs_topic)
    assert {close["event_id"], post["event_id"]} <= set(on_topic) and bad["event_id"] not in on_topic
    # a click event is not a job event
    status, body = call(base, "/v1/jobs/events", json.dumps(make_click_event("u", "j")).encode())
    verdict = json.loads(body)["results"][0]
    assert status == 400 and verdict["reason"].startswith("unknown_field") and verdict["field"] == "event_type"


def test_read_api_answers_the_newest_list(api) -> None:
    base, cfg, _ = api
    producer = make_producer(cfg)
    for n in (1, 2):
        msg = {
            "schema_version": 1,
            "user_id": "reader",
            "model_version": f"v{n}",
            "generated_at": "2026-11-26T10:00:00.000Z",
            "newest_event_at": None,
            "source": "batch",
            "items": [{"job_id": "j", "score": 1.0, "rank": 1}],
        }
        producer.send(cfg.kafka.recommendations_topic, key=b"reader", value=json.dumps(msg).encode()).get(30)
    producer.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = call(base, "/v1/recommendations/reader")
        if status == 200 and json.loads(body)["model_version"] == "v2":
            break
        time.sleep(0.3)
    assert status == 200 and json.loads(body)["model_version"] == "v2"
    assert call(base, "/v1/recommendations/nobody")[0] == 404
    # once the list for new users is published, a user without a list gets it, addressed to them
    generic = {**msg, "user_id": "*", "source": "fallback", "items": [{"job_id": "popular", "score": 0.0, "rank": 1}]}
    producer = make_producer(cfg)
    producer.send(cfg.kafka.recommendations_topic, key=b"*", value=json.dumps(generic).encode()).get(30)
    producer.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (status := call(base, "/v1/recommendations/nobody")[0]) != 200:
        time.sleep(0.3)
    status, body = call(base, "/v1/recommendations/nobody")
    answer = json.loads(body)
    assert status == 200 and answer["user_id"] == "nobody" and answer["source"] == "fallback"
    assert answer["items"][0]["job_id"] == "popular"
    # a user with a list of their own still gets theirs
    assert json.loads(call(base, "/v1/recommendations/reader")[1])["model_version"] == "v2"


def test_broker_down_means_503_and_nothing_acknowledged_is_lost(api) -> None:
    base, cfg, kafka = api
    acknowledged: list[str] = []
    stop_broker(kafka)
    event = make_click_event("down", f"j-{uuid.uuid4()}")
    status, _ = call(base, "/v1/events", json.dumps(event).encode())
    assert status == 503
    start_broker(kafka)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the client retries the same event, as the 503 asks
        status, _ = call(base, "/v1/events", json.dumps(event).encode())
        if status == 200:
            acknowledged.append(event["event_id"])
            break
        time.sleep(1)
    assert acknowledged, "the API did not recover after the broker came back"
    more = [make_click_event("after", f"j{i}") for i in range(10)]
    status, _ = call(base, "/v1/events", json.dumps(more).encode())
    assert status == 200
    acknowledged += [e["event_id"] for e in more]
    assert set(acknowledged) <= set(topic_event_ids(cfg))


def test_python_clients_send_and_follow(api) -> None:
    from jobrec.streaming.clients import ClickProducer, InvalidEvent, RecommendationsConsumer

    _, cfg, _ = api
    args = python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers)
    producer = ClickProducer(topic=cfg.kafka.clicks_topic, **args)
    event_id = producer.send("client-user", "job-9", "save")
    with pytest.raises(InvalidEvent) as e:
        producer.send("client-user", "", "save")
    assert e.value.field == "job_id"
    producer.close()
    assert event_id in topic_event_ids(cfg)

    raw = make_producer(cfg)
    msg = {
        "schema_version": 1,
        "user_id": "client-user",
        "model_version": "v9",
        "generated_at": "2026-11-26T10:00:00.000Z",
        "newest_event_at": None,
        "source": "fold-in",
        "items": [],
    }
    raw.send(cfg.kafka.recommendations_topic, key=b"client-user", value=json.dumps(msg).encode()).get(30)
    raw.close()
    consumer = RecommendationsConsumer(topic=cfg.kafka.recommendations_topic, **args)
    deadline = time.monotonic() + 30
    while (consumer.latest("client-user") or {}).get("model_version") != "v9" and time.monotonic() < deadline:
        consumer.poll(500)
    consumer.close()
    assert consumer.latest("client-user")["model_version"] == "v9"
