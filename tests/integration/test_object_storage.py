"""The pipeline on object storage: Delta tables and streaming checkpoints in a bucket of a real S3-compatible server
(S3Proxy, fetched by deploy/local/fetch_s3proxy.sh and started by jobrec.streaming.local.object_store on 127.0.0.1),
reached through Hadoop's S3A client with the jars of deploy/jars/object-store.pom.xml.

- `jobrec ingest` as its own process, SIGKILLed while a micro-batch is in flight, then run again: exact event,
  dead-letter and per-type interaction counts, computed here from what the test sent.
- The checkpoint and every table's _delta_log are objects in the bucket, listed through the server's own S3 API
  (not through the S3A client under test), and nothing was written on the local disk instead.
- Nothing went through a rename (on S3 a copy and a delete): S3Proxy's request log has no temporary object, neither
  a checkpoint file (Spark's default manager writes `.N.<uuid>.tmp` and copies it; the abortable-stream manager
  that build_spark_session sets for s3a:// checkpoints writes in place) nor a Delta file.
- `jobrec retrain --no-publish` reads the interactions from the bucket and records its model there.

One writer per table throughout: the ingest (killed, then its successor) writes events, dead_letters and
interactions; the retrain writes models and factors; this test's reader process only reads.

The test's own Spark session cannot read s3a:// (its JVM started without the S3 jars), so a reader process
(`python -m tests.integration.test_object_storage CONFIG`, this file's main) reads the tables and prints JSON.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from jobrec.batch.connections import ensure_topics
from jobrec.batch.delta_tables import table_path
from jobrec.schemas import tables as t
from jobrec.schemas.config import Config, load_config
from jobrec.streaming.local.object_store import (
    ObjectStore,
    list_keys,
    requests_in_log,
    s3_request,
    s3a_spark_settings,
    start_object_store,
    stop_object_store,
)
from tests.integration.conftest import REPO, SPARK_JARS, make_producer, unique_name, write_config
from tests.integration.test_ingest import expected_counts, send, valid_events
from tests.unit.test_click_event import BAD_RECORDS

# the S3 jars beside the Spark ones, where `make setup` resolves them ($JOBREC_CACHE_DIR/jars/s3)
S3_JARS = Path(SPARK_JARS).parent / "s3"
SENT_VALID, REPEATS = 1000, 100
# records a micro-batch: about half of what is sent, so that the kill lands in the second batch, after the first
# one's offsets, tables and de-duplication state are in the bucket, and the restart has that one batch to do again
BATCH_RECORDS = 600


def _run_script(*args: str) -> str:
    done = subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """S3Proxy with a fresh bucket, its requests logged; the S3 jars resolved (both idempotent, cached)."""
    import pyspark

    jar = Path(_run_script("deploy/local/fetch_s3proxy.sh").strip().splitlines()[-1])
    _run_script(
        "deploy/local/resolve_jars.sh",
        "deploy/jars/object-store.pom.xml",
        str(S3_JARS),
        str(Path(pyspark.__file__).parent / "jars"),
    )
    store = start_object_store(tmp_path_factory.mktemp("s3proxy"), jar, bucket="jobrec-tests", log_requests=True)
    yield store
    stop_object_store(store)


# --- the checkpoint, seen through the server ------------------------------------------------------------------


def batch_ids(store: ObjectStore, folder: str) -> set[int]:
    """The batch ids of a checkpoint's offsets/ or commits/ folder (objects named by a number)."""
    names = (key.rsplit("/", 1)[-1] for key in list_keys(store, folder.rstrip("/") + "/"))
    return {int(n) for n in names if n.isdigit()}


def batch_in_flight(store: ObjectStore, checkpoint: str) -> int | None:
    """The id of a planned (offsets/N) but not committed (no commits/N) batch after the first, else None."""
    planned, committed = batch_ids(store, f"{checkpoint}/offsets"), batch_ids(store, f"{checkpoint}/commits")
    open_batches = {b for b in planned - committed if b >= 1 and b - 1 in committed}
    return min(open_batches) if open_batches else None


def appended_table_rows(store: ObjectStore, table: str) -> list[dict[str, Any]]:
    """The rows of an append-only Delta table in the bucket (`table`: its key prefix), read without Spark: the
    Parquet files its log's commits add and do not remove, fetched through the S3 API and read with pyarrow."""
    import pyarrow.parquet as pq

    live: list[str] = []
    for key in list_keys(store, f"{table}/_delta_log/"):
        if not re.fullmatch(r"\d{20}\.json", key.rsplit("/", 1)[-1]):
            continue  # checksums, checkpoints: the commits alone say which files make the table
        for line in s3_request(store, "GET", f"/{store.bucket}/{key}").decode().splitlines():
            action = json.loads(line)
            if "add" in action:
                # a deletion vector would hide rows of its file: not expected in a table that is only appended to
                assert not action["add"].get("deletionVector"), action
                live.append(unquote(action["add"]["path"]))
            elif "remove" in action:
                live.remove(unquote(action["remove"]["path"]))
    rows: list[dict[str, Any]] = []
    for path in live:
        rows += pq.read_table(io.BytesIO(s3_request(store, "GET", f"/{store.bucket}/{table}/{path}"))).to_pylist()
    return rows


