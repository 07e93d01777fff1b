"""The HTTP ingest/read API against a real broker (its own: one test stops it), served by uvicorn; the freeze
tests start one more broker of their own to SIGSTOP."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from jobrec.batch.connections import ensure_topics, python_client_args
from jobrec.schemas.config import load_config
from jobrec.streaming.local.embedded_kafka import start_broker, stop_broker
from jobrec.streaming.processes import build_api
from jobrec.streaming.producer import make_click_event, make_job_event
from tests.integration.conftest import broker_config, make_producer, serving, write_config

TOKEN = "test-token"
READ_TIMEOUT = 1.5  # api.read_timeout_seconds of these tests


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def api_config(folder, bootstrap: str, name: str, **api: Any):
    settings = {
        "token": TOKEN,
        "kafka_timeout_seconds": 5,
        "max_body_bytes": 200_000,
        "read_timeout_seconds": READ_TIMEOUT,
        "ready_check_interval_seconds": 0.2,
        "ready_timeout_seconds": 0.8,
        **api,
    }
    return load_config(write_config(folder, bootstrap, name, api=settings), env={})


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    kafka = broker_config(folder / "kafka")
    state = start_broker(kafka)
    cfg = api_config(folder, state.bootstrap, "api")
    ensure_topics(cfg.kafka, state.bootstrap)
    app, stop = build_api(cfg, state.bootstrap)
    with serving(app) as base:
        wait_for(lambda: call(base, "/readyz")[0] == 200, 60, "the API is ready")
        yield base, cfg, kafka
    stop()
    stop_broker(kafka)


def call_with_headers(
    base: str,
    path: str,
    body: bytes | None = None,
    token: str | None = TOKEN,
    content_type: str | None = "application/json",
    timeout: float = 60,
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request; content_type None sends no Content-Type at all."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def call(
    base: str,
    path: str,
    body: bytes | None = None,
    token: str | None = TOKEN,
    content_type: str | None = "application/json",
    timeout: float = 60,
) -> tuple[int, bytes]:
    status, _, answer = call_with_headers(base, path, body, token, content_type, timeout)
    return status, answer


def raw_exchange(base: str, request: bytes, seconds: float) -> tuple[bytes, float]:
    """Send `request` as it is over a new connection and read until the server closes it (at most `seconds`);
    returns what came back and how long until the first byte of it."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        started = time.monotonic()
        sock.sendall(request)
        answer, first = b"", None
        deadline = started + seconds
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break  # closed by the server
            first = first if first is not None else time.monotonic() - started
            answer += chunk
        return answer, first if first is not None else float("inf")


def post_head(path: str, content_length: int, token: str = TOKEN) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()


def recommendation(user_id: str, version: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "user_id": user_id,
        "model_version": version,
        "generated_at": "2026-11-26T10:00:00.000Z",
        "newest_event_at": None,
        "source": "batch",
        "items": [{"job_id": "j", "score": 1.0, "rank": 1}],
    }


