"""How the processes log: one line format on stderr, and no secret in any line at any level.

kafka-python logs its whole client config at DEBUG (the SASL password in it), and an exception's text can carry
a connection string; so the redaction runs on the finished line, after the message, its arguments and any
traceback were formatted, not on the message template alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from jobrec.schemas.config import Config

REDACTED = "***"

# spark.extra keys whose values are credentials (spark.hadoop.fs.s3a.secret.key and the like)
_SECRET_KEY = re.compile(r"secret|password|token|credential|access\.?key", re.IGNORECASE)


def config_secrets(cfg: Config) -> list[str]:
    """The secret values of a config: the Kafka password, the API token, credential-like spark.extra values."""
    values = [cfg.kafka.security.password, cfg.api.token]
    values += [v for k, v in cfg.spark.extra.items() if _SECRET_KEY.search(k)]
    return [v for v in values if v]


class RedactingFormatter(logging.Formatter):
    """A Formatter whose every finished line has each secret (and its JSON/JAAS-escaped form) replaced."""

    def __init__(self, fmt: str, datefmt: str | None, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt, datefmt)
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        forms = {form for s in secrets if s for form in (s, s.replace('"', '\\"'), repr(s)[1:-1])}
        # longest first: a secret that contains another is replaced whole
        self._pattern = re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True)))) if forms else None

    def redact(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(level: str) -> RedactingFormatter:
    """Log lines to stderr at `level`; kafka-python's connection chatter only at DEBUG. Returns the formatter,
    to be told the secrets once the config is read (`set_secrets`).

    Spark's JVM logs on stderr too, at spark.log_level; at DEBUG it also shows the warnings Spark prints in normal
    operation: `build_spark_session` asks the `jobrec.jvm` logger, which follows the level set here. Call this
    before the first SparkSession: the JVM reads its logging config when it starts."""
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python narrates every connection attempt at INFO
    logging.getLogger("kafka").setLevel(logging.CRITICAL if level != "DEBUG" else logging.DEBUG)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return formatter
