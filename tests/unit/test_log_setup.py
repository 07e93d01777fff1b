"""No secret in any log line at any level: messages, arguments, tracebacks, JAAS-escaped forms."""

from __future__ import annotations

import io
import logging

import pytest

from jobrec.schemas.config import load_config
from jobrec.streaming.log_setup import REDACTED, config_secrets, setup_logging

PASSWORD = 'pa"ss-w0rd'  # a quote: Kafka's JAAS config carries it escaped


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    formatter = setup_logging("DEBUG")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    cfg = load_config(env={"JOBREC_KAFKA_PASSWORD": PASSWORD})
    secrets = config_secrets(cfg) + ["t0ken-of-the-api"]
    formatter.set_secrets(secrets)
    yield stream
    logging.getLogger().handlers.clear()


def test_secrets_never_reach_a_log_line(captured: io.StringIO) -> None:
    kafka_log = logging.getLogger("kafka.conn")
    kafka_log.debug("client config: %s", {"sasl_plain_password": PASSWORD, "security_protocol": "SASL_SSL"})
    kafka_log.debug('jaas: password="%s";', PASSWORD.replace('"', '\\"'))
    logging.getLogger("jobrec").info("token t0ken-of-the-api in a message")
    try:
        raise RuntimeError(f"could not connect with {PASSWORD}")
    except RuntimeError:
        logging.getLogger("jobrec").exception("failed")
    out = captured.getvalue()
    assert PASSWORD not in out and PASSWORD.replace('"', '\\"') not in out and "t0ken-of-the-api" not in out
    # one each: the config dict's repr, the JAAS form, the API token in a message, the exception in the traceback
    assert out.count(REDACTED) == 4
    assert "client config" in out and "RuntimeError" in out  # the rest of each line is kept


def test_the_secrets_of_a_config(tmp_path) -> None:
    assert config_secrets(load_config(env={})) == []  # the defaults have none
    override = tmp_path / "c.yaml"
    override.write_text(
        "api:\n  token: tok\n"
        "spark:\n  extra:\n    spark.hadoop.fs.s3a.secret.key: s3-secret\n    spark.hadoop.fs.s3a.endpoint: http://s3\n"
    )
    cfg = load_config(override, env={"JOBREC_KAFKA_PASSWORD": "kp"})
    assert sorted(config_secrets(cfg)) == ["kp", "s3-secret", "tok"]
