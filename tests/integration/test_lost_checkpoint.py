"""A lost or stale ingest checkpoint on the real broker, Spark and Delta: refused at start with a message that says
what happened and how to recover, and the documented recovery (`jobrec ingest --recover-checkpoint`) gives exact
counts afterwards: nothing lost, nothing counted twice.

Expected counts are computed here from the events the test sent.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobrec.batch.connections import python_client_args
from jobrec.batch.delta_tables import table_path
from jobrec.schemas import tables as t
from jobrec.streaming.checkpoint_guard import IDENTITY_FILE, CheckpointMismatch
from jobrec.streaming.ingest import ingest_once, start_ingest
from jobrec.streaming.processes import ingest_settings, recover_ingest_checkpoint
from tests.integration.conftest import make_producer
from tests.integration.test_ingest import expected_counts, interactions_by_type, send, valid_events


def table_count(spark, cfg, name: str) -> int:
    return spark.read.format("delta").load(table_path(cfg.storage.tables_root, name)).count()


def test_a_lost_checkpoint_is_refused_and_the_recovery_gives_exact_counts(spark, pipeline) -> None:
    cfg, config_path = pipeline
    rng = random.Random(7)
    producer = make_producer(cfg)

    def post(events: list[dict], malformed: int = 0) -> None:
        records = [(e["user_id"].encode(), json.dumps(e).encode()) for e in events]
        records += [(b"bad", b"{not json %d" % i) for i in range(malformed)]
        send(producer, cfg.kafka.clicks_topic, records)

    settings = ingest_settings(cfg, cfg.kafka.bootstrap_servers)
    first = valid_events(120, rng, "first")
    post(first, malformed=3)
    ingest_once(spark, settings)
    checkpoint = Path(settings.checkpoint)
    assert (checkpoint / IDENTITY_FILE).is_file()
    backup = checkpoint.with_name("ingest-backup")
    shutil.copytree(checkpoint, backup)

    # more clicks, ingested; then the old copy of the checkpoint is put back: stale, refused
    second = valid_events(60, rng, "second")
    post(second)
    ingest_once(spark, settings)
    shutil.rmtree(checkpoint)
    shutil.copytree(backup, checkpoint)
    with pytest.raises(CheckpointMismatch, match="older than the tables"):
        start_ingest(spark, settings, once=True)

    # the checkpoint lost altogether: refused, as the operator sees it from the command line (exit 1, one line)
    shutil.rmtree(checkpoint)
    run = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config_path), "ingest", "--once"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("jobrec: the ingest checkpoint at") and "--recover-checkpoint" in last, last
    # nothing was read or written by the refused starts
    assert table_count(spark, cfg, t.EVENTS) == len(first) + len(second)
    assert table_count(spark, cfg, t.DEAD_LETTERS) == 3
    assert not (checkpoint / "offsets").exists()

    # the documented recovery, then clicks that arrive after it, and a normal restart after that
    third = valid_events(80, rng, "third")
    post(third, malformed=2)
    recovered = recover_ingest_checkpoint(spark, settings, python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers))
    assert recovered.identity and recovered.identity != settings.app_id
    ingest_once(spark, recovered)
    fourth = valid_events(40, rng, "fourth")
    post(fourth)
    ingest_once(spark, settings)  # a plain restart: the identity file says who
    producer.close()

    everything = first + second + third + fourth
    assert table_count(spark, cfg, t.EVENTS) == len(everything)
    assert table_count(spark, cfg, t.DEAD_LETTERS) == 5
    assert interactions_by_type(spark, cfg.storage.tables_root) == expected_counts(everything)
    # a second recovery is refused while the recovered checkpoint is there
    with pytest.raises(CheckpointMismatch, match="move it aside"):
        recover_ingest_checkpoint(spark, settings, python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers))
