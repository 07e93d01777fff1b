"""Config: the defaults load; an unknown key, a missing key or a wrong type fails naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from schemas.config import DEFAULT_CONFIG_PATH, ConfigError, expand_env, load_config, merge, parse_config


def defaults() -> dict:
    return expand_env(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()), {})


def test_default_file_loads_with_documented_values() -> None:
    cfg = load_config(env={})
    assert cfg.publish.top_n == 10
    assert cfg.kafka.bootstrap_servers == ""  # empty means the embedded broker
    assert set(cfg.ingest.weights) == {"view", "click", "save", "apply"}


def test_every_key_in_default_yaml_has_a_comment() -> None:
    lines = DEFAULT_CONFIG_PATH.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # comments, blank lines and section headers
        assert lines[i - 1].strip().startswith("#"), f"no comment above: {line}"


@pytest.mark.parametrize(
    "override,message",
    [
        ({"kafka": {"bootstrap": "x:9092"}}, "kafka.bootstrap: unknown key"),
        ({"publish": {"top_n": "ten"}}, "publish.top_n: expected an integer"),
        ({"als": {"alpha": True}}, "als.alpha: expected a number"),
        ({"ingest": {"weights": {"purchase": 1}}}, "ingest.weights: needs exactly the keys"),
        ({"spark": "local"}, "spark: expected a mapping"),
        ({"retrain": {"interval_seconds": None}}, "retrain.interval_seconds: expected a number, got null"),
        ({"nonsense": 1}, "nonsense: unknown key"),
        ({"publish": {"top_n": 0}}, "publish.top_n: must be between 1 and 1000"),
    ],
)
def test_bad_config_names_the_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(merge(defaults(), override))
    assert message in str(e.value)


def test_missing_key_is_named() -> None:
    data = defaults()
    del data["storage"]["checkpoints_root"]
    with pytest.raises(ConfigError, match="storage.checkpoints_root: missing key"):
        parse_config(data)


def test_environment_variables_are_expanded() -> None:
    cfg = load_config(env={"JOBREC_KAFKA_BOOTSTRAP": "broker-1:9092,broker-2:9092", "JOBREC_KAFKA_PASSWORD": "s3"})
    assert cfg.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert cfg.kafka.security.password == "s3"
    with pytest.raises(ConfigError, match=r"a\.b: environment variable NOPE is not set"):
        expand_env({"a": {"b": "${NOPE}"}}, {})


def test_override_file_changes_only_what_it_names(tmp_path: Path) -> None:
    f = tmp_path / "local.yaml"
    f.write_text("publish:\n  top_n: 25\n")
    cfg = load_config(f, env={})
    assert cfg.publish.top_n == 25 and cfg.als.rank == load_config(env={}).als.rank


def test_cli_fails_at_start_naming_the_wrong_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("ingest:\n  max_offset_per_trigger: 10\n")
    done = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "--config", str(f), "kafka", "status"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "ingest.max_offset_per_trigger: unknown key" in done.stderr