def planned_end_offsets(store: ObjectStore, checkpoint: str, batch: int, topic: str) -> dict[str, int]:
    """partition -> the offset batch `batch` of the checkpoint reads up to, from its offsets/N object: a version
    line, the batch's metadata, then one line of offsets per source."""
    text = s3_request(store, "GET", f"/{store.bucket}/{checkpoint}/offsets/{batch}").decode()
    for line in text.splitlines()[2:]:
        offsets = json.loads(line)
        if isinstance(offsets, dict) and topic in offsets:
            return {p: int(o) for p, o in offsets[topic].items()}
    raise AssertionError(f"no offsets of {topic} in batch {batch}: {text}")


# --- processes ------------------------------------------------------------------------------------------------


def jobrec(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`jobrec ARGS` run to its end; its output is kept beside the config as well, for a look after a failure."""
    done = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    (config.parent / f"{'-'.join(a.strip('-') for a in args)}.log").write_text(done.stdout + done.stderr)
    return done


def start_ingest(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), "ingest"],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes the Spark JVM with it
    )


def read_tables(cfg: Config) -> dict[str, Any]:
    """What the tables under cfg.storage.tables_root hold, as plain JSON values (run in the reader process)."""
    from jobrec.batch.connections import build_spark_session

    spark = build_spark_session(cfg, "test-object-storage-reader")
    try:

        def rows(name: str) -> list[Any]:
            return spark.read.format("delta").load(table_path(cfg.storage.tables_root, name)).collect()

        events = rows(t.EVENTS)
        types = ("view", "click", "save", "apply")
        return {
            "events": len(events),
            "distinct_event_ids": len({r[t.EVENT_ID] for r in events}),
            "dead_letters": [[r[t.KAFKA_PARTITION], r[t.KAFKA_OFFSET], r[t.REASON_CODE]] for r in rows(t.DEAD_LETTERS)],
            "interactions": [
                [r[t.USER_ID], r[t.JOB_ID], kind, r[t.count_column(kind)]]
                for r in rows(t.INTERACTIONS)
                for kind in types
                if r[t.count_column(kind)]
            ],
        }
    finally:
        spark.stop()


# --- the test -------------------------------------------------------------------------------------------------


def test_ingest_on_object_storage_counts_exactly_through_a_sigkill(
    object_store: ObjectStore, broker, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = object_store
    name = unique_name(request)
    tables, checkpoints = store.uri(name, "tables"), store.uri(name, "checkpoints")
    spark_extra = {
        **s3a_spark_settings(store.endpoint, store.access_key, store.secret_key),
        # on the driver's class path, not spark.jars: local mode needs no copy of the 690 MB AWS SDK per session
        "spark.driver.extraClassPath": f"{S3_JARS}/*",
    }

    config = write_config(
        tmp_path,
        broker.bootstrap,
        name,
        storage={"tables_root": tables, "checkpoints_root": checkpoints},
        spark={"extra": spark_extra},
        ingest={"max_offsets_per_trigger": BATCH_RECORDS},
        # a short parameter search: the retrain is here to show that it reads and writes the bucket
        retrain={"tune_budget_seconds": 1},
    )
    timings: dict[str, float] = {}
    cfg = load_config(config, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)

    rng = random.Random(15)
    events = valid_events(SENT_VALID, rng, "s3")
    repeats = rng.sample(events, REPEATS)  # a producer retrying: same event_id, same bytes
    # the unit tests' oversized record is sized for their 4 KiB limit; here the limit is the default 64 KiB
    bad = [(code, raw) for label, raw, code in BAD_RECORDS if label != "oversized record"]
    records: list[tuple[str | None, bytes | None, bytes | None]] = [
        (None, e["user_id"].encode(), json.dumps(e).encode()) for e in events + repeats
    ]
    records += [(code, b"bad", raw) for code, raw in bad]
    rng.shuffle(records)
    producer = make_producer(cfg)
    positions = send(producer, cfg.kafka.clicks_topic, [(key, value) for _, key, value in records])
    producer.close()
    expected_dead = {(p, o): code for (p, o), (code, _, _) in zip(positions, records, strict=True) if code}
    sent_per_partition: dict[str, int] = {}
    for p, o in positions:
        sent_per_partition[str(p)] = max(sent_per_partition.get(str(p), 0), o + 1)

    # the first run, killed while a micro-batch after the first is planned and not yet committed
    checkpoint = f"{name}/checkpoints/ingest"
    log = tmp_path / "ingest.log"
    started = time.monotonic()
    proc = start_ingest(config, log)
    try:
        deadline, in_flight = time.monotonic() + 240, None
        while in_flight is None:
            assert proc.poll() is None, f"ingest exited with {proc.returncode}: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no second micro-batch began: {log.read_text()[-3000:]}"
            in_flight = batch_in_flight(store, checkpoint)
            time.sleep(0.1)
        time.sleep(random.Random().uniform(0.0, 1.0))  # somewhere inside the batch's writes
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    timings["ingest until the kill"] = time.monotonic() - started
    committed_at_kill = batch_ids(store, f"{checkpoint}/commits")
    assert in_flight not in committed_at_kill, f"batch {in_flight} finished before the kill landed"
    committed_up_to = planned_end_offsets(store, checkpoint, max(committed_at_kill), cfg.kafka.clicks_topic)
    assert sum(committed_up_to.values()) < sum(sent_per_partition.values()), "the kill landed after the last batch"

    # the restart: the planned batch again, from its recorded offsets (its writes that Delta holds already skipped)
    started = time.monotonic()
    done = jobrec(config, "ingest", "--once")
    assert done.returncode == 0, done.stderr[-3000:]
    timings["ingest --once after it"] = time.monotonic() - started
    # one after the other: side by side, two Spark JVMs on two cores took longer than in turn
    started = time.monotonic()
    retrain = jobrec(config, "retrain", "--no-publish")
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    timings["retrain --no-publish"] = time.monotonic() - started
    started = time.monotonic()
    reader = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_object_storage", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reader.returncode == 0, reader.stderr[-3000:]
    got = json.loads(reader.stdout.strip().splitlines()[-1])
    timings["reader"] = time.monotonic() - started

    # exact counts, against what was sent
    assert got["events"] == SENT_VALID and got["distinct_event_ids"] == SENT_VALID
    assert {(p, o): code for p, o, code in got["dead_letters"]} == expected_dead
    assert {(u, j, kind): n for u, j, kind, n in got["interactions"]} == expected_counts(events + repeats)
    # the retrain read those interactions from the bucket: its model counts the users, jobs and pairs sent
    pairs = {(e["user_id"], e["job_id"]) for e in events}
    models = appended_table_rows(store, f"{name}/tables/{t.MODELS}")
    assert [{k: m[k] for k in (t.N_USERS, t.N_JOBS, t.N_INTERACTIONS)} for m in models] == [
        {
            t.N_USERS: len({u for u, _ in pairs}),
            t.N_JOBS: len({j for _, j in pairs}),
            t.N_INTERACTIONS: len(pairs),
        }
    ]

    # the API's reader (delta-rs, no JVM) reads the same interactions from the bucket with the config's S3A settings:
    # users per job as the test counts them from what it sent
    from jobrec.streaming.serving_tables import delta_storage_options, read_users_per_job

    users_per_job = Counter(j for _, j in pairs)
    assert dict(read_users_per_job(cfg.storage.tables_root, storage_options=delta_storage_options(spark_extra))) == (
        dict(users_per_job)
    )

    # the state is in the bucket, seen through the server's S3 API, and nothing went to the local disk instead
    keys = set(list_keys(store, f"{name}/"))
    for folder in ("offsets", "commits", "sources/0", "state/0"):
        assert any(k.startswith(f"{checkpoint}/{folder}/") for k in keys), (folder, sorted(keys)[:50])
    for table in (t.EVENTS, t.DEAD_LETTERS, t.INTERACTIONS, t.MODELS, t.USER_FACTORS, t.JOB_FACTORS):
        assert f"{name}/tables/{table}/_delta_log/{0:020d}.json" in keys, table
        assert any(k.startswith(f"{name}/tables/{table}/") and k.endswith(".parquet") for k in keys), table
    assert not (tmp_path / "tables").exists() and not (tmp_path / "checkpoints").exists()

    # nothing went through a temporary name and a copy (a rename on S3), neither a checkpoint file (Spark's default
    # manager writes `.N.<uuid>.tmp` first) nor a Delta commit or data file; no checkpoint object was deleted
    requests = requests_in_log(store.log_file.read_text(errors="replace"))
    ours = [(m, p) for m, p in requests if p.startswith(f"/{store.bucket}/{name}/")]
    assert any(m == "PUT" and p.startswith(f"/{store.bucket}/{checkpoint}/offsets/") for m, p in ours)
    renamed = [(m, p) for m, p in ours if p.endswith(".tmp") or "/_temporary/" in p]
    assert not renamed, renamed[:10]
    deleted = [p for m, p in ours if m == "DELETE" and p.startswith(f"/{store.bucket}/{checkpoint}/")]
    assert not deleted, deleted[:10]
    # for the log (pytest -s): where the time goes, and how much the store was asked
    print(f"killed in batch {in_flight}; {len(requests)} requests to the store; seconds:", timings)


if __name__ == "__main__":
    # the reader process: a Spark session that has the S3 jars (the config's spark.extra puts them on its class path)
    print(json.dumps(read_tables(load_config(Path(sys.argv[1]), env={}))))
