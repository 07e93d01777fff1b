"""Config: the packaged defaults load; an unknown key, a missing key, a wrong type or a value out of range fails
naming the key; a loaded Config cannot be changed in place; relative paths resolve against the data dir."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobrec.schemas.config import (
    DATA_DIR_ENV,
    DEFAULT_CONFIG_PATH,
    ConfigError,
    expand_env,
    load_config,
    merge,
    parse_config,
    to_data,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGED_DEFAULTS = importlib.resources.files("jobrec.schemas").joinpath("config.default.yaml")


def defaults() -> dict:
    return expand_env(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()), {})


def test_default_file_loads_with_documented_values() -> None:
    cfg = load_config(env={})
    assert cfg.publish.top_n == 10
    assert cfg.kafka.bootstrap_servers == ""  # empty means the embedded broker
    assert set(cfg.ingest.weights) == {"view", "click", "save", "apply"}


def test_the_defaults_ship_in_the_package_and_deploy_links_to_them() -> None:
    assert PACKAGED_DEFAULTS.is_file() and DEFAULT_CONFIG_PATH.read_text() == PACKAGED_DEFAULTS.read_text()
    operators_copy = REPO / "deploy" / "config" / "default.yaml"
    assert operators_copy.is_symlink() and not os.path.isabs(os.readlink(operators_copy))
    assert operators_copy.read_text() == PACKAGED_DEFAULTS.read_text()


def test_every_key_in_default_yaml_has_a_comment() -> None:
    lines = PACKAGED_DEFAULTS.read_text().splitlines()
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


@pytest.mark.parametrize(
    "override,message",
    [
        ({"api": {"port": -5}}, "api.port: must be between 1 and 65535 (got -5)"),
        (
            {"ingest": {"dedup_window": "banana"}},
            "ingest.dedup_window: 'banana' is not a Spark interval such as " + '"10 minutes" or "1 hour 30 minutes"',
        ),
        ({"retrain": {"interval_seconds": -1}}, "retrain.interval_seconds: must be > 0 (got -1)"),
        ({"gate": {"eval_users": -10}}, "gate.eval_users: must be >= 1 (got -10)"),
        ({"kafka": {"replication_factor": 0}}, "kafka.replication_factor: must be >= 1 (got 0)"),
        ({"api": {"port": "80"}}, "api.port: expected an integer, got str '80'"),
        ({"kafka": {"bogus": 1}}, "kafka.bogus: unknown key (known here: bootstrap_servers, clicks_topic, "),
    ],
)
def test_out_of_range_values_fail_with_the_key_and_the_rule(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(merge(defaults(), override))
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("api", "port", 70000),
        ("api", "port", True),
        ("api", "port", 80.0),
        ("api", "max_body_bytes", 0),
        ("api", "max_batch_events", 0),
        ("api", "kafka_timeout_seconds", 0),
        ("api", "host", None),
        ("kafka", "clicks_partitions", 0),
        ("kafka", "clicks_topic", ""),
        ("kafka", "jobs_topic", "job events"),
        ("kafka", "recommendations_topic", "r" * 250),
        ("embedded_kafka", "heap_mb", 32),
        ("embedded_kafka", "start_timeout_seconds", 0),
        ("spark", "shuffle_partitions", 0),
        ("spark", "log_level", "LOUD"),
        ("spark", "driver_memory", "4 GB"),
        ("ingest", "trigger_seconds", -1),
        ("ingest", "max_offsets_per_trigger", 0),
        ("ingest", "max_future_seconds", -1),
        ("ingest", "max_past_days", 0),
        ("ingest", "restart_backoff_seconds", -0.5),
        ("ingest", "fold_seconds", -1),
        ("ingest", "dedup_window", "500 ms"),
        ("ingest", "dedup_window", "1.5 hours"),
        ("ingest", "starting_offsets", "now"),
        ("als", "checkpoint_interval", 0),
        ("als", "rank", 0),
        ("als", "reg_param", float("nan")),
        ("retrain", "min_interactions", 0),
        ("gate", "tolerance", -0.1),
        ("gate", "validation_share", 1.0),
        ("gate", "enabled", "yes"),
        ("catalog", "categories", "IT"),
        ("catalog", "default_ttl_days", 1e9),
        ("fold_in", "model_check_seconds", 0),
        ("fold_in", "session_timeout_seconds", 3),
        ("fold_in", "replay_seconds", -1),
        ("fold_in", "consumer_group", ""),
        ("metrics", "pushgateway_url", "pushgateway:9091"),
        ("metrics", "pushgateway_url", "http:// spaced"),
    ],
)
def test_bad_values_fail_naming_their_key(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(merge(defaults(), {section: {key: value}}))
    assert str(e.value).startswith(f"{section}.{key}: ")


@pytest.mark.parametrize(
    "override,key",
    [
        ({"ingest": {"weights": {"view": 0, "click": 1, "save": 1, "apply": 1}}}, "ingest.weights.view"),
        ({"catalog": {"aliases": {"Fin": "Finanse"}}}, "catalog.aliases.Fin"),
        ({"catalog": {"categories": ["IT", None]}}, "catalog.categories[1]"),
        ({"kafka": {"security": {"protocol": "TLS"}}}, "kafka.security.protocol"),
        ({"kafka": {"security": {"user": "u"}}}, "kafka.security.user"),
        ({"kafka": {"security": {"username": False}}}, "kafka.security.username"),
    ],
)
def test_nested_keys_are_named_in_full(override: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(merge(defaults(), override))
    assert str(e.value).startswith(f"{key}: ")


def test_good_edge_values_pass() -> None:
    cfg = parse_config(
        merge(
            defaults(),
            {
                "ingest": {"dedup_window": "interval 1 HOUR 30 minutes", "trigger_seconds": 0},
                "als": {"checkpoint_interval": -1},  # Spark's "no checkpoints"
                "spark": {"log_level": "info", "driver_memory": "512m"},
                "api": {"port": 65535},
            },
        )
    )
    assert cfg.spark.log_level == "INFO" and cfg.als.checkpoint_interval == -1 and cfg.api.port == 65535
    assert isinstance(cfg.ingest.trigger_seconds, float)  # a float key takes an int


def test_numbers_where_strings_are_meant_become_strings() -> None:
    cfg = parse_config(
        merge(
            defaults(),
            {"kafka": {"security": {"username": 123}}, "spark": {"extra": {"spark.executor.cores": 2}}},
        )
    )
    assert cfg.kafka.security.username == "123"
    assert cfg.spark.extra == {"spark.executor.cores": "2"}


def test_missing_key_is_named() -> None:
    data = defaults()
    del data["storage"]["checkpoints_root"]
    with pytest.raises(ConfigError, match="storage.checkpoints_root: missing key"):
        parse_config(data)


def test_a_loaded_config_cannot_be_changed_in_place() -> None:
    cfg = load_config(env={})
    assert isinstance(cfg.catalog.categories, tuple)
    with pytest.raises(AttributeError):
        cfg.catalog.categories.append("Law")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        cfg.ingest.weights["view"] = 9  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.catalog.aliases["Fiance"] = "Finance"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.spark.extra["spark.executor.cores"] = "2"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.api.port = 1  # type: ignore[misc]


def test_replace_validates_again_and_to_data_round_trips() -> None:
    cfg = load_config(env={})
    other = dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, clicks_topic="other-clicks"))
    assert other.kafka.clicks_topic == "other-clicks" and other.kafka.security == cfg.kafka.security
    with pytest.raises(ValueError, match="port"):
        dataclasses.replace(cfg.api, port=0)
    data = to_data(cfg)
    json.dumps(data)
    assert parse_config(yaml.safe_load(yaml.safe_dump(data))) == cfg


PATH_KEYS = [("embedded_kafka", "dir"), ("storage", "tables_root"), ("storage", "checkpoints_root")]


def test_relative_paths_resolve_against_the_data_dir_then_the_environment_then_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    (tmp_path / "local.yaml").write_text(
        "storage:\n  tables_root: s3a://b/t\n  checkpoints_root: ckpt\nspark:\n  jars_dir: ''\n"
        "  checkpoint_dir: ~/spark-ckpt\nembedded_kafka:\n  dir: /srv/kafka\n"
    )
    env = {DATA_DIR_ENV: str(tmp_path / "from-env")}

    given = load_config("local.yaml", env=env, data_dir=tmp_path / "given")
    assert given.storage.checkpoints_root == str(tmp_path / "given" / "ckpt")
    assert given.storage.tables_root == "s3a://b/t"  # a URI stays as it is
    assert given.spark.jars_dir == ""  # empty: the jars are on the classpath
    assert given.spark.checkpoint_dir == str(Path.home() / "spark-ckpt")
    assert given.embedded_kafka.dir == "/srv/kafka"

    assert load_config("local.yaml", env=env).storage.checkpoints_root == str(tmp_path / "from-env" / "ckpt")
    assert load_config("local.yaml", env={}).storage.checkpoints_root == os.path.join(cwd, "ckpt")

    defaults_in_cwd = load_config(env={})
    for section, key in PATH_KEYS:
        value = getattr(getattr(defaults_in_cwd, section), key)
        assert os.path.isabs(value) and value.startswith(cwd), (section, key, value)


def test_the_cache_dir_drives_the_jar_folders(tmp_path: Path) -> None:
    cfg = load_config(env={"JOBREC_CACHE_DIR": str(tmp_path / "cache")})
    assert cfg.embedded_kafka.jars_dir == str(tmp_path / "cache" / "jars" / "kafka")
    assert cfg.spark.jars_dir == str(tmp_path / "cache" / "jars" / "spark")
    home = load_config(env={}, data_dir=tmp_path)  # the jars are no data: not under the data dir
    assert home.spark.jars_dir == str(Path.home() / ".cache" / "jobrec" / "jars" / "spark")
    assert home.embedded_kafka.jars_dir == str(Path.home() / ".cache" / "jobrec" / "jars" / "kafka")


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
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(f), "kafka", "status"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "ingest.max_offset_per_trigger: unknown key" in done.stderr
