"""A real Spark standalone cluster on this machine (one master, one worker, executors in their own JVMs) for tests
and for operators trying cluster mode before they have a cluster.

The master and the worker are two JVMs started from pyspark's own jars with its `spark-class` script (no Spark
download), bound to 127.0.0.1 on free ports; the worker offers a limited number of cores and memory to executors,
which it starts as further JVMs. Their state (pids, ports) lives in a JSON file in the cluster's folder, beside
`logs/` (the master's and worker's output) and `work/` (one folder per application with each executor's stdout,
stderr and fetched jars). A pipeline runs on it with `spark.master: spark://127.0.0.1:PORT` and, as production
ships jars, `spark.jars_dir: local://` + the jar folder. Anyone with a real cluster sets spark.master instead.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from jobrec.streaming.local.embedded_kafka import free_port, pid_alive, port_open, stop_pid

log = logging.getLogger(__name__)

STATE_FILE = "cluster.json"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClusterState:
    master_pid: int
    worker_pid: int
    port: int
    ui_port: int
    worker_port: int
    worker_ui_port: int
    cores: int
    memory: str

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def worker_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_ui_port}"


def spark_home() -> Path:
    """The pyspark package folder: its `bin/spark-class` and `jars/` are a Spark distribution's."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def read_state(folder: Path) -> ClusterState | None:
    path = folder / STATE_FILE
    return ClusterState(**json.loads(path.read_text())) if path.exists() else None


def running_cluster(folder: Path) -> ClusterState | None:
    """The cluster's state if its master and worker processes are alive, else None."""
    state = read_state(folder)
    if state and state.master_pid > 0 and pid_alive(state.master_pid) and pid_alive(state.worker_pid):
        return state
    return None


def fetch_json(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """A Spark web UI's JSON page (the master's or worker's `/json/`)."""
    with urllib.request.urlopen(f"{url}/json/", timeout=timeout) as response:
        return dict(json.loads(response.read()))


def master_json(state: ClusterState) -> dict[str, Any]:
    """The master's view: workers, applications running and completed (id, name, cores, state)."""
    return fetch_json(state.ui_url)


def worker_json(state: ClusterState) -> dict[str, Any]:
    """The worker's view: its executors, running and finished, with their application ids."""
    return fetch_json(state.worker_ui_url)


def _worker_registered(state: ClusterState) -> bool:
    try:
        workers = master_json(state).get("workers", [])
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return any(w.get("port") == state.worker_port and w.get("state") == "ALIVE" for w in workers)


def _launch(folder: Path, name: str, args: list[str], daemon_memory: str) -> subprocess.Popen[bytes]:
    home = spark_home()
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(home),
        # every socket of the daemons and of the executors they start on loopback only
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOCAL_HOSTNAME="127.0.0.1",
        SPARK_DAEMON_MEMORY=daemon_memory,
        # the REST submission server listens on a fixed port (6066) by default: two clusters would collide
        SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false",
        SPARK_LOG_DIR=str(folder / "logs"),
    )
    # spark-class execs the JVM in the end: the process started here is the master's or worker's JVM
    with open(folder / "logs" / f"{name}.log", "ab") as out:
        return subprocess.Popen(
            [str(home / "bin" / "spark-class"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=folder,
            start_new_session=True,  # the cluster outlives the command that started it, and ^C in it
        )


def start_cluster(
    folder: Path,
    cores: int = 2,
    memory: str = "2g",
    daemon_memory: str = "512m",
    timeout_seconds: float = 120.0,
) -> ClusterState:
    """Start a master and one worker offering `cores` and `memory` to executors, unless they run already; wait
    until the worker has registered with the master. Returns the cluster's state."""
    folder = folder.resolve()
    live = running_cluster(folder)
    if live:
        log.info("Spark cluster already running at %s", live.master_url)
        return live
    stop_cluster(folder)  # half of one (a worker whose master died) is stopped first
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "work").mkdir(exist_ok=True)
    old = read_state(folder)
    # the ports of an earlier run, when free: configs naming that master URL keep working
    if old and not any(port_open(p) for p in (old.port, old.ui_port, old.worker_port, old.worker_ui_port)):
        ports = (old.port, old.ui_port, old.worker_port, old.worker_ui_port)
    else:
        ports = (free_port(), free_port(), free_port(), free_port())
    port, ui_port, worker_port, worker_ui_port = ports
    master = _launch(
        folder,
        "master",
        [MASTER_CLASS, "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)],
        daemon_memory,
    )
    state = ClusterState(master.pid, 0, port, ui_port, worker_port, worker_ui_port, cores, memory)
    _write_state(folder, state)
    worker = _launch(
        folder,
        "worker",
        [
            WORKER_CLASS,
            *("--host", "127.0.0.1", "--port", str(worker_port), "--webui-port", str(worker_ui_port)),
            *("--cores", str(cores), "--memory", memory, "--work-dir", str(folder / "work")),
            state.master_url,
        ],
        daemon_memory,
    )
    state = ClusterState(master.pid, worker.pid, port, ui_port, worker_port, worker_ui_port, cores, memory)
    _write_state(folder, state)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        for name, proc in (("master", master), ("worker", worker)):
            if proc.poll() is not None:
                stop_cluster(folder)
                raise ClusterError(f"the Spark {name} exited with {proc.returncode}; see {folder / 'logs' / name}.log")
        if _worker_registered(state):
            log.info("Spark cluster started at %s (master %d, worker %d)", state.master_url, master.pid, worker.pid)
            return state
        time.sleep(0.5)
    stop_cluster(folder)
    raise ClusterError(
        f"the Spark worker did not register with the master within {timeout_seconds:.0f} s; see {folder / 'logs'}"
    )


def _write_state(folder: Path, state: ClusterState) -> None:
    (folder / STATE_FILE).write_text(json.dumps(asdict(state)))


def _stop_process(pid: int, name: str, timeout_seconds: float) -> None:
    stop_pid(pid, f"Spark {name}", timeout_seconds)


def stop_cluster(folder: Path, timeout_seconds: float = 30.0) -> bool:
    """Stop the worker (which stops its executors) and then the master: SIGTERM, SIGKILL after the timeout.
    False if neither was running."""
    folder = folder.resolve()
    state = read_state(folder)
    if not state or not any(pid > 0 and pid_alive(pid) for pid in (state.master_pid, state.worker_pid)):
        return False
    _stop_process(state.worker_pid, "worker", timeout_seconds)
    _stop_process(state.master_pid, "master", timeout_seconds)
    _write_state(folder, replace(state, master_pid=0, worker_pid=0))
    log.info("Spark cluster stopped")
    return True
