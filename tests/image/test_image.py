"""The production image runs: the CLI, Spark's executor role reaching a real driver, and `jobrec demo` end to end.

Each command goes through the image's own ENTRYPOINT (tini and deploy/docker/entrypoint.sh), as in a pod, inside a
working container of the image built by deploy/image/build_image.sh; the container shares the host's network, so the
Spark driver and the Kafka broker the tests start on 127.0.0.1 are reachable from it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer

from jobrec.schemas.config import EmbeddedKafkaConfig, load_config
from jobrec.streaming.local.embedded_kafka import free_port, start_broker, stop_broker

from .conftest import Container

REPO = Path(__file__).resolve().parents[2]
SEED_DIR = REPO.parent / "shared" / "data" / "seed"
IMAGE_PYTHON = "/opt/jobrec/venv/bin/python"

# the host's jar cache that `make setup` fills (the broker's jars), following JOBREC_CACHE_DIR as the Makefile does
KAFKA_JARS = load_config(env={k: v for k, v in os.environ.items() if k == "JOBREC_CACHE_DIR"}).embedded_kafka.jars_dir


def test_cli_help_is_the_default_command_and_runs_as_non_root(container: Container) -> None:
    # no arguments: the image's CMD (--help) through the entrypoint, as `docker run jobrec` does
    assert container.cmd == ["--help"]
    shown = container.run(container.cmd, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: jobrec")
    assert "demo" in shown.stdout and "ingest" in shown.stdout

    # an argument that is not a Spark role goes to jobrec: a wrong one is jobrec's own error, exit 2
    wrong = container.run(["no-such-command"], timeout=120)
    assert wrong.returncode == 2 and "invalid choice: 'no-such-command'" in wrong.stderr

    facts = subprocess.run(
        ["buildah", "run", "--isolation", "chroot", container.name, "--", "sh", "-c",
         'id -u; "$JAVA_HOME/bin/java" -version 2>&1 | head -1; ldconfig -p | grep -c -E "lib(blas|lapack).so.3 "'],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    uid, java, native_libs = facts.stdout.splitlines()
    assert uid == "10001"
    assert java.startswith('openjdk version "17.')
    # Spark's ALS finds OpenBLAS through these two names (libblas.so.3, liblapack.so.3)
    assert native_libs == "2"


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process meant to listen on {port} exited with {process.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# A Spark driver on the host whose only executor is the image's: a standalone master with no worker accepts the
# application, so every task runs on an executor that registered by itself. It prints its application id, runs one
# Python job, and prints what the tasks saw.
DRIVER = """
import json, sys
from pyspark.sql import SparkSession

master, port = sys.argv[1], sys.argv[2]
spark = (
    SparkSession.builder.master(master).appName("jobrec-image-executor")
    .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.driver.port", port).config("spark.ui.enabled", "false")
    .config("spark.cores.max", "1").config("spark.executor.memory", "512m")
    .getOrCreate()
)
sc = spark.sparkContext
print(json.dumps({"app_id": sc.applicationId}), flush=True)

def where(x):
    import os, sys
    return x * x, sys.executable, os.path.exists("/opt/jobrec/entrypoint.sh")

