"""The ingest's identity, and a refusal to start from a checkpoint that does not match the tables.

Exactly once rests on two records that must agree: the checkpoint (the Kafka offsets of each micro-batch, the
de-duplication state) and the Delta tables' transaction pairs (ingest identity, batch id). When the checkpoint is
lost, a new one restarts batch ids at 0: under the same identity Delta would skip every write up to the old batch
number (data lost without a word); under a new one the topic would be read again from `earliest` (every click
counted twice). Neither may happen silently, so before the query starts:

- the identity is the app id written in the checkpoint folder (`IDENTITY_FILE`) when the checkpoint is new; a
  checkpoint from before that file existed keeps the app id it always had (its path);
- a checkpoint with no identity and no committed batch while the tables hold batches of some ingest is refused:
  the checkpoint was lost or pointed elsewhere;
- a checkpoint whose newest committed batch is older than what the tables hold of its own identity (by more
  than the one batch a crash between the writes and the checkpoint commit leaves) is refused: a stale copy.

`recovery_offsets` is the documented way out (`jobrec ingest --recover-checkpoint`): a new identity, starting on
each clicks partition after the newest offset the tables hold.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

INGEST_APP_PREFIX = "jobrec-ingest:"
IDENTITY_FILE = "jobrec-ingest-identity"


class CheckpointMismatch(RuntimeError):
    """The checkpoint and the tables disagree; the message says what happened and how to recover."""


@dataclass(frozen=True)
class CheckpointState:
    location: str
    identity: str | None  # the app id in IDENTITY_FILE, if any
    last_committed: int | None  # the newest batch id in commits/, None: none
    last_planned: int | None  # the newest batch id in offsets/ (planned, maybe not committed), None: none


def legacy_app_id(location: str) -> str:
    """The app id of checkpoints made before the identity file: their path."""
    return f"{INGEST_APP_PREFIX}{location}"


def new_app_id() -> str:
    return f"{INGEST_APP_PREFIX}{uuid.uuid4()}"


def ingest_versions(table_transactions: Mapping[str, Mapping[str, int]]) -> dict[str, tuple[int, str]]:
    """ingest app id -> (newest batch id any table holds of it, that table), from each table's transactions."""
    newest: dict[str, tuple[int, str]] = {}
    for table, transactions in sorted(table_transactions.items()):
        for app_id, version in transactions.items():
            if app_id.startswith(INGEST_APP_PREFIX) and (app_id not in newest or version > newest[app_id][0]):
                newest[app_id] = (int(version), table)
    return newest


def judge_checkpoint(checkpoint: CheckpointState, table_transactions: Mapping[str, Mapping[str, int]]) -> str | None:
    """The identity to ingest under: the checkpoint's own, or None for a new checkpoint on tables no ingest has
    written (the caller makes one). Raises CheckpointMismatch when starting would lose or double-count clicks."""
    written = ingest_versions(table_transactions)
    identity = checkpoint.identity
    if identity is None and (checkpoint.last_planned is not None or checkpoint.last_committed is not None):
        identity = legacy_app_id(checkpoint.location)
    recover = (
        "To recover: if a backup of the checkpoint exists, put it back at that location; otherwise move what is "
        "there aside and run `jobrec ingest --recover-checkpoint` once: it starts a new checkpoint after the newest "
        "offset the tables hold on each partition (README: Exactly once, when the checkpoint is lost)."
    )
    if identity is None:
        if written:
            app_id, (version, table) = max(written.items(), key=lambda kv: kv[1][0])
            raise CheckpointMismatch(
                f"the ingest checkpoint at {checkpoint.location} is missing or empty, but the tables hold "
                f"micro-batches of an ingest (up to batch {version} in {table}, written as {app_id}). Starting a "
                "new checkpoint here would read the clicks topic again from its start and count those clicks "
                "twice. " + recover
            )
        return None
    mine = written.get(identity)
    # a crash after a batch's table writes and before the checkpoint's commit leaves the tables a batch ahead of
    # the commits, but never ahead of the offsets log: Spark plans (and logs) a batch before it runs it, and on
    # restart replays it with the same offsets
    planned = max(x for x in (checkpoint.last_planned, checkpoint.last_committed, -1) if x is not None)
    if mine is not None and mine[0] > planned:
        raise CheckpointMismatch(
            f"the ingest checkpoint at {checkpoint.location} is older than the tables: its newest batch is "
            f"{planned}, but {mine[1]} holds batch {mine[0]} of the same ingest ({identity}). A stale copy would "
            "plan new batches under numbers whose writes Delta then skips as already done, and lose them. " + recover
        )
    return identity


def recovery_offsets(topic: str, partitions: Iterable[int], newest_offsets: Mapping[int, int]) -> str:
    """Kafka source startingOffsets (JSON) for a recovered ingest: after the newest offset the tables hold of each
    partition, from the start (-2, earliest) of a partition they hold nothing of."""
    starts = {str(p): newest_offsets[p] + 1 if p in newest_offsets else -2 for p in sorted(partitions)}
    return json.dumps({topic: starts})


# --- reading and writing them (Spark's Hadoop file system: a local folder or s3a://) ------------------------------


def _fs_path(spark: Any, location: str) -> Any:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def read_checkpoint_state(spark: Any, location: str) -> CheckpointState:
    from jobrec.batch.status import checkpoint_batch_files

    fs, root = _fs_path(spark, location)
    jvm = spark.sparkContext._jvm
    identity = None
    identity_path = jvm.org.apache.hadoop.fs.Path(root, IDENTITY_FILE)
    if fs.exists(identity_path):
        stream = fs.open(identity_path)
        try:
            reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
            identity = (reader.readLine() or "").strip() or None
        finally:
            stream.close()
    base = location.rstrip("/")
    committed, planned = (checkpoint_batch_files(spark, f"{base}/{log}") for log in ("commits", "offsets"))
    return CheckpointState(
        location=location,
        identity=identity,
        last_committed=max(committed) if committed else None,
        last_planned=max(planned) if planned else None,
    )


def write_identity(spark: Any, location: str, app_id: str) -> None:
    fs, root = _fs_path(spark, location)
    jvm = spark.sparkContext._jvm
    fs.mkdirs(root)
    stream = fs.create(jvm.org.apache.hadoop.fs.Path(root, IDENTITY_FILE), False)
    try:
        stream.write(bytearray(app_id.encode() + b"\n"))
    finally:
        stream.close()


def table_transactions(spark: Any, paths: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """table name -> {app id -> newest transaction version} of each Delta table at `paths` (Delta's own record of
    the idempotent writes, from the table's current snapshot)."""
    jvm = spark.sparkContext._jvm
    none = jvm.scala.Option.empty()
    out: dict[str, dict[str, int]] = {}
    for name, path in paths.items():
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
        it = log.update(False, none, none).transactions().iterator()
        versions = {}
        while it.hasNext():
            pair = it.next()
            versions[str(pair._1())] = int(pair._2())
        out[name] = versions
    return out
