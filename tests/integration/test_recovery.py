"""Crash and outage recovery, with the ingest running as its own process (`jobrec ingest`), as in production.

- SIGKILL of the whole ingest process (Python driver and Spark JVM) in the middle of ingest, then a restart:
  every click counted exactly once.
- The broker stopped and started again under a running ingest: it recovers on its own, counts exact.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobrec.batch.connections import ensure_topics
from jobrec.batch.delta_tables import table_path
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from jobrec.streaming.local.embedded_kafka import start_broker, stop_broker
from tests.integration.conftest import REPO, broker_config, make_producer, unique_name, write_config
from tests.integration.test_ingest import expected_counts, interactions_by_type, send, valid_events


def start_ingest_process(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), "ingest", *extra],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes the Spark JVM with it
    )


def events_in_table(spark, tables_root: str) -> int:
    path = table_path(tables_root, t.EVENTS)
    try:
        return spark.read.format("delta").load(path).count()
    except Exception:  # noqa: BLE001 - the table does not exist before the first batch
        return 0


def clicks_in_interactions(spark, tables_root: str) -> int:
    """All counts in interactions added up."""
    try:
        return sum(interactions_by_type(spark, tables_root).values())
    except Exception:  # noqa: BLE001 - the table does not exist before the first batch
        return 0


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"ingest exited with {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:] if log else ''}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_sigkill_mid_ingest_then_restart_counts_exactly_once(spark, broker, tmp_path, request) -> None:
    # small micro-batches, so that the kill lands while the ingest is part way through; a fold into interactions
    # at every turn of the ingest's loop, so that it may land in one of those too
    config = write_config(
        tmp_path, broker.bootstrap, unique_name(request), ingest={"max_offsets_per_trigger": 250, "fold_seconds": 0}
    )
    cfg = load_config(config, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)
    events = valid_events(3000, random.Random(3), "k")
    events += random.Random(4).sample(events, 300)  # repeats
    producer = make_producer(cfg)
    send(producer, cfg.kafka.clicks_topic, [(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
    producer.close()

    log = tmp_path / "ingest.log"
    proc = start_ingest_process(config, log)
    try:
        wait_for(lambda: events_in_table(spark, cfg.storage.tables_root) > 0, 300, "a first batch", proc, log)
        # while it runs, no second writer of its tables starts: another ingest, a backfill, a jobs load
        (tmp_path / "counts.csv").write_text("user,job,count\nu1,j1,2\n")
        (tmp_path / "jobs.csv").write_text("jobID,job_category\nj1,Sales\n")
        for second in (
            ["ingest", "--once"],
            ["load", str(tmp_path / "counts.csv")],
            ["jobs", "load", str(tmp_path / "jobs.csv")],
        ):
            refused = subprocess.run(
                [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), *second],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert refused.returncode == 1, (second, refused.stdout[-2000:], refused.stderr[-2000:])
            # it names the running ingest (its pid: the process the test started) and why
            assert f"`jobrec ingest`, pid {proc.pid} on" in refused.stderr, (second, refused.stderr[-2000:])
            assert "another process writes the ingest's tables" in refused.stderr, (second, refused.stderr[-2000:])
        time.sleep(random.Random().uniform(0.5, 3.0))  # somewhere inside a later micro-batch
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        stop_process(proc)
    at_kill = events_in_table(spark, cfg.storage.tables_root)
    assert 0 < at_kill < 3000, f"the kill did not land mid-ingest ({at_kill} events were in)"
    # the second writers changed nothing: no backfilled pair, no job
    assert (
        spark.read.format("delta")
        .load(table_path(cfg.storage.tables_root, t.INTERACTIONS))
        .where("user_id = 'u1'")
        .isEmpty()
    )

    done = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), "ingest", "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert interactions_by_type(spark, cfg.storage.tables_root) == expected_counts(events)
    assert events_in_table(spark, cfg.storage.tables_root) == 3000


def test_broker_restart_under_a_running_stream(spark, tmp_path, request) -> None:
    # a broker of its own: this test stops it
    kafka = broker_config(tmp_path / "kafka")
    state = start_broker(kafka)
    proc = None
    try:
        config = write_config(tmp_path / "pipeline", state.bootstrap, unique_name(request))
        cfg = load_config(config, env={})
        ensure_topics(cfg.kafka, state.bootstrap)
        rng = random.Random(5)
        before, after = valid_events(500, rng, "before"), valid_events(500, rng, "after")
        producer = make_producer(cfg)
        send(producer, cfg.kafka.clicks_topic, [(None, json.dumps(e).encode()) for e in before])
        producer.close()

        log = tmp_path / "ingest.log"
        proc = start_ingest_process(config, log)
        wait_for(lambda: clicks_in_interactions(spark, cfg.storage.tables_root) == 500, 300, "the first 500", proc, log)

        stop_broker(kafka)
        time.sleep(10)  # the stream polls a broker that is gone
        restarted = start_broker(kafka)
        assert restarted.bootstrap == state.bootstrap  # same address: clients reconnect

        producer = make_producer(cfg)
        send(producer, cfg.kafka.clicks_topic, [(None, json.dumps(e).encode()) for e in after])
        producer.close()
        # interactions are folded from events a little later: wait for both tables before stopping the ingest
        wait_for(
            lambda: (
                clicks_in_interactions(spark, cfg.storage.tables_root) >= 1000
                and events_in_table(spark, cfg.storage.tables_root) >= 1000
            ),
            400,
            "the 500 sent after",
            proc,
            log,
        )
        assert proc.poll() is None, "the ingest process should have recovered, not exited"
    finally:
        if proc is not None:
            stop_process(proc)
        stop_broker(kafka)
    assert interactions_by_type(spark, cfg.storage.tables_root) == expected_counts(before + after)
    assert events_in_table(spark, cfg.storage.tables_root) == 1000