rows = sc.parallelize(range(100), 4).map(where).collect()
print(json.dumps({
    "sum": sum(r[0] for r in rows),
    "pythons": sorted({r[1] for r in rows}),
    "in_image": all(r[2] for r in rows),
}), flush=True)
spark.stop()
"""


def test_executor_role_registers_with_a_driver_and_runs_its_tasks(container: Container, tmp_path: Path) -> None:
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    master_port, driver_port = free_port(), free_port()
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOG_DIR": str(tmp_path), "SPARK_NO_DAEMONIZE": "1"}
    master_log = (tmp_path / "master.log").open("wb")
    master = subprocess.Popen(
        [str(spark_home / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(master_port), "--webui-port", str(free_port())],
        stdout=master_log, stderr=subprocess.STDOUT, env={**env, "SPARK_DAEMON_MEMORY": "256m"},
    )  # fmt: skip
    driver = executor = None
    executor_log_path = tmp_path / "executor.log"
    try:
        _wait_for_port(master_port, master, timeout=90)
        (tmp_path / "driver.py").write_text(DRIVER)
        # the Python the executor starts for its tasks is the driver's PYSPARK_PYTHON: the image's
        driver = subprocess.Popen(
            [sys.executable, str(tmp_path / "driver.py"), f"spark://127.0.0.1:{master_port}", str(driver_port)],
            stdout=subprocess.PIPE, stderr=(tmp_path / "driver.log").open("wb"), text=True,
            env={**env, "PYSPARK_PYTHON": IMAGE_PYTHON},
        )  # fmt: skip
        assert driver.stdout is not None
        app_id = json.loads(driver.stdout.readline() or "{}").get("app_id")
        assert app_id, f"the driver did not start: {(tmp_path / 'driver.log').read_text()[-3000:]}"

        # what Spark on Kubernetes sets on an executor pod (BasicExecutorFeatureStep), here for this driver
        executor_env = {
            "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{driver_port}",
            "SPARK_EXECUTOR_ID": "1",
            "SPARK_EXECUTOR_CORES": "1",
            "SPARK_EXECUTOR_MEMORY": "512m",
            "SPARK_APPLICATION_ID": app_id,
            "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
            "SPARK_EXECUTOR_POD_NAME": "jobrec-exec-1",
            "SPARK_RESOURCE_PROFILE_ID": "0",
            "SPARK_JAVA_OPT_0": "-Dspark.driver.port=" + str(driver_port),
        }
        with executor_log_path.open("wb") as executor_log:
            executor = subprocess.Popen(
                container.command(["executor"], env=executor_env),
                stdout=executor_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        # the driver's result, unless the executor ends first (it failed) or nothing comes within the timeout
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(driver.stdout.readline()), daemon=True).start()
        deadline = time.monotonic() + 300
        result_line = ""
        while not result_line and executor.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                result_line = lines.get(timeout=1)
        executor_log = executor_log_path.read_text(errors="replace")
        assert result_line, f"the job did not finish (executor exit {executor.poll()}):\n{executor_log[-4000:]}"
        driver.wait(timeout=120)
        result = json.loads(result_line)
        # 0² + 1² + ... + 99² = 99·100·199/6
        assert result["sum"] == 328350
        # every task ran in the image, in its virtualenv's Python, started by its executor
        assert result["pythons"] == [IMAGE_PYTHON] and result["in_image"] is True
        # the driver's stop ends the executor, as it ends an executor pod
        executor.wait(timeout=120)
        executor_log = executor_log_path.read_text(errors="replace")
        assert "Driver commanded a shutdown" in executor_log
        assert "KubernetesExecutorBackend" in executor_log
        assert "Successfully registered with driver" in executor_log
    finally:
        for process in (driver, executor, master):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)
        master_log.close()


def _printed_lists(output: str) -> dict[str, list[tuple[int, str, float]]]:
    """user -> [(rank, job, score)] of the lists `jobrec demo` prints at its step 6."""
    step6 = output.split("== 6/7", 1)[1].split("== 7/7", 1)[0]
    lists: dict[str, list[tuple[int, str, float]]] = {}
    user = None
    for line in step6.splitlines():
        if m := re.match(r"user (\S+)\s+\(model", line):
            user = m.group(1)
            lists[user] = []
        elif (m := re.match(r"\s+(\d+)\. job (\S+)\s.*score (-?[\d.]+)$", line)) and user is not None:
            lists[user].append((int(m.group(1)), m.group(2), float(m.group(3))))
    return lists


def _topic_lists(bootstrap: str, topic: str) -> dict[str, dict]:
    """The newest message per key on the recommendations topic, read on the host with a plain consumer."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )  # fmt: skip
    try:
        return {m.key.decode(): json.loads(m.value) for m in consumer if m.value is not None}
    finally:
        consumer.close()


