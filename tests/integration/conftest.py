"""Fixtures for integration tests: a real Kafka broker (the project's embedded KRaft broker), a real local
SparkSession with Delta, and a fresh config (own topics, own table folders) per test."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from jobrec.batch.connections import build_spark_session, ensure_topics, python_client_args
from jobrec.schemas.config import Config, EmbeddedKafkaConfig, load_config
from jobrec.streaming.local.embedded_kafka import BrokerState, free_port, start_broker, stop_broker

REPO = Path(__file__).resolve().parents[2]
SEED_DIR = REPO.parent / "shared" / "data" / "seed"

# the jar cache that `make setup` fills: the default config's, which follows JOBREC_CACHE_DIR as the Makefile does
_DEFAULTS = load_config(env={k: v for k, v in os.environ.items() if k == "JOBREC_CACHE_DIR"})
KAFKA_JARS = _DEFAULTS.embedded_kafka.jars_dir
SPARK_JARS = _DEFAULTS.spark.jars_dir


def broker_config(folder: Path) -> EmbeddedKafkaConfig:
    return EmbeddedKafkaConfig(dir=str(folder), jars_dir=KAFKA_JARS, heap_mb=512, start_timeout_seconds=120)


def write_config(folder: Path, bootstrap: str, name: str, **sections: dict[str, Any]) -> Path:
    """A config file for one test: its own topics, tables and checkpoints; `sections` override more."""
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "clicks_topic": f"{name}-clicks",
            "recommendations_topic": f"{name}-recs",
            "clicks_partitions": 3,
        },
        "storage": {"tables_root": str(folder / "tables"), "checkpoints_root": str(folder / "checkpoints")},
        "spark": {
            "jars_dir": SPARK_JARS,
            "checkpoint_dir": str(folder / "spark-checkpoints"),
            "shuffle_partitions": 2,
            "driver_memory": "3g",
            "log_level": "ERROR",
        },
        "ingest": {"restart_backoff_seconds": 2, "fold_seconds": 2},
        # the first retrain of a test's fresh tables searches its parameters: a short search keeps the suite quick
        "retrain": {"tune_budget_seconds": 5},
        # the session broker serves every test: each test's speed layer in its own group
        "fold_in": {"consumer_group": f"{name}-speed"},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerState]:
    cfg = broker_config(tmp_path_factory.mktemp("kafka"))
    state = start_broker(cfg)
    yield state
    stop_broker(cfg)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("spark")
    session = build_spark_session(load_config(write_config(folder, "unused:9092", "spark"), env={}), "jobrec-tests")
    yield session
    session.stop()


def unique_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]


@pytest.fixture
def pipeline(tmp_path: Path, broker: BrokerState, request: pytest.FixtureRequest) -> tuple[Config, Path]:
    """(config, its file) for one test against the session broker, with its topics created."""
    path = write_config(tmp_path, broker.bootstrap, unique_name(request))
    cfg = load_config(path, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)
    return cfg, path


def make_producer(cfg: Config):
    from kafka import KafkaProducer

    return KafkaProducer(**python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers), acks="all", linger_ms=5)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app served by uvicorn in a thread on 127.0.0.1 and a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def running_speed_layer(cfg: Config, bootstrap: str | None = None, stats: Any = None) -> Iterator[threading.Thread]:
    """The speed layer (`run_speed`) in a thread of the test's process, started and ready to answer clicks;
    stopped and joined on leaving. Yields the thread, so a test can see that it still runs."""
    from jobrec.streaming.processes import run_speed

    stop, ready = threading.Event(), threading.Event()
    kwargs: dict[str, Any] = {"on_ready": ready.set}
    if stats is not None:
        kwargs["stats"] = stats
    worker = threading.Thread(
        target=run_speed,
        args=(cfg, bootstrap or cfg.kafka.bootstrap_servers, stop.is_set),
        kwargs=kwargs,
        daemon=True,
    )
    worker.start()
    try:
        assert ready.wait(180), "the speed layer did not start"
        yield worker
    finally:
        stop.set()
        worker.join(60)


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian's, installed by deploy/local/install_prometheus.sh) on 127.0.0.1 and a
    free port; yields its base URL. Tests read what was pushed from its /metrics."""
    import subprocess
    import urllib.request

    subprocess.run([str(REPO / "deploy" / "local" / "install_prometheus.sh")], check=True)
    folder = tmp_path_factory.mktemp("pushgateway")
    port = free_port()
    log = (folder / "pushgateway.log").open("w")
    process = subprocess.Popen(
        ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (folder / "pushgateway.log").read_text()
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the pushgateway did not get ready"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def pushed_samples(base: str, job: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the pushgateway holds for `job`: (sample name, its labels but job and instance, sorted) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "instance")))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("job") == job
    }
