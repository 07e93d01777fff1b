"""The throwaway stack every streaming benchmark runs on: an embedded broker and Delta tables in a temporary
folder, the config pointed at them, all removed afterwards."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from jobrec.batch.connections import ensure_topics
from jobrec.schemas.config import Config
from jobrec.streaming.local.embedded_kafka import BrokerState, start_broker, stop_broker


@dataclass(frozen=True)
class BenchStack:
    cfg: Config  # pointed at the broker and the folder below
    broker: BrokerState
    folder: Path

    def config_file(self) -> Path:
        """`cfg` as a YAML file in the folder, for `jobrec` processes the benchmark starts."""
        path = self.folder / "config.yaml"
        path.write_text(yaml.safe_dump(_plain(self.cfg)))
        return path


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def bench_config(cfg: Config, folder: Path, bootstrap: str) -> Config:
    """`cfg` with its own topics, tables and checkpoints in `folder`, talking plain text to the embedded broker
    (whatever the configured cluster needs)."""
    security = replace(cfg.kafka.security, protocol="PLAINTEXT", username="", password="")
    return replace(
        cfg,
        kafka=replace(
            cfg.kafka,
            bootstrap_servers=bootstrap,
            clicks_topic="bench-clicks",
            recommendations_topic="bench-recs",
            security=security,
        ),
        storage=replace(cfg.storage, tables_root=str(folder / "tables"), checkpoints_root=str(folder / "ckpt")),
        spark=replace(cfg.spark, checkpoint_dir=str(folder / "spark-ckpt")),
    )


@contextmanager
def temporary_stack(cfg: Config, prefix: str) -> Iterator[BenchStack]:
    """A broker in a new temporary folder with the topics created; broker and folder are gone afterwards, also
    when the broker fails to start."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    kafka = replace(cfg.embedded_kafka, dir=str(folder / "kafka"))
    try:
        state = start_broker(kafka)
        stacked = bench_config(cfg, folder, state.bootstrap)
        ensure_topics(stacked.kafka, state.bootstrap)
        yield BenchStack(stacked, state, folder)
    finally:
        stop_broker(kafka)
        shutil.rmtree(folder, ignore_errors=True)