def test_demo_runs_end_to_end_in_the_image_against_a_broker_on_the_host(container: Container, tmp_path: Path) -> None:
    broker_cfg = EmbeddedKafkaConfig(
        dir=str(tmp_path / "kafka"), jars_dir=KAFKA_JARS, heap_mb=512, start_timeout_seconds=120
    )
    broker = start_broker(broker_cfg)
    try:
        name = f"img-{uuid.uuid4().hex[:6]}"
        recs_topic = f"{name}-recs"
        config = {
            "kafka": {
                "bootstrap_servers": broker.bootstrap,
                "clicks_topic": f"{name}-clicks",
                "recommendations_topic": recs_topic,
                "jobs_topic": f"{name}-jobs",
                "clicks_partitions": 2,
            },
            # tables and checkpoints in the image's data folder (JOBREC_DATA_DIR), the jars the image carries
            "spark": {"shuffle_partitions": 2, "driver_memory": "2g", "log_level": "ERROR"},
            "retrain": {"tune_budget_seconds": 5},
        }
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        started = time.monotonic()
        demo = container.run(
            ["--config", "/config/config.yaml", "demo", "--seed-dir", "/seed", "--live-events", "500"],
            timeout=900,
            volumes=[f"{tmp_path / 'config'}:/config:ro", f"{SEED_DIR}:/seed:ro"],
        )
        print(f"jobrec demo in the image: {time.monotonic() - started:.0f} s")
        assert demo.returncode == 0, f"{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"

        printed = _printed_lists(demo.stdout)
        with (SEED_DIR / "jobs.csv").open(newline="") as f:
            jobs = {row["jobID"] for row in csv.DictReader(f)}
        clicked: dict[str, set[str]] = {}
        with (SEED_DIR / "job_clicks.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                if row["Clicks"] != "0":
                    clicked.setdefault(row["userId"], set()).add(row["jobId"])
        for user in ("1", "15", "73"):
            items = printed.get(user)
            assert items, f"no list printed for user {user}:\n{demo.stdout[-3000:]}"
            assert [rank for rank, _, _ in items] == list(range(1, len(items) + 1))
            scores = [score for _, _, score in items]
            assert scores == sorted(scores, reverse=True)
            listed = [job for _, job, _ in items]
            assert len(set(listed)) == len(listed) and set(listed) <= jobs
            # never a job the seed already shows the user clicking
            assert not set(listed) & clicked[user], user

        # the lists reached the broker on the host: read back there, independently of the image's code
        on_topic = _topic_lists(broker.bootstrap, recs_topic)
        assert {"1", "15", "73"} <= on_topic.keys()
        assert len(on_topic) > 100
        for user in ("1", "15", "73"):
            assert {item["job_id"] for item in on_topic[user]["items"]} <= jobs
    finally:
        stop_broker(broker_cfg)


@pytest.mark.parametrize("role", ["executor"])
def test_spark_role_without_its_environment_says_what_is_missing(container: Container, role: str) -> None:
    missing = container.run([role], timeout=120)
    assert missing.returncode == 2
    assert "SPARK_DRIVER_URL is not set" in missing.stderr


def test_driver_role_is_spark_submit_in_client_mode(container: Container) -> None:
    # a cluster-mode driver pod (or the Spark Operator) runs `driver ARGS`: spark-submit from the image's pyspark
    # SPARK_DRIVER_BIND_ADDRESS: what Spark sets on a driver pod (its IP)
    shown = container.run(["driver", "--version"], timeout=180, env={"SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1"})
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert re.search(r"version 4\.2\.0", shown.stdout + shown.stderr)


def test_spark_in_the_image_loads_native_blas_and_lapack(container: Container) -> None:
    # the classes netlib picks for Spark's ALS: JNIBLAS/JNILAPACK only when OpenBLAS loads, else the Java fallbacks
    probe = (
        "from pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.master('local[1]').config('spark.ui.enabled', 'false').getOrCreate()\n"
        "print(s._jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName())\n"
        "print(s._jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName())\n"
        "s.stop()\n"
    )
    shown = subprocess.run(
        ["buildah", "run", "--isolation", "chroot", "--env", "SPARK_LOCAL_IP=127.0.0.1", container.name, "--",
         "python", "-c", probe],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.split() == ["dev.ludovic.netlib.blas.JNIBLAS", "dev.ludovic.netlib.lapack.JNILAPACK"]
