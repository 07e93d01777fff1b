"""The pipeline config contract: one YAML file, validated at start into frozen, immutable pydantic dataclasses.

The defaults travel inside the package as `config.default.yaml` (of `jobrec.schemas`; `deploy/config/default.yaml`
links to it for operators), every key with its default and a comment. A file given with `--config` overrides only
what differs; `${VAR}` and `${VAR:-default}` read the environment. An unknown key, a missing key, a wrong type or a
value out of range fails at start with a ConfigError whose message starts with the key's dotted path, e.g.
`api.port: must be between 1 and 65535 (got -5)`.

Relative paths (DATA_PATHS) resolve against the data dir: load_config's `data_dir`, else $JOBREC_DATA_DIR, else the
current folder; `~` is the home folder; URIs (`s3a://...`) and empty paths stay as they are. A Config holds absolute
paths, tuples instead of lists and read-only mappings, so it can be shared freely. `dataclasses.replace` validates
again (but resolves no path); `to_data` turns a Config back into plain dicts and lists (for YAML or JSON).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import typing
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails, PydanticCustomError

from jobrec.schemas.click_event import EVENT_TYPES

# the packaged defaults (a Traversable: `.read_text()`), in a checkout, a wheel or the image alike
DEFAULT_CONFIG_PATH = importlib.resources.files("jobrec.schemas").joinpath("config.default.yaml")

# the environment variable naming the folder that relative paths in the config resolve against
DATA_DIR_ENV = "JOBREC_DATA_DIR"

# (section, key) of every path that resolves against the data dir
DATA_PATHS = (
    ("embedded_kafka", "dir"),
    ("embedded_kafka", "jars_dir"),
    ("storage", "tables_root"),
    ("storage", "checkpoints_root"),
    ("spark", "jars_dir"),
    ("spark", "checkpoint_dir"),
)


class ConfigError(ValueError):
    """A config file that cannot be used; the message starts with the key's dotted path."""


# --- value types -------------------------------------------------------------------------------------------------


def _fail(detail: str, key: str = "") -> PydanticCustomError:
    """A validation error with our own wording; `key` extends the error's location (a key below the field)."""
    return PydanticCustomError("jobrec_config", "{detail}", {"detail": detail, "key": key})


