"""SASL/SCRAM against the real local broker with SCRAM users: the pipeline (admin, producer, Spark's Kafka
source) authenticates, and wrong credentials fail at start with an error that says so."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace

import pytest

from jobrec.batch.connections import KafkaConnectError, ensure_topics, python_client_args
from jobrec.schemas.config import load_config
from jobrec.streaming.ingest import ingest_once
from jobrec.streaming.local.embedded_kafka import ScramUser, start_broker, stop_broker
from jobrec.streaming.processes import ingest_settings
from tests.integration.conftest import REPO, broker_config, unique_name, write_config
from tests.integration.test_ingest import expected_counts, interactions_by_type, send, valid_events


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory):
    kafka = broker_config(tmp_path_factory.mktemp("scram-kafka"))
    state = start_broker(kafka, (ScramUser("pipeline", "s3cret-pw"),))
    yield state
    stop_broker(kafka)


def sasl_config(tmp_path, state, request, password: str):
    path = write_config(
        tmp_path,
        state.sasl_bootstrap,
        unique_name(request),
        kafka={
            "security": {
                "protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "username": "pipeline",
                "password": "${TEST_KAFKA_PASSWORD}",
            }
        },
    )
    return path, load_config(path, env={"TEST_KAFKA_PASSWORD": password})


def test_pipeline_ingests_over_sasl_scram(spark, scram_broker, tmp_path, request) -> None:
    _, cfg = sasl_config(tmp_path, scram_broker, request, "s3cret-pw")
    ensure_topics(cfg.kafka, cfg.kafka.bootstrap_servers)
    from kafka import KafkaProducer

    events = valid_events(40, random.Random(9), "sasl")
    producer = KafkaProducer(**python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers), acks="all")
    send(producer, cfg.kafka.clicks_topic, [(None, json.dumps(e).encode()) for e in events])
    producer.close()
    ingest_once(spark, ingest_settings(cfg, cfg.kafka.bootstrap_servers))
    assert interactions_by_type(spark, cfg.storage.tables_root) == expected_counts(events)


def test_wrong_password_is_refused_with_a_clear_error(scram_broker, tmp_path, request) -> None:
    _, cfg = sasl_config(tmp_path, scram_broker, request, "not-the-password")
    with pytest.raises(
        KafkaConnectError,
        match=r"refused the credentials of user 'pipeline' \(SASL_PLAINTEXT, "
        r"SCRAM-SHA-512\)",
    ):
        ensure_topics(cfg.kafka, cfg.kafka.bootstrap_servers)
    # and a PLAINTEXT client pointed at the SASL listener is not let in either
    plain = replace(cfg.kafka, security=replace(cfg.kafka.security, protocol="PLAINTEXT"))
    with pytest.raises(KafkaConnectError):
        ensure_topics(plain, cfg.kafka.bootstrap_servers)


def test_cli_fails_at_start_on_wrong_credentials(scram_broker, tmp_path, request) -> None:
    path, _ = sasl_config(tmp_path, scram_broker, request, "nope")
    done = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(path), "ingest", "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TEST_KAFKA_PASSWORD": "nope", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "refused the credentials of user 'pipeline'" in done.stderr


def test_debug_logs_never_print_the_password(scram_broker, tmp_path, request) -> None:
    # kafka-python logs its client config (the SASL password in it) at DEBUG; every line must come out redacted
    path, _ = sasl_config(tmp_path, scram_broker, request, "s3cret-pw")
    done = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(path), "--log-level", "DEBUG"]
        + ["jobs", "close", "job-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TEST_KAFKA_PASSWORD": "s3cret-pw", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 close event(s) acknowledged" in done.stdout
    assert "s3cret-pw" not in done.stdout + done.stderr
    # the password was about to be printed and was replaced: the test would see a leak
    assert "sasl_plain_password': '***'" in done.stderr
