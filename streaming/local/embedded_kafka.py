"""A real single-node Kafka broker (KRaft, broker and controller in one JVM) for local runs and tests.

It runs the `org.apache.kafka:kafka_2.13` jars that `make setup` resolved from Maven Central, bound to
127.0.0.1 on free ports. Its state (pid, ports) lives in a JSON file in its folder, so `start` after `stop`
reuses the same ports and data and a stream that was reading from it reconnects. Anyone with a real cluster
sets kafka.bootstrap_servers instead and never starts this.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jobrec.schemas.config import EmbeddedKafkaConfig, KafkaConfig

log = logging.getLogger(__name__)

STATE_FILE = "broker.json"

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.server.name = org.apache.kafka.server
logger.server.level = INFO
"""


@dataclass(frozen=True)
class ScramUser:
    """A SASL/SCRAM user created when the broker's storage is formatted."""

    name: str
    password: str
    mechanism: str = "SCRAM-SHA-512"


@dataclass(frozen=True)
class BrokerState:
    pid: int
    port: int
    controller_port: int
    sasl_port: int | None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else None


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own dead child) still answers kill(0); look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def read_state(cfg: EmbeddedKafkaConfig) -> BrokerState | None:
    path = Path(cfg.dir) / STATE_FILE
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    return BrokerState(d["pid"], d["port"], d["controller_port"], d.get("sasl_port"))


def _write_state(cfg: EmbeddedKafkaConfig, state: BrokerState) -> None:
    path = Path(cfg.dir) / STATE_FILE
    path.write_text(json.dumps(state.__dict__))


def running_broker(cfg: EmbeddedKafkaConfig) -> BrokerState | None:
    """The broker's state if its process is alive, else None."""
    state = read_state(cfg)
    if state and state.pid > 0 and pid_alive(state.pid):
        return state
    return None


def _server_properties(root: Path, state: BrokerState, scram: bool) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{state.port}", f"CONTROLLER://127.0.0.1:{state.controller_port}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{state.port}"]
    protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{state.controller_port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={root / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # small segments so that log compaction of the recommendations topic has something to do locally
        "log.cleaner.min.compaction.lag.ms=0",
    ]
    if scram and state.sasl_port:
        listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{state.sasl_port}")
        advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{state.sasl_port}")
        protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        lines += [
            "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
    lines += [
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
        f"listener.security.protocol.map={','.join(protocol_map)}",
    ]
    return "\n".join(lines) + "\n"


def _java(cfg: EmbeddedKafkaConfig, root: Path, *args: str) -> list[str]:
    jars = Path(cfg.jars_dir).resolve()
    if not any(jars.glob("kafka_2.13-*.jar")):
        raise BrokerError(
            f"no Kafka jars in {jars} (embedded_kafka.jars_dir): in a checkout `make setup` resolves them there from "
            "Maven Central"
        )
    return [
        os.environ.get("JAVA", "java"),
        f"-Xms{min(256, cfg.heap_mb)}m",
        f"-Xmx{cfg.heap_mb}m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={root / 'logs'}",
        "-cp",
        f"{jars}/*",
        *args,
    ]


def _cluster_id() -> str:
    """A 22-character URL-safe base64 UUID, as `StorageTool random-uuid` makes; never starting with '-', which
    the tool's argument parser would take for an option (one id in 64 would fail the format)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def start_broker(cfg: EmbeddedKafkaConfig, scram_users: tuple[ScramUser, ...] = ()) -> BrokerState:
    """Start the broker unless it runs already; wait until it answers. Returns its state."""
    live = running_broker(cfg)
    if live:
        log.info("Kafka broker already running (pid %d) at %s", live.pid, live.bootstrap)
        return live
    root = Path(cfg.dir).resolve()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    old = read_state(cfg)
    # reuse the ports of an earlier run over the same data: clients that knew the broker reconnect
    if old and not port_open(old.port) and not port_open(old.controller_port):
        state = BrokerState(0, old.port, old.controller_port, old.sasl_port if scram_users else None)
    else:
        state = BrokerState(0, free_port(), free_port(), free_port() if scram_users else None)
    props = root / "server.properties"
    props.write_text(_server_properties(root, state, bool(scram_users)))
    (root / "log4j2.properties").write_text(_LOG4J2.format(log_file=root / "logs" / "server.log"))

    if not (root / "data" / "meta.properties").exists():
        cmd = ["kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)]
        for u in scram_users:
            cmd += ["--add-scram", f"{u.mechanism}=[name={u.name},password={u.password}]"]
        done = subprocess.run(_java(cfg, root, *cmd), capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"formatting the Kafka log dir failed: {done.stderr.strip() or done.stdout.strip()}")

    out = open(root / "logs" / "stdout.log", "ab")
    proc = subprocess.Popen(
        _java(cfg, root, "kafka.Kafka", str(props)),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # the broker outlives the command that started it, and ^C in it
    )
    state = BrokerState(proc.pid, state.port, state.controller_port, state.sasl_port)
    _write_state(cfg, state)
    deadline = time.monotonic() + cfg.start_timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"the Kafka broker exited with {proc.returncode}; see {root / 'logs'}")
        if port_open(state.port) and _broker_answers(state.bootstrap):
            log.info("Kafka broker started (pid %d) at %s", proc.pid, state.bootstrap)
            return state
        time.sleep(0.5)
    stop_broker(cfg)
    raise BrokerError(f"the Kafka broker did not answer within {cfg.start_timeout_seconds} s; see {root / 'logs'}")


def _broker_answers(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def stop_broker(cfg: EmbeddedKafkaConfig, timeout_seconds: float = 60.0) -> bool:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after the timeout). False if it was not running."""
    state = running_broker(cfg)
    if not state:
        return False
    stop_pid(state.pid, "Kafka broker", timeout_seconds)
    _write_state(cfg, BrokerState(0, state.port, state.controller_port, state.sasl_port))
    log.info("Kafka broker stopped")
    return True


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_pid(pid: int, name: str, timeout_seconds: float) -> None:
    """Stop a server this project started (the broker, a Spark daemon, the object store): SIGTERM, then SIGKILL
    after the timeout, saying so; our own child is reaped, so it leaves no zombie."""
    if pid <= 0 or not pid_alive(pid):
        reap(pid)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and pid_alive(pid):
        reap(pid)
        time.sleep(0.1)
    if pid_alive(pid):
        log.warning("the %s did not stop within %.0f s; killing it", name, timeout_seconds)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    reap(pid)


class KafkaNotConfigured(RuntimeError):
    """No broker address in the config and no embedded broker running."""


def resolve_bootstrap(kafka: KafkaConfig, embedded: EmbeddedKafkaConfig) -> str:
    """kafka.bootstrap_servers; only when that is empty (local use), the embedded broker's address.

    Production configs name their brokers, so the local broker's state file is never consulted there.
    """
    if kafka.bootstrap_servers:
        return kafka.bootstrap_servers
    state = running_broker(embedded)
    if not state:
        raise KafkaNotConfigured(
            "kafka.bootstrap_servers is empty and no embedded broker runs: start one with `jobrec kafka start` "
            "or set kafka.bootstrap_servers"
        )
    return state.bootstrap


def start_local_kafka(kafka: KafkaConfig, embedded: EmbeddedKafkaConfig) -> BrokerState:
    """`jobrec kafka start`: the embedded broker (or the one already running) with the pipeline's topics."""
    from jobrec.batch.connections import ensure_topics

    state = start_broker(embedded)
    ensure_topics(kafka, state.bootstrap)
    return state
