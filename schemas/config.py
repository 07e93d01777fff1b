"""The pipeline config contract: one YAML file, validated at start into frozen dataclasses.

`deploy/config/default.yaml` holds every key with its default and a comment; a file given with `--config`
overrides only what differs. An unknown key, a missing key or a wrong type fails at start with the key's path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from schemas.click_event import EVENT_TYPES

# beside the code in a checkout; JOBREC_DEFAULT_CONFIG where the package is installed elsewhere (the image)
DEFAULT_CONFIG_PATH = Path(
    os.environ.get("JOBREC_DEFAULT_CONFIG", Path(__file__).resolve().parents[1] / "deploy" / "config" / "default.yaml")
)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class KafkaSecurityConfig:
    protocol: str
    sasl_mechanism: str
    username: str
    password: str


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    clicks_topic: str
    recommendations_topic: str
    jobs_topic: str
    clicks_partitions: int
    replication_factor: int
    security: KafkaSecurityConfig


@dataclass(frozen=True)
class EmbeddedKafkaConfig:
    dir: str
    jars_dir: str
    heap_mb: int
    start_timeout_seconds: float


@dataclass(frozen=True)
class StorageConfig:
    tables_root: str
    checkpoints_root: str


@dataclass(frozen=True)
class SparkConfig:
    master: str
    driver_memory: str
    shuffle_partitions: int
    jars_dir: str
    log_level: str
    checkpoint_dir: str
    extra: dict[str, str]


@dataclass(frozen=True)
class IngestConfig:
    trigger_seconds: float
    max_offsets_per_trigger: int
    starting_offsets: str
    dedup_window: str
    max_record_bytes: int
    max_future_seconds: int
    max_past_days: int
    restart_backoff_seconds: float
    weights: dict[str, float]


@dataclass(frozen=True)
class AlsConfig:
    rank: int
    max_iter: int
    reg_param: float
    alpha: float
    seed: int
    checkpoint_interval: int
    confidence: str
    epsilon: float
    half_life_days: float


@dataclass(frozen=True)
class RetrainConfig:
    interval_seconds: float
    min_interactions: int


@dataclass(frozen=True)
class PublishConfig:
    top_n: int
    max_per_category: int


@dataclass(frozen=True)
class CatalogConfig:
    categories: list[str]
    aliases: dict[str, str]
    default_ttl_days: float


@dataclass(frozen=True)
class GateConfig:
    enabled: bool
    k: int
    validation_share: float
    eval_users: int
    tolerance: float
    seed: int
    refit: bool


@dataclass(frozen=True)
class ApiConfig:
    host: str
    port: int
    max_body_bytes: int
    max_batch_events: int
    token: str
    kafka_timeout_seconds: float


@dataclass(frozen=True)
class FoldInConfig:
    model_check_seconds: float


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig
    embedded_kafka: EmbeddedKafkaConfig
    storage: StorageConfig
    spark: SparkConfig
    ingest: IngestConfig
    als: AlsConfig
    retrain: RetrainConfig
    publish: PublishConfig
    gate: GateConfig
    fold_in: FoldInConfig
    api: ApiConfig
    catalog: CatalogConfig


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: typing.Mapping[str, str], path: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; an unset VAR without a default is an error."""
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, path) for v in value]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV_REF.sub(sub, value)
    return value


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in `override` replaces."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "extra":
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _type_name(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _convert(tp: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_type_name(value)}")
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_type_name(value)}")
        return [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_type_name(value)}")
        return {str(k): _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_type_name(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_type_name(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_type_name(value)} {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{path}: expected a string, got {_type_name(value)}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} at {path}")


def _build(cls: Any, data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in hints:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown key (known here: {', '.join(names)})")
    kwargs = {}
    for name in names:
        where = f"{path}.{name}" if path else name
        if name not in data:
            raise ConfigError(f"{where}: missing key")
        kwargs[name] = _convert(hints[name], data[name], where)
    return cls(**kwargs)


def _check_values(cfg: Config) -> None:
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    weights = cfg.ingest.weights
    need(set(weights) == set(EVENT_TYPES), "ingest.weights", f"needs exactly the keys {', '.join(EVENT_TYPES)}")
    for k, w in weights.items():
        need(w > 0, f"ingest.weights.{k}", "must be > 0")
    need(cfg.ingest.starting_offsets in ("earliest", "latest"), "ingest.starting_offsets", "earliest or latest")
    need(cfg.ingest.max_record_bytes > 0, "ingest.max_record_bytes", "must be > 0")
    need(cfg.kafka.clicks_partitions >= 1, "kafka.clicks_partitions", "must be >= 1")
    need(
        cfg.kafka.security.protocol in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"),
        "kafka.security.protocol",
        "PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL",
    )
    need(cfg.als.rank >= 1, "als.rank", "must be >= 1")
    need(cfg.als.max_iter >= 1, "als.max_iter", "must be >= 1")
    need(cfg.als.reg_param >= 0, "als.reg_param", "must be >= 0")
    need(cfg.als.alpha >= 0, "als.alpha", "must be >= 0")
    need(cfg.als.confidence in ("linear", "log"), "als.confidence", "linear or log")
    need(cfg.als.epsilon > 0, "als.epsilon", "must be > 0")
    need(cfg.als.half_life_days >= 0, "als.half_life_days", "must be >= 0 (0: no decay)")
    need(1 <= cfg.publish.top_n <= 1000, "publish.top_n", "must be between 1 and 1000")
    need(0 < cfg.gate.validation_share < 1, "gate.validation_share", "must be between 0 and 1")
    need(cfg.gate.k >= 1, "gate.k", "must be >= 1")
    need(cfg.publish.max_per_category >= 0, "publish.max_per_category", "must be >= 0 (0: no cap)")
    need(cfg.catalog.default_ttl_days >= 0, "catalog.default_ttl_days", "must be >= 0 (0: jobs do not expire)")
    canonical = {c.casefold() for c in cfg.catalog.categories}
    for alias, target in cfg.catalog.aliases.items():
        need(
            target.casefold() in canonical,
            f"catalog.aliases.{alias}",
            f"maps to {target!r}, which is not in catalog.categories",
        )
    need(cfg.fold_in.model_check_seconds > 0, "fold_in.model_check_seconds", "must be > 0")


def parse_config(data: Any) -> Config:
    """A validated Config from an already merged and env-expanded mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top, got {_type_name(data)}")
    cfg: Config = _build(Config, data, "")
    _check_values(cfg)
    return cfg


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top")
    return data


def load_config(path: str | Path | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """The defaults, overridden by `path` if given, with ${VAR} expanded from `env` (default os.environ)."""
    data = read_yaml(DEFAULT_CONFIG_PATH)
    if path is not None:
        data = merge(data, read_yaml(Path(path)))
    return parse_config(expand_env(data, os.environ if env is None else env))
