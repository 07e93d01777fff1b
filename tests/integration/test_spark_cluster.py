"""Ingest, retrain and publish on a real multi-JVM Spark cluster: a standalone master and worker started by
`jobrec.streaming.local.spark_cluster` (separate JVMs from pyspark's own jars), the real broker, real Delta tables.

Each step runs as the operator runs it, `jobrec ingest --once`, `jobrec retrain --no-publish`, `jobrec publish`,
with `spark.master: spark://127.0.0.1:PORT` and the jars as production ships them (`spark.jars_dir` a local://
URI). While each runs, the test watches /proc: the driver JVM is a child of the `jobrec` process, the executors
children of the worker JVM. The expected counts are computed here from the events the test sent.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobrec.batch.connections import ensure_topics, python_client_args
from jobrec.batch.delta_tables import table_path
from jobrec.schemas import tables as t
from jobrec.schemas.config import Config, load_config
from jobrec.schemas.recommendation import NEW_USER_KEY
from jobrec.streaming.local.spark_cluster import ClusterState, master_json, start_cluster, stop_cluster
from jobrec.streaming.producer import encode_event, make_click_event, send_raw
from jobrec.streaming.recommendations_reader import read_latest_lists
from tests.integration.conftest import REPO, SPARK_JARS, make_producer, write_config
from tests.unit.test_click_event import BAD_RECORDS

TOP_N = 5
RANK = 2
# two groups that never click each other's jobs: each user clicks 5 of their group's 12 jobs, so 7 unseen jobs of
# their own group are left. ALS of rank 2 (a factor per group) ranks those above every job of the other group; a
# higher rank on this little data fits each user's own clicks and ranks the rest by noise (rank 8, 5 sweeps, on data
# like this: 31 of 150 listed jobs were from the other group). With 15 users a group and 6 sweeps, one factor
# initialisation in 12 (Spark's ALS, seed 42, the data's seed and block count varied) collapsed both groups onto one
# factor and mixed every list; 30 users a group and 10 sweeps: none of 48
GROUPS = {"a": [f"job-a{i}" for i in range(12)], "b": [f"job-b{i}" for i in range(12)]}
USERS_PER_GROUP = 30
MAX_ITER = 10


@dataclass
class Watched:
    """What one `jobrec` command did, and which processes ran meanwhile."""

    command: str
    returncode: int
    output: str
    seconds: float = 0.0
    driver_tree: set[int] = field(default_factory=set)  # the jobrec process and its descendants
    driver_jvms: set[int] = field(default_factory=set)  # among them, the JVM spark-submit started
    executors: dict[int, tuple[int, str]] = field(default_factory=dict)  # pid -> (parent pid, application id)


def _processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) of every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        # the command name in parentheses may hold spaces: the parent pid is the second field after it
        table[int(entry)] = (int(stat.rpartition(")")[2].split()[1]), cmdline)
    return table


def run_watched(config: Path, log_dir: Path, *args: str) -> Watched:
    """`jobrec --config CONFIG ARGS`, its processes and the cluster's executors polled until it exits."""
    out = (log_dir / f"{args[0]}.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), "--log-level", "WARNING", *args],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    seen = Watched(" ".join(args), -1, "")
    started = time.monotonic()
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        table = _processes()
        tree, grew = {proc.pid}, True
        while grew:
            children = {pid for pid, (ppid, _) in table.items() if ppid in tree} - tree
            tree |= children
            grew = bool(children)
        seen.driver_tree |= tree
        # spark-submit's JVM (not the launcher JVM that spark-class runs first to build its command line)
        seen.driver_jvms |= {
            pid
            for pid in tree
            if table[pid][1][0].endswith("java")
            and "org.apache.spark.deploy.SparkSubmit" in table[pid][1]
            and "org.apache.spark.launcher.Main" not in table[pid][1]
        }
        for pid, (ppid, cmd) in table.items():
            if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmd and "--app-id" in cmd:
                seen.executors[pid] = (ppid, cmd[cmd.index("--app-id") + 1])
        time.sleep(0.25)
    if proc.poll() is None:
        proc.kill()
    seen.returncode = proc.wait()
    seen.seconds = time.monotonic() - started
    out.seek(0)
    seen.output = out.read()
    out.close()
    return seen


def planted_events(rng: random.Random) -> tuple[list[dict], dict[str, set[str]]]:
    """One to three events (of any type) per clicked pair; and user -> the jobs they clicked."""
    events, clicked = [], {}
    for group, jobs in GROUPS.items():
        for i in range(USERS_PER_GROUP):
            user = f"user-{group}{i}"
            clicked[user] = set(rng.sample(jobs, 5))
            for job in sorted(clicked[user]):
                for _ in range(rng.randint(1, 3)):
                    events.append(make_click_event(user, job, rng.choice(["view", "click", "save", "apply"])))
    return events, clicked


@dataclass
class Run:
    cfg: Config
    cluster: ClusterState
    work: Path
    steps: dict[str, Watched]
    events: list[dict]
    clicked: dict[str, set[str]]
    bad_codes: Counter


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("spark-cluster")
    state = start_cluster(folder, cores=2, memory="2g")
    yield folder, state
    stop_cluster(folder)


@pytest.fixture(scope="module")
def run(cluster, broker, tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder, state = cluster
    work = tmp_path_factory.mktemp("cluster-pipeline")
    config = write_config(
        work,
        broker.bootstrap,
        f"cluster-{os.getpid()}",
        spark={
            "master": state.master_url,
            # the jars as the image ships them: a folder present on every node, named by a local:// URI
            "jars_dir": f"local://{SPARK_JARS}",
            "extra": {
                "spark.executor.memory": "1g",
                # the executors log at INFO (the driver stays at ERROR): their stderr shows where each jar came from
                "spark.executor.extraJavaOptions": "-Djobrec.log4j2.level=INFO",
            },
        },
        # Spark's ALS, on the executors; configured params, no gate: the gate and the search are tested elsewhere
        als={"engine": "spark", "rank": RANK, "max_iter": MAX_ITER},
        gate={"enabled": False},
        publish={"top_n": TOP_N, "max_per_category": 0},
    )
    cfg = load_config(config, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)

    rng = random.Random(14)
    events, clicked = planted_events(rng)
    repeats = rng.sample(events, 30)  # a producer retrying: same event_id, same bytes, dropped on ingest
    bad = [(raw, code) for label, raw, code in BAD_RECORDS if label != "oversized record"]
    records = [(e["user_id"].encode(), encode_event(e)) for e in events + repeats] + [(b"bad", r) for r, _ in bad]
    rng.shuffle(records)
    producer = make_producer(cfg)
    send_raw(producer, cfg.kafka.clicks_topic, records)
    producer.close()

    steps = {}
    for args in (("ingest", "--once"), ("retrain", "--no-publish"), ("publish",)):
        step = run_watched(config, work, *args)
        assert step.returncode == 0, f"jobrec {step.command} exited {step.returncode}:\n{step.output[-3000:]}"
        steps[args[0]] = step
        print(f"jobrec {step.command} on the cluster: {step.seconds:.1f} s")
    return Run(cfg, state, folder / "work", steps, events, clicked, Counter(code for _, code in bad))


def test_ingest_writes_exactly_the_events_sent(spark, run: Run) -> None:
    tables = run.cfg.storage.tables_root
    events = spark.read.format("delta").load(table_path(tables, t.EVENTS))
    assert events.count() == len(run.events)
    assert {r[t.EVENT_ID] for r in events.select(t.EVENT_ID).collect()} == {e["event_id"] for e in run.events}

    dead = spark.read.format("delta").load(table_path(tables, t.DEAD_LETTERS)).collect()
    assert Counter(r[t.REASON_CODE] for r in dead) == run.bad_codes

    # strength per pair: the config's weight of each event's type, summed over distinct events
    expected: Counter = Counter()
    for e in run.events:
        expected[(e["user_id"], e["job_id"])] += run.cfg.ingest.weights[e["event_type"]]
    got = {
        (r[t.USER_ID], r[t.JOB_ID]): r[t.STRENGTH]
        for r in spark.read.format("delta").load(table_path(tables, t.INTERACTIONS)).collect()
    }
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) < 1e-9 for k in got)