def _number_as_text(value: Any) -> Any:
    # YAML reads `username: 123` or `spark.executor.cores: 2` as numbers where a string is meant
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _list_as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _read_only(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


# a string; a YAML number is taken as its text, a bool or null is an error
Text = Annotated[str, BeforeValidator(_number_as_text)]
TextList = Annotated[tuple[Text, ...], BeforeValidator(_list_as_tuple)]
TextMap = Annotated[Mapping[Text, Text], AfterValidator(_read_only)]

_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def _topic_name(value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise _fail(f"{value!r} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)")
    return value


Topic = Annotated[Text, AfterValidator(_topic_name)]

_INTERVAL_PAIR = r"(?:\d+\s+(?:millisecond|second|minute|hour|day|week)s?|\d+\.\d+\s+seconds?)"
_SPARK_INTERVAL = re.compile(rf"\s*(?:interval\s+)?{_INTERVAL_PAIR}(?:\s+{_INTERVAL_PAIR})*\s*", re.IGNORECASE)


def _spark_interval(value: str) -> str:
    # what Spark's withWatermark parses (checked against IntervalUtils.fromIntervalString): "500 ms" and "1.5 hours"
    # are not, months and years are no use here
    if not _SPARK_INTERVAL.fullmatch(value):
        raise _fail(f'{value!r} is not a Spark interval such as "10 minutes" or "1 hour 30 minutes"')
    return value


_JVM_SIZE = re.compile(r"[1-9]\d*(?:[kmgtp]b?|b)?", re.IGNORECASE)


def _jvm_size(value: str) -> str:
    if not _JVM_SIZE.fullmatch(value):
        raise _fail(f"{value!r} is not a JVM memory size such as 512m or 4g")
    return value


SPARK_LOG_LEVELS = ("OFF", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE", "ALL")


def _spark_log_level(value: str) -> str:
    if value.upper() not in SPARK_LOG_LEVELS:
        raise _fail(f"must be one of {', '.join(SPARK_LOG_LEVELS)} (got {value!r})")
    return value.upper()


def _checkpoint_interval(value: int) -> int:
    if value < 1 and value != -1:
        raise _fail(f"must be >= 1, or -1 for no checkpoints (got {value})")
    return value


def _event_weights(value: Mapping[str, float]) -> Mapping[str, float]:
    if set(value) != set(EVENT_TYPES):
        raise _fail(f"needs exactly the keys {', '.join(EVENT_TYPES)} (got {', '.join(map(str, value)) or 'none'})")
    return value


def _section(cls: type) -> BeforeValidator:
    """A YAML mapping becomes the section's dataclass (the classes are strict: they take only their instances)."""

    def build(value: Any) -> Any:
        if isinstance(value, Mapping):
            return cls(**{str(k): v for k, v in value.items()})
        return value

    return BeforeValidator(build)


# strict: no "80" for an int, no 1.5 for an int, no true for a number; a float takes an int
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# --- the sections ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, config=_STRICT)
class KafkaSecurityConfig:
    protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
    sasl_mechanism: Text
    username: Text
    password: Text


@dataclass(frozen=True, config=_STRICT)
class KafkaConfig:
    bootstrap_servers: Text
    clicks_topic: Topic
    recommendations_topic: Topic
    jobs_topic: Topic
    clicks_partitions: Annotated[int, Field(ge=1)]
    replication_factor: Annotated[int, Field(ge=1)]
    security: Annotated[KafkaSecurityConfig, _section(KafkaSecurityConfig)]


@dataclass(frozen=True, config=_STRICT)
class EmbeddedKafkaConfig:
    dir: Text
    jars_dir: Text
    heap_mb: Annotated[int, Field(ge=64)]
    start_timeout_seconds: Annotated[float, Field(gt=0)]


@dataclass(frozen=True, config=_STRICT)
class StorageConfig:
    tables_root: Text
    checkpoints_root: Text


@dataclass(frozen=True, config=_STRICT)
class SparkConfig:
    master: Text
    driver_memory: Annotated[Text, AfterValidator(_jvm_size)]
    shuffle_partitions: Annotated[int, Field(ge=1)]
    jars_dir: Text
    log_level: Annotated[Text, AfterValidator(_spark_log_level)]
    checkpoint_dir: Text
    extra: TextMap


@dataclass(frozen=True, config=_STRICT)
class IngestConfig:
    trigger_seconds: Annotated[float, Field(ge=0, description="0 = the next batch as soon as the last one ends")]
    max_offsets_per_trigger: Annotated[int, Field(ge=1)]
    starting_offsets: Literal["earliest", "latest"]
    dedup_window: Annotated[Text, AfterValidator(_spark_interval)]
    max_record_bytes: Annotated[int, Field(ge=1)]
    max_future_seconds: Annotated[int, Field(ge=0)]
    max_past_days: Annotated[int, Field(ge=1)]
    restart_backoff_seconds: Annotated[float, Field(ge=0)]
    fold_seconds: Annotated[float, Field(ge=0, description="0 = fold after every turn of the ingest's loop")]
    weights: Annotated[
        Mapping[Text, Annotated[float, Field(gt=0)]], AfterValidator(_event_weights), AfterValidator(_read_only)
    ]


@dataclass(frozen=True, config=_STRICT)
class AlsConfig:
    engine: Literal["auto", "implicit", "spark"]
    single_node_max_pairs: Annotated[int, Field(ge=1)]
    rank: Annotated[int, Field(ge=1)]
    max_iter: Annotated[int, Field(ge=1)]
    reg_param: Annotated[float, Field(ge=0)]
    alpha: Annotated[float, Field(ge=0)]
    seed: int
    checkpoint_interval: Annotated[int, AfterValidator(_checkpoint_interval)]
    confidence: Literal["linear", "log", "binary"]
    epsilon: Annotated[float, Field(gt=0)]
    half_life_days: Annotated[float, Field(ge=0, description="0 = no decay")]


@dataclass(frozen=True, config=_STRICT)
class RetrainConfig:
    interval_seconds: Annotated[float, Field(gt=0)]
    min_interactions: Annotated[int, Field(ge=1)]
    tune_every: Annotated[int, Field(ge=0, description="0 = only when the gate rejects")]
    tune_budget_seconds: Annotated[float, Field(gt=0)]
    tune_max_trials: Annotated[int, Field(ge=1)]


@dataclass(frozen=True, config=_STRICT)
class PublishConfig:
    top_n: Annotated[int, Field(ge=1, le=1000)]
    max_per_category: Annotated[int, Field(ge=0, description="0 = no cap")]


@dataclass(frozen=True, config=_STRICT)
class CatalogConfig:
    categories: TextList
    aliases: TextMap
    # at most 100 years: a posting time plus the TTL must stay a representable time (and a TTL beyond that is a typo)
    default_ttl_days: Annotated[float, Field(ge=0, le=36500, description="0 = jobs do not expire")]

    @model_validator(mode="after")
    def _aliases_name_categories(self) -> CatalogConfig:
        canonical = {c.casefold() for c in self.categories}
        for alias, target in self.aliases.items():
            if target.casefold() not in canonical:
                raise _fail(f"maps to {target!r}, which is not in catalog.categories", f"aliases.{alias}")
        return self


@dataclass(frozen=True, config=_STRICT)
class GateConfig:
    enabled: bool
    k: Annotated[int, Field(ge=1)]
    validation_share: Annotated[float, Field(gt=0, lt=1)]
    eval_users: Annotated[int, Field(ge=1)]
    tolerance: Annotated[float, Field(ge=0)]
    seed: int
    refit: bool


@dataclass(frozen=True, config=_STRICT)
class ApiConfig:
    host: Text
    port: Annotated[int, Field(ge=1, le=65535)]
    max_body_bytes: Annotated[int, Field(ge=1)]
    max_batch_events: Annotated[int, Field(ge=1)]
    token: Text
    kafka_timeout_seconds: Annotated[float, Field(gt=0)]
    read_timeout_seconds: Annotated[float, Field(gt=0)]
    ready_timeout_seconds: Annotated[float, Field(gt=0)]
    ready_check_interval_seconds: Annotated[float, Field(gt=0)]


@dataclass(frozen=True, config=_STRICT)
class FoldInConfig:
    model_check_seconds: Annotated[float, Field(gt=0)]
    consumer_group: Annotated[Text, Field(min_length=1, max_length=249)]
    replay_seconds: Annotated[float, Field(ge=0)]
    # Kafka brokers refuse sessions outside group.min/max.session.timeout.ms (6 s to 30 min by default)
    session_timeout_seconds: Annotated[float, Field(ge=6, le=1800)]


@dataclass(frozen=True, config=_STRICT)
class MetricsConfig:
    host: Text
    # 0: no endpoint
    ingest_port: Annotated[int, Field(ge=0, le=65535)]
    speed_port: Annotated[int, Field(ge=0, le=65535)]
    # a Prometheus Pushgateway the retrain pushes its metrics to after each run ("": none)
    pushgateway_url: Annotated[Text, Field(pattern=r"^(https?://[^\s/]+\S*)?$")]


def _event_types(value: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown or not value:
        raise _fail(f"needs one or more of {', '.join(EVENT_TYPES)} (got {', '.join(value) or 'none'})")
    return value


@dataclass(frozen=True, config=_STRICT)
class OnlineEvaluationConfig:
    window_hours: Annotated[float, Field(gt=0)]
    event_types: Annotated[TextList, AfterValidator(_event_types)]
    lateness_minutes: Annotated[float, Field(ge=0)]
    days: Annotated[float, Field(gt=0)]
    bucket_hours: Annotated[float, Field(gt=0)]


@dataclass(frozen=True, config=_STRICT)
class Config:
    kafka: Annotated[KafkaConfig, _section(KafkaConfig)]
    embedded_kafka: Annotated[EmbeddedKafkaConfig, _section(EmbeddedKafkaConfig)]
    storage: Annotated[StorageConfig, _section(StorageConfig)]
    spark: Annotated[SparkConfig, _section(SparkConfig)]
    ingest: Annotated[IngestConfig, _section(IngestConfig)]
    als: Annotated[AlsConfig, _section(AlsConfig)]
    retrain: Annotated[RetrainConfig, _section(RetrainConfig)]
    publish: Annotated[PublishConfig, _section(PublishConfig)]
    gate: Annotated[GateConfig, _section(GateConfig)]
    fold_in: Annotated[FoldInConfig, _section(FoldInConfig)]
    api: Annotated[ApiConfig, _section(ApiConfig)]
    catalog: Annotated[CatalogConfig, _section(CatalogConfig)]
    metrics: Annotated[MetricsConfig, _section(MetricsConfig)]
    online_evaluation: Annotated[OnlineEvaluationConfig, _section(OnlineEvaluationConfig)]


# --- pydantic's errors in our words ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _got(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{_type_name(value)} {text if len(text) <= 60 else text[:57] + '...'}"


def _holder(loc: tuple[int | str, ...]) -> Any:
    """The type declared at `loc` below Config (a section's dataclass, or the field's type); None off the map."""
    cls: Any = Config
    for part in loc:
        fields = getattr(cls, "__pydantic_fields__", None)
        if fields is None or part not in fields:
            return None
        cls = fields[part].annotation
    return cls


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _range(loc: tuple[int | str, ...], value: Any, ctx: dict[str, Any]) -> str:
    """The allowed range of the number at `loc` as its field declares it (both ends), e.g. "must be between 1 and
    65535"; the failed bound alone for a number that is no field (a mapping's value)."""
    info = getattr(_holder(loc[:-1]), "__pydantic_fields__", {}).get(loc[-1])
    bounds = {name: bound for name, bound in ctx.items() if name in _BOUNDS}
    for meta in info.metadata if info is not None else ():
        bounds.update({name: getattr(meta, name) for name in _BOUNDS if getattr(meta, name, None) is not None})
    shown = {name: int(b) if isinstance(b, float) and b.is_integer() else b for name, b in bounds.items()}
    if "ge" in shown and "le" in shown:
        rule = f"must be between {shown['ge']} and {shown['le']}"
    else:
        rule = "must be " + " and ".join(f"{_BOUNDS[name]} {shown[name]}" for name in _BOUNDS if name in shown)
    note = f"; {info.description}" if info is not None and info.description else ""
    return f"{rule} (got {value!r}{note})"


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "mapping_type": "a mapping",
    "dataclass_type": "a mapping",
    "dataclass_exact_type": "a mapping",
}


def _message(error: ErrorDetails) -> str:
    """One pydantic error as `dotted.key: what is wrong`."""
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    kind, value = error["type"], error.get("input")
    if kind == "jobrec_config" and ctx.get("key"):
        loc = loc + tuple(str(ctx["key"]).split("."))
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "config"
    if kind == "jobrec_config":
        what = str(ctx["detail"])
    elif kind == "unexpected_keyword_argument":
        holder = _holder(loc[:-1])
        known = ", ".join(f.name for f in dataclasses.fields(holder)) if dataclasses.is_dataclass(holder) else ""
        what = f"unknown key (known here: {known})"
    elif kind in ("missing", "missing_argument"):
        what = "missing key"
    elif kind in _EXPECTED:
        what = f"expected {_EXPECTED[kind]}, got {_got(value)}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        what = _range(loc, value, ctx)
    elif kind == "literal_error":
        what = f"must be {ctx.get('expected')} (got {value!r})"
    elif kind == "finite_number":
        what = f"must be a finite number (got {value!r})"
    else:
        what = error["msg"]
    return f"{key}: {what}"


# --- reading -----------------------------------------------------------------------------------------------------

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


def resolve_path(value: str, base: str | Path) -> str:
    """`value` made absolute against `base` (`~` expanded); a URI or an empty path is returned as it is."""
    if not value or "://" in value:
        return value
    return os.path.abspath(os.path.join(os.path.expanduser(base), os.path.expanduser(value)))


def data_dir_of(data_dir: str | Path | None = None, env: typing.Mapping[str, str] | None = None) -> str:
    """The folder relative paths resolve against: `data_dir`, else $JOBREC_DATA_DIR in `env`, else the current one."""
    env = os.environ if env is None else env
    chosen = data_dir if data_dir not in (None, "") else env.get(DATA_DIR_ENV) or os.getcwd()
    return os.path.abspath(os.path.expanduser(chosen))


def parse_config(data: Any, data_dir: str | Path | None = None) -> Config:
    """A validated Config from an already merged and env-expanded mapping; its relative paths resolve against
    `data_dir` (default: the current folder)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top, got {_type_name(data)}")
    try:
        cfg = Config(**{str(k): v for k, v in data.items()})
    except ValidationError as e:
        errors = e.errors(include_url=False)
        # a misspelt key also shows as a missing one: the unknown key says more
        errors.sort(key=lambda err: err["type"] != "unexpected_keyword_argument")
        raise ConfigError(_message(errors[0])) from None
    base = data_dir_of(data_dir, env={})
    sections: dict[str, Any] = {}
    for section, key in DATA_PATHS:
        current = sections.get(section, getattr(cfg, section))
        sections[section] = dataclasses.replace(current, **{key: resolve_path(getattr(current, key), base)})
    return dataclasses.replace(cfg, **sections)


def to_data(value: Any) -> Any:
    """A Config (or a section) as plain dicts, lists and scalars: what yaml.safe_dump and json.dumps take, and what
    parse_config reads back into an equal Config."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: to_data(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    return value


def read_yaml(path: Path | Traversable) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top")
    return data


def load_config(
    path: str | Path | None = None, env: typing.Mapping[str, str] | None = None, data_dir: str | Path | None = None
) -> Config:
    """The packaged defaults, overridden by `path` if given, with ${VAR} expanded from `env` (default os.environ);
    relative paths resolve against `data_dir`, else $JOBREC_DATA_DIR in `env`, else the current folder."""
    env = os.environ if env is None else env
    data = read_yaml(DEFAULT_CONFIG_PATH)
    if path is not None:
        data = merge(data, read_yaml(Path(path)))
    return parse_config(expand_env(data, env), data_dir=data_dir_of(data_dir, env))
