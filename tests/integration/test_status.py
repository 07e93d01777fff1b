"""`jobrec status` on the real broker, Spark and Delta: a pipeline built into a known state (events ingested, some
not yet, dead letters of known reasons, one published and one rejected model) reads back as that state; an
unreachable or silent broker is an answer within seconds, never a hang.

The expected values are computed here from what the test sent and did, not by the status code.
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jobrec.batch.backfill import CsvLayout, load_counts_csv
from jobrec.batch.connections import ensure_topics
from jobrec.batch.delta_tables import table_path
from jobrec.batch.processes import als_params
from jobrec.batch.retrain import GateSettings, gated_retrain
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from jobrec.streaming.ingest import ingest_once
from jobrec.streaming.processes import ingest_settings
from jobrec.streaming.status import format_status, probe_kafka, read_status
from tests.integration.conftest import REPO, SEED_DIR, make_producer, unique_name, write_config


def click(event_id: str, user: int, job: int) -> dict:
    occurred = datetime.now(timezone.utc) - timedelta(minutes=user + job)
    return {
        "event_id": event_id,
        "user_id": f"user-{user}",
        "job_id": f"job-{job}",
        "event_type": "click",
        "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def without(event: dict, field: str) -> dict:
    return {k: v for k, v in event.items() if k != field}


def send(producer, topic: str, values: list[bytes]) -> None:
    futures = [producer.send(topic, key=b"k", value=v) for v in values]
    producer.flush()
    for f in futures:
        f.get(timeout=60)


def delta_version(tables_root: str, name: str) -> int:
    """The newest commit of a table, counted from its log's files (commit files 0.json, 1.json, ...)."""
    return len(list((Path(table_path(tables_root, name)) / "_delta_log").glob("*.json"))) - 1


def seed_slice(folder: Path) -> tuple[Path, set[tuple[str, str]]]:
    """The seed's first 300 users with a click, one interaction per pair (as test_quality_gate: a quick fit with
    enough signal to beat popularity), and its (user, job) pairs."""
    path = folder / "slice.csv"
    with (SEED_DIR / "job_clicks.csv").open(newline="") as src, path.open("w", newline="") as dst:
        rows = [r for r in csv.DictReader(src) if int(r["userId"]) <= 300 and r["Clicks"] != "0"]
        w = csv.writer(dst)
        w.writerow(["userId", "jobId", "Clicks"])
        w.writerows((r["userId"], r["jobId"], 1) for r in rows)
    return path, {(r["userId"], r["jobId"]) for r in rows}