def test_retrain_records_one_model_of_every_user_and_job(spark, run: Run) -> None:
    tables = run.cfg.storage.tables_root
    models = spark.read.format("delta").load(table_path(tables, t.MODELS)).collect()
    assert len(models) == 1 and models[0][t.STATUS] == t.STATUS_PUBLISHED
    model = models[0]
    n_pairs = sum(len(jobs) for jobs in run.clicked.values())
    n_jobs = len({job for jobs in run.clicked.values() for job in jobs})
    assert (model[t.N_USERS], model[t.N_JOBS], model[t.N_INTERACTIONS]) == (len(run.clicked), n_jobs, n_pairs)
    assert json.loads(model[t.PARAMS])["rank"] == RANK
    users = spark.read.format("delta").load(table_path(tables, t.USER_FACTORS))
    jobs = spark.read.format("delta").load(table_path(tables, t.JOB_FACTORS))
    assert {r[t.USER_ID] for r in users.collect()} == set(run.clicked)
    assert jobs.count() == n_jobs and users.count() == len(run.clicked)
    assert all(len(r[t.FEATURES]) == RANK for r in users.collect())


def test_publish_sends_every_user_a_list_of_unseen_jobs_of_their_group(spark, run: Run) -> None:
    lists = read_latest_lists(
        python_client_args(run.cfg.kafka, run.cfg.kafka.bootstrap_servers), run.cfg.kafka.recommendations_topic
    )
    assert set(lists) == set(run.clicked) | {NEW_USER_KEY}
    for user, clicked in run.clicked.items():
        jobs = [item["job_id"] for item in lists[user]["items"]]
        unseen_of_group = set(GROUPS[user[len("user-")]]) - clicked
        assert len(jobs) == TOP_N and set(jobs) <= unseen_of_group, (user, jobs)
    table = spark.read.format("delta").load(table_path(run.cfg.storage.tables_root, t.RECOMMENDATIONS))
    assert table.count() == len(run.clicked) + 1


