"""Every command answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    "",
    "kafka",
    "spark-cluster",
    "ingest",
    "speed",
    "api",
    "offline",
    "evaluate",
    "load",
    "retrain",
    "publish",
    "show",
    "status",
    "demo",
    "bench",
    "jobs",
    "jobs load",
    "jobs post",
    "jobs close",
    "jobs show",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str) -> None:
    args = [sys.executable, "-m", "jobrec.streaming.cli", *command.split(), "--help"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: jobrec" in done.stdout
