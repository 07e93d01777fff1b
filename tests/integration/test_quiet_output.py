"""What a user sees from a Spark command: its own output on stdout, and on stderr no JVM warnings that Spark prints
in normal operation (they show again with `--log-level DEBUG`). Run as a user of the built wheel would, so the
JVM's logging config has to travel inside it as package data."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import write_config

# warnings the JVM prints in normal operation (Spark's and Hadoop's; and the Kafka client's for a broker that has
# gone, which a command that closes its clients in time never prints); none may show at the default level. The JVM
# launcher's own "WARNING: Using incubator modules" is not here: Spark's launcher always adds the module and the
# JVM always announces it, before any logging config.
KNOWN_NOISE = re.compile(
    r"Truncated the string representation of a plan|was locally checkpointed|Failed to cancel job group"
    r"|Broadcasting large task binary|Unable to load native-hadoop library|is not supported in streaming DataFrames"
    r"|AQE is not supported in stateful workloads|Connection to node .* could not be established"
)
# a log4j2 line of the JVM, as our config lays it out: time, level, logger
JVM_LINE = re.compile(r"^\d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) (org|io|com|kafka)\.\S+: ")


def run_offline(
    tmp_path: Path, env: dict[str, str], spark_level: str, *log_level: str
) -> subprocess.CompletedProcess[str]:
    """`jobrec offline` on 40 users x 20 jobs (every user clicks 6 jobs), at a Spark log level (spark.log_level)
    and the command's own (--log-level)."""
    folder = tmp_path / f"{spark_level}-{log_level[-1] if log_level else 'default'}".lower()
    folder.mkdir()
    with (folder / "in.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "jobId", "Clicks"])
        for u in range(40):
            for j in range(6):
                w.writerow([u, (u + 3 * j) % 20, 1])
    # the integration tests' configs say ERROR, which would hide what is tested here
    config = write_config(
        folder / "cfg",
        "unused:9092",
        "quiet",
        # the Spark engine: offline on the implicit engine starts no JVM, and the JVM's output is what is tested
        als={"rank": 4, "max_iter": 3, "engine": "spark"},
        spark={"log_level": spark_level},
    )
    command = [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), *log_level, "offline"]
    command += ["--interactions", str(folder / "in.csv"), "--out", str(folder / "out.csv"), "--k", "3"]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if KNOWN_NOISE.search(line)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, installed_elsewhere: dict[str, str]):
    """The command at the packaged defaults (spark.log_level WARN, --log-level INFO), with --log-level DEBUG, and
    with spark.log_level INFO."""
    tmp = tmp_path_factory.mktemp("quiet")
    return (
        run_offline(tmp, installed_elsewhere, "WARN"),
        run_offline(tmp, installed_elsewhere, "WARN", "--log-level", "DEBUG"),
        run_offline(tmp, installed_elsewhere, "INFO"),
    )


def test_default_level_prints_the_result_on_stdout_and_no_known_noise(runs) -> None:
    default, _, _ = runs
    # stdout holds the command's one line, nothing of the JVM
    assert len(default.stdout.splitlines()) == 1 and default.stdout.startswith("top 3 "), default.stdout[-3000:]
    assert noise(default.stdout + default.stderr) == []


def test_debug_level_shows_the_jvm_noise_on_stderr(runs) -> None:
    _, debug, _ = runs
    # the JVM says more (Hadoop's missing native library at least, at every start), on stderr, in our layout
    shown = noise(debug.stderr)
    assert shown, debug.stderr[-3000:]
    assert any(JVM_LINE.match(line) for line in shown), shown
    assert len(debug.stdout.splitlines()) == 1 and debug.stdout.startswith("top 3 "), debug.stdout[-3000:]


def test_spark_log_level_sets_the_jvm_level_and_the_noise_stays_out(runs) -> None:
    _, _, info = runs
    # Spark's INFO lines (its version at start, every job), on stderr; a shell's WARN threshold does not hold them
    jvm_info = [line for line in info.stderr.splitlines() if JVM_LINE.match(line) and " INFO " in line]
    assert any("org.apache.spark.SparkContext: Running Spark version" in line for line in jvm_info), info.stderr[:3000]
    assert "Setting default log level" not in info.stderr
    assert noise(info.stdout + info.stderr) == []
    assert len(info.stdout.splitlines()) == 1 and info.stdout.startswith("top 3 "), info.stdout[-3000:]