def metric(base: str, name: str) -> float:
    status, body = call(base, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


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


def test_401_says_bearer_and_only_the_exact_token_passes(api) -> None:
    base, _, _ = api
    event = json.dumps(make_click_event("auth", "j")).encode()
    status, headers, _ = call_with_headers(base, "/v1/events", event, token=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in ("test-toke", "test-token2", "TEST-TOKEN", ""):
        status, headers, _ = call_with_headers(base, "/v1/events", event, token=wrong or None)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), wrong
    status, headers, _ = call_with_headers(base, "/v1/recommendations/anyone", token="nope")
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert call(base, "/v1/events", event)[0] == 200


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


def test_requests_are_counted_by_route_template_and_status(api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    base, _, _ = api

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = call(base, "/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    def requests(method: str, route: str, status: str, got) -> float:
        return got.get(("jobrec_http_requests_total", (("method", method), ("route", route), ("status", status))), 0)

    before = samples()
    sent = Counter()
    for user in ("alice", "bob", "carol"):  # three users' paths: one route, one series
        sent[("GET", "/v1/recommendations/{user_id}", str(call(base, f"/v1/recommendations/{user}")[0]))] += 1
    sent[("POST", "/v1/events", str(call(base, "/v1/events", b"{not json")[0]))] += 1
    sent[("POST", "/v1/events", str(call(base, "/v1/events", b"{}", token=None)[0]))] += 1  # the bearer check's 401
    sent[("GET", "unmatched", str(call(base, "/no/such/path")[0]))] += 1
    assert ("POST", "/v1/events", "400") in sent and ("POST", "/v1/events", "401") in sent
    after = samples()
    for (method, route, status), n in sent.items():
        assert requests(method, route, status, after) - requests(method, route, status, before) == n, (route, status)
    assert not any(dict(labels).get("route", "").startswith("/v1/recommendations/a") for _, labels in after)
    count = ("jobrec_http_request_seconds_count", (("method", "GET"), ("route", "/v1/recommendations/{user_id}")))
    assert after[count] - before.get(count, 0) == 3


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


def test_a_bad_event_beside_a_good_one_is_rejected_alone_and_never_a_503(api) -> None:
    """Issue 11, finding 2: a lone surrogate in user_id was a 503 "Kafka is unavailable", and the good event of
    the same batch was written anyway."""
    base, cfg, _ = api
    good = make_click_event("before-surrogate", "j1")
    surrogate = {**make_click_event("x", "j2"), "user_id": "\ud800"}
    body = json.dumps([good, surrogate]).encode()
    assert b"\\ud800" in body  # sent as a JSON escape, the way the attacker sent it
    status, answer = call(base, "/v1/events", body)
    assert status == 200, answer
    first, second = json.loads(answer)["results"]
    assert first["status"] == "accepted"
    assert second["status"] == "rejected" and second["field"] == "user_id" and second["code"] == "bad_unicode"
    assert metric(base, "jobrec_kafka_unavailable_total") == 0
    assert topic_event_ids(cfg).count(good["event_id"]) == 1
    # alone, it is a 400 with its verdict
    status, answer = call(base, "/v1/events", json.dumps(surrogate).encode())
    assert status == 400 and json.loads(answer)["results"][0]["code"] == "bad_unicode"


def test_deep_nesting_and_out_of_range_times_are_4xx_with_a_verdict(api) -> None:
    """Issue 11, finding 3: a 10 KB nested array (RecursionError) and an out-of-range time (OverflowError) were
    HTTP 500."""
    base, _, _ = api
    for body in (b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000):
        status, answer = call(base, "/v1/events", body)
        assert status == 400, answer[:200]
        [verdict] = json.loads(answer)["results"]
        assert verdict["status"] == "rejected" and verdict["code"] == "too_deep"
    for stamp in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        status, answer = call(
            base, "/v1/events", json.dumps({**make_click_event("t", "j"), "occurred_at": stamp}).encode()
        )
        [verdict] = json.loads(answer)["results"]
        assert status == 400 and verdict["code"] == "timestamp_out_of_range" and verdict["field"] == "occurred_at"
    job = {**make_job_event("j-far", "posted"), "expires_at": "9999-12-31T23:59:59-23:59"}
    status, answer = call(base, "/v1/jobs/events", json.dumps(job).encode())
    assert status == 400 and json.loads(answer)["results"][0]["code"] == "timestamp_out_of_range"


def test_a_repeated_key_is_rejected_inside_an_array_as_in_a_single_event(api) -> None:
    """Issue 11, finding 5: inside an array the last of two user_ids won silently."""
    base, cfg, _ = api
    good = make_click_event("dup-good", "j")
    twice = make_click_event("first-user", "j")
    text = json.dumps(twice)
    repeated = text[:-1] + ', "user_id": "second-user"}'
    status, answer = call(base, "/v1/events", repeated.encode())
    single = json.loads(answer)["results"][0]
    assert status == 400 and (single["code"], single["field"]) == ("duplicate_key", "user_id")
    body = ("[" + json.dumps(good) + ",\n " + repeated + "]").encode()
    status, answer = call(base, "/v1/events", body)
    assert status == 200
    first, second = json.loads(answer)["results"]
    assert first["status"] == "accepted"
    assert (second["status"], second["code"], second["field"]) == ("rejected", "duplicate_key", "user_id")
    assert twice["event_id"] not in topic_event_ids(cfg)


def test_content_types_json_ndjson_or_none_and_415_for_the_rest(api) -> None:
    base, _, _ = api

    def one() -> bytes:
        return json.dumps(make_click_event("ct", f"j-{uuid.uuid4()}")).encode()

    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        assert call(base, "/v1/events", one(), content_type=content_type)[0] == 200, content_type
    assert call(base, "/v1/events", one(), content_type=None)[0] == 200  # no Content-Type: JSON
    lines = one() + b"\n" + one() + b"\n"
    for content_type in ("application/x-ndjson", "application/jsonlines", "application/json-lines; charset=utf-8"):
        status, answer = call(base, "/v1/events", lines, content_type=content_type)
        assert status == 200 and json.loads(answer)["accepted"] == 2, content_type
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16"):
        status, answer = call(base, "/v1/events", one(), content_type=content_type)
        assert status == 415 and b"application/json" in answer, content_type
    assert call(base, "/v1/jobs/events", one(), content_type="text/csv")[0] == 415


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(api) -> None:
    """Issue 11, finding 6: a huge Content-Length was waited for; now 413 at once, the body never sent."""
    base, cfg, _ = api
    for length in (cfg.api.max_body_bytes + 1, 10**12):
        answer, first_byte = raw_exchange(base, post_head("/v1/events", length), seconds=10)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert first_byte < 2
        assert b"connection: close" in answer.lower()  # and closed: the rest of the body is not read


def test_a_body_that_stops_arriving_gets_408_after_the_read_timeout(api) -> None:
    """Issue 11, finding 6: half-sent requests were held as long as the client liked."""
    base, _, _ = api
    answer, first_byte = raw_exchange(
        base, post_head("/v1/events", 1000) + b'{"event_id": "', seconds=READ_TIMEOUT + 10
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert READ_TIMEOUT - 0.2 <= first_byte <= READ_TIMEOUT + 2
    # a whole body sent slowly but within the timeout is taken
    event = json.dumps(make_click_event("slow", "j")).encode()
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(post_head("/v1/events", len(event)) + event[:10])
        time.sleep(READ_TIMEOUT / 3)
        sock.sendall(event[10:])
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_the_follower_skips_a_record_that_is_not_a_list(api) -> None:
    """Issue 11, finding 1: one non-JSON record on the recommendations topic killed the follower thread: stale
    lists, /readyz still 200, and after a restart 503 for every GET until compaction."""
    from kafka import KafkaProducer

    base, cfg, _ = api
    skipped_before = metric(base, "jobrec_recommendations_skipped_total")
    producer = KafkaProducer(**python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers), acks="all")
    topic = cfg.kafka.recommendations_topic
    producer.send(topic, key=b"poisoned", value=b"\xff not JSON {").get(30)
    producer.send(topic, key=b"after-poison", value=json.dumps(recommendation("after-poison", "v7")).encode()).get(30)
    producer.close()

    def answers_the_list_after_it() -> bool:
        status, body = call(base, "/v1/recommendations/after-poison")
        return status == 200 and json.loads(body)["model_version"] == "v7"

    wait_for(answers_the_list_after_it, 30, "GET answers the list sent after the bad record")
    assert metric(base, "jobrec_recommendations_skipped_total") == skipped_before + 1
    assert metric(base, "jobrec_recommendations_follower_restarts_total") == 0
    assert call(base, "/readyz")[0] == 200
    # an API started now reads the bad record first thing, and still gets ready
    app, stop = build_api(cfg, cfg.kafka.bootstrap_servers)
    try:
        with serving(app) as second:
            wait_for(lambda: call(second, "/readyz")[0] == 200, 30, "a new API gets ready past the bad record")
            assert answers_the_list_after_it()
            assert json.loads(call(second, "/v1/recommendations/after-poison")[1])["model_version"] == "v7"
            assert metric(second, "jobrec_recommendations_skipped_total") == 1
    finally:
        stop()


def test_the_follower_reopens_until_its_topic_exists(api) -> None:
    """A follower whose consumer fails (here: its topic does not exist yet) says so as not ready and reopens the
    consumer after its backoff, instead of ending."""
    from jobrec.streaming.clients import RecommendationsConsumer
    from jobrec.streaming.recommendations_reader import LatestLists

    _, cfg, _ = api
    kafka = dataclasses.replace(cfg.kafka, recommendations_topic=f"late-recs-{uuid.uuid4().hex[:6]}")
    args = python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers)
    lists = LatestLists(
        lambda: RecommendationsConsumer(topic=kafka.recommendations_topic, **args), backoff_seconds=0.2
    ).start()
    try:
        wait_for(lambda: lists.restarts >= 2, 30, "the follower retries")
        ready, why = lists.status()
        assert not ready and "no partitions" in why
        ensure_topics(kafka, cfg.kafka.bootstrap_servers)
        wait_for(lambda: lists.status()[0], 30, "the follower gets ready once the topic exists")
        producer = make_producer(cfg)
        msg = recommendation("late", "v1")
        producer.send(kafka.recommendations_topic, key=b"late", value=json.dumps(msg).encode()).get(30)
        producer.close()
        wait_for(lambda: lists.lists.get("late") == msg, 30, "the follower reads the new topic")
    finally:
        lists.stop()


def test_broker_down_means_503_and_nothing_acknowledged_is_lost(api) -> None:
    base, cfg, kafka = api
    acknowledged: list[str] = []
    stop_broker(kafka)
    event = make_click_event("down", f"j-{uuid.uuid4()}")
    started = time.monotonic()
    status, answer = call(base, "/v1/events", json.dumps(event).encode())
    assert status == 503 and "same event_ids" in json.loads(answer)["error"]
    assert time.monotonic() - started < cfg.api.kafka_timeout_seconds + 2  # one deadline for the whole request
    wait_for(lambda: call(base, "/readyz")[0] == 503, 10, "/readyz says Kafka is not ready")
    start_broker(kafka)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the client retries the same event, as the 503 asks
        status, _ = call(base, "/v1/events", json.dumps(event).encode())
        if status == 200:
            acknowledged.append(event["event_id"])
            break
        time.sleep(1)
    assert acknowledged, "the API did not recover after the broker came back"
    wait_for(lambda: call(base, "/readyz")[0] == 200, 30, "/readyz says ready again")
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


@pytest.fixture
def frozen_api(tmp_path):
    """An API on a broker of its own, which the test may freeze with SIGSTOP; thawed and stopped afterwards."""
    kafka = broker_config(tmp_path / "kafka")
    state = start_broker(kafka)
    try:
        cfg = api_config(tmp_path, state.bootstrap, "frozen", kafka_timeout_seconds=3, ready_timeout_seconds=0.5)
        ensure_topics(cfg.kafka, state.bootstrap)
        app, stop = build_api(cfg, state.bootstrap)
        try:
            with serving(app) as base:
                wait_for(lambda: call(base, "/readyz")[0] == 200, 60, "the API is ready")
                yield base, cfg, state.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGCONT)
            stop()
    finally:
        stop_broker(kafka)


def test_readyz_is_503_at_once_while_the_broker_is_frozen_even_under_blocked_posts(frozen_api) -> None:
    """Issue 11, finding 4: a frozen broker read as ready (TCP still connects), the probe took 10 s under 60
    concurrent posters, and a POST waited up to twice kafka_timeout_seconds."""
    base, cfg, pid = frozen_api
    timeout = cfg.api.kafka_timeout_seconds
    assert call(base, "/v1/events", json.dumps(make_click_event("warm", "j")).encode())[0] == 200
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: call(base, "/readyz", timeout=5)[0] == 503, 5, "/readyz sees the frozen broker")
        answer = json.loads(call(base, "/readyz")[1])
        assert answer["kafka"]["ready"] is False and answer["recommendations"]["ready"] is True
        assert "Kafka" in answer["kafka"]["detail"]

        outcomes: list[tuple[int, float]] = []

        def post(i: int) -> None:
            started = time.monotonic()
            status, _ = call(base, "/v1/events", json.dumps(make_click_event(f"blocked-{i}", "j")).encode())
            outcomes.append((status, time.monotonic() - started))

        posters = [threading.Thread(target=post, args=(i,)) for i in range(20)]
        for t in posters:
            t.start()
        probes = []
        probing_until = time.monotonic() + timeout / 2
        while time.monotonic() < probing_until:
            started = time.monotonic()
            status, _ = call(base, "/readyz", timeout=5)
            probes.append((status, time.monotonic() - started))
            time.sleep(0.05)
        assert all(t.is_alive() for t in posters), "the probes ran while the posts were blocked"
        assert probes and all(status == 503 and took < 1 for status, took in probes), probes
        for t in posters:
            t.join(timeout + 10)
        assert len(outcomes) == 20
        # one deadline per request: 503 after about kafka_timeout_seconds, never twice that
        assert all(status == 503 and took < timeout + 1.5 for status, took in outcomes), outcomes
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: call(base, "/readyz")[0] == 200, 30, "/readyz is ready again after the thaw")
    # the producer itself recovers after its batches expired on the frozen broker
    wait_for(
        lambda: call(base, "/v1/events", json.dumps(make_click_event("thawed", "j")).encode())[0] == 200,
        30,
        "POST is accepted again after the thaw",
    )