def test_status_reads_back_a_known_pipeline(spark, broker, tmp_path, request) -> None:
    # topics of its own, the jobs topic too: other tests send job events to the default one
    name = unique_name(request)
    config_path = write_config(tmp_path, broker.bootstrap, name, kafka={"jobs_topic": f"{name}-jobs"})
    cfg = load_config(config_path, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)
    root, bootstrap = cfg.storage.tables_root, cfg.kafka.bootstrap_servers
    # 30 distinct valid clicks, 5 of them sent twice (a producer's retries: the ingest keeps one of each)
    valid = [click(f"s-{i}", i % 6, i % 7) for i in range(30)]
    repeats = valid[:5]
    malformed = [
        (b"not json", "invalid_json"),
        (b'{"event_id": ', "invalid_json"),
        (b"", "empty_record"),
        (json.dumps(without(click("m-1", 1, 1), "user_id")).encode(), "missing_field"),
        (json.dumps(without(click("m-2", 1, 1), "occurred_at")).encode(), "missing_field"),
        (json.dumps({**click("m-3", 1, 1), "event_type": "purchase"}).encode(), "unknown_event_type"),
    ]
    producer = make_producer(cfg)
    send(producer, cfg.kafka.clicks_topic, [json.dumps(e).encode() for e in valid + repeats])
    send(producer, cfg.kafka.clicks_topic, [raw for raw, _ in malformed])
    ingest_once(spark, ingest_settings(cfg, bootstrap))
    # 7 more that no ingest has read: the lag
    late = [click(f"late-{i}", 1, i) for i in range(7)]
    send(producer, cfg.kafka.clicks_topic, [json.dumps(e).encode() for e in late])
    producer.close()

    slice_csv, seed_pairs = seed_slice(tmp_path)
    load_counts_csv(spark, str(slice_csv), CsvLayout(), root, "click", cfg.ingest.weights)
    gate = GateSettings(enabled=True, k=10, validation_share=0.2, eval_users=5000, tolerance=0.01, seed=42, refit=False)
    good, passed = gated_retrain(spark, root, als_params(cfg), gate, 1)
    assert passed.publish, passed.reason
    # one factor, one sweep, heavy regularisation: rejected (below popularity or the serving model)
    bad, failed = gated_retrain(spark, root, replace(als_params(cfg), rank=1, max_iter=1, reg_param=50.0), gate, 1)
    assert not failed.publish, failed.reason

    status = read_status(spark, cfg, bootstrap)
    print(format_status(status))

    assert status["kafka"] == {
        "bootstrap": bootstrap,
        "configured": True,
        "reachable": True,
        "error": None,
        "brokers": 1,
    }
    sent_before = len(valid) + len(repeats) + len(malformed)
    clicks = status["topics"]["clicks"]
    assert clicks["topic"] == cfg.kafka.clicks_topic and clicks["exists"] is True
    assert (clicks["partitions"], clicks["end_offset"], clicks["records"]) == (3, sent_before + 7, sent_before + 7)
    assert clicks["ingest"]["offset"] == sent_before and clicks["ingest"]["committed"] is True
    assert (clicks["lag"], clicks["lag_note"]) == (7, None)
    # the job-events query was not started: its topic exists, empty, with no checkpoint
    jobs = status["topics"]["jobs"]
    assert (jobs["partitions"], jobs["end_offset"], jobs["lag"], jobs["lag_note"]) == (1, 0, None, "no checkpoint yet")
    assert jobs["ingest"]["batch"] is None
    recs = status["topics"]["recommendations"]
    assert (recs["partitions"], recs["end_offset"], recs["ingest"], recs["lag_note"]) == (
        3,
        0,
        None,
        "not read by the ingest",
    )

    synthetic_pairs = {(e["user_id"], e["job_id"]) for e in valid}
    present = {
        t.EVENTS: len({e["event_id"] for e in valid}),
        t.DEAD_LETTERS: len(malformed),
        t.INTERACTIONS: len(synthetic_pairs | seed_pairs),
        t.USER_FACTORS: good.n_users,  # only the published model's factors are written
        t.JOB_FACTORS: good.n_jobs,
        t.MODELS: 2,
    }
    expected_tables = {
        name: {"present": True, "rows": rows, "version": delta_version(root, name)} for name, rows in present.items()
    }
    expected_tables |= {
        name: {"present": False, "rows": None, "version": None}
        for name in (t.RECOMMENDATIONS, t.JOBS, t.ONLINE_EVALUATION)
    }
    # the ingest's fold counted every events version into interactions
    expected_tables[t.INTERACTIONS]["events_folded_through"] = delta_version(root, t.EVENTS)
    assert status["tables"] == expected_tables
    assert status["dead_letters"] == dict(Counter(code for _, code in malformed))

    models = status["models"]
    assert models["counts"] == {t.STATUS_PUBLISHED: 1, t.STATUS_REJECTED: 1}
    serving = models["serving"]
    assert serving["version"] == good.model_version and serving["status"] == t.STATUS_PUBLISHED
    assert (serving["n_users"], serving["n_jobs"], serving["n_interactions"]) == (
        good.n_users,
        good.n_jobs,
        good.n_interactions,
    )
    assert serving["validation"]["ndcg"] == good.metrics["validation"]["ndcg"]
    assert serving["popularity"]["ndcg"] == good.metrics["popularity"]["ndcg"]
    assert serving["gate_reason"] == passed.reason and serving["k"] == 10
    assert serving["data_version"] == delta_version(root, t.INTERACTIONS)
    rejected = models["latest_rejected"]
    assert rejected["version"] == bad.model_version and rejected["status"] == t.STATUS_REJECTED
    assert rejected["gate_reason"] == failed.reason and "NDCG@10" in rejected["gate_reason"]
    assert rejected["params"]["rank"] == 1

    # the first thing off is the clicks not yet ingested
    assert status["healthy"] is False
    assert status["next_step"].startswith(f"the ingest is 7 records behind on {cfg.kafka.clicks_topic}")
    assert format_status(status).splitlines()[-1].startswith("Next: the ingest is 7 records behind")

    # the command's own entry point, with a SparkSession of its own in a process of its own, says the same
    script = (
        "import json, sys\n"
        "from jobrec.schemas.config import load_config\n"
        "from jobrec.streaming.status import collect_status\n"
        "print(json.dumps(collect_status(load_config(sys.argv[1], env={}), sys.argv[2])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(config_path), bootstrap],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    own = json.loads(done.stdout.strip().splitlines()[-1])
    assert {**own, "generated_at": None} == json.loads(json.dumps({**status, "generated_at": None}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_is_an_answer_within_seconds(spark, tmp_path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    cfg = load_config(write_config(tmp_path, bootstrap, "status-down"), env={})
    started = time.monotonic()
    status = read_status(spark, cfg, bootstrap, timeout_seconds=3)
    took = time.monotonic() - started
    print(format_status(status))
    assert took < 6, took
    assert status["kafka"]["reachable"] is False and bootstrap in status["kafka"]["error"]
    assert all(e["partitions"] is None and e["exists"] is None for e in status["topics"].values())
    assert status["topics"]["clicks"]["lag_note"] == "Kafka unreachable"
    assert not any(e["present"] for e in status["tables"].values())  # nothing there, and nothing created
    assert not Path(cfg.storage.tables_root).exists()
    assert status["models"] == {"counts": {}, "serving": None, "latest_rejected": None}
    assert status["next_step"] == f"Kafka unreachable at {bootstrap}: check kafka.bootstrap_servers and the brokers"


def test_silent_broker_is_an_answer_within_the_timeout(tmp_path) -> None:
    # a socket that accepts connections (the kernel's backlog) and never answers a byte
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        bootstrap = f"127.0.0.1:{server.getsockname()[1]}"
        cfg = load_config(write_config(tmp_path, bootstrap, "status-silent"), env={})
        started = time.monotonic()
        answer = probe_kafka(cfg.kafka, bootstrap, [cfg.kafka.clicks_topic], timeout_seconds=2)
        took = time.monotonic() - started
    assert answer["reachable"] is False and answer["error"], answer
    assert took < 2.5, took


def test_no_broker_configured_or_running(spark, tmp_path) -> None:
    cfg = load_config(write_config(tmp_path, "", "status-none"), env={})
    status = read_status(spark, cfg, None)
    assert status["kafka"]["bootstrap"] is None and status["kafka"]["reachable"] is False
    assert "jobrec kafka start" in status["kafka"]["error"]
    assert status["next_step"].startswith("no Kafka broker configured or running")