def _app_ids(run: Run) -> dict[str, str]:
    """step -> the id of its Spark application, by the name the master recorded (jobrec-ingest, ...)."""
    apps = {app["name"]: app for app in master_json(run.cluster)["completedapps"]}
    return {step: apps[f"jobrec-{step}"]["id"] for step in run.steps}


def test_executors_run_in_worker_jvms_not_in_the_driver(run: Run) -> None:
    for step, app_id in _app_ids(run).items():
        watched = run.steps[step]
        assert watched.driver_jvms, f"{step}: no driver JVM seen under the jobrec process"
        # an executor JVM's child caught between fork and exec (starting a Python worker) still shows the JVM's
        # command line for a moment: a process whose parent is an executor is not another executor
        executors = {
            pid: ppid
            for pid, (ppid, app) in watched.executors.items()
            if app == app_id and ppid not in watched.executors
        }
        assert executors, f"{step}: no executor of {app_id} seen"
        # started by the worker JVM, and no process of the driver's
        assert set(executors.values()) == {run.cluster.worker_pid}, (step, executors)
        assert not set(executors) & watched.driver_tree
        print(
            f"{step}: driver JVM {sorted(watched.driver_jvms)} under jobrec {min(watched.driver_tree)}, executors "
            f"{sorted(executors)} of {app_id} under the worker {run.cluster.worker_pid}"
        )
        # and they did the work: the executor's log counts its finished tasks
        stderr = "".join(p.read_text() for p in (run.work / app_id).glob("*/stderr"))
        assert len(re.findall(r"Finished task ", stderr)) > 0, f"{step}: its executors finished no task"


def test_executors_read_the_jars_from_local_uris_not_from_the_driver(run: Run) -> None:
    jars = {p.name for p in Path(SPARK_JARS).glob("*.jar")}
    for step, app_id in _app_ids(run).items():
        stderr = "".join(p.read_text() for p in (run.work / app_id).glob("*/stderr"))
        fetched = re.findall(r"Fetching (\S+) with timestamp", stderr)
        # a local:// jar reaches an executor as file:PATH (read from its own disk); one the driver serves as
        # spark://DRIVER/jars/NAME
        assert not [uri for uri in fetched if not uri.startswith("file:")], (step, fetched)
        assert {Path(uri.removeprefix("file:")).name for uri in fetched} == jars, step
        assert {str(Path(uri.removeprefix("file:")).parent) for uri in fetched} == {SPARK_JARS}, step
